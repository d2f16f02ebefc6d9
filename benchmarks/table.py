"""Benchmark figures as Markdown tables whose rows carry the machine, the date and the command
(project rule: figures are tables the benchmark scripts write, not prose). Each script ends with
emit(header, rows): it prints the table, and with --table PATH appends it to that Markdown file."""
import datetime
import os
import shlex
import sys
from pathlib import Path


def machine(device=None) -> str:
    """CPU model, usable cores, torch and its CPU capability, the GPU on CUDA; no host name."""
    import torch
    from dpai.core.device import cpu_model
    parts = [cpu_model(), f"{len(os.sched_getaffinity(0))} cores", f"torch {torch.__version__}",
             torch.backends.cpu.get_cpu_capability()]
    if str(device).startswith("cuda"):
        parts.append(torch.cuda.get_device_name(device))
    return ", ".join(parts)


def today() -> str:
    return datetime.date.today().isoformat()


def command() -> str:
    """This run's command line, the script relative to the repository root, without --table."""
    a, root = sys.argv[1:], Path(__file__).resolve().parents[1]
    keep = [x for i, x in enumerate(a) if not x.startswith("--table") and a[i - 1:i] != ["--table"]]
    return shlex.join(["python", os.path.relpath(os.path.realpath(sys.argv[0]), root), *keep])


def secs(x: float) -> str:
    """Seconds (or any figure) to 3 significant digits: 0.0103, 1.23, 456, 1230."""
    return f"{x:.3g}" if abs(x) < 999.5 else f"{float(f'{x:.3g}'):.0f}"


def markdown(header: list[str], rows: list[list]) -> str:
    cells = [header, ["---"] * len(header), *rows]
    return "".join("| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |\n" for r in cells)


def emit(header, rows, path=None, device=None):
    """Print the table; append it to `path` if given (only the rows if it ends with this table)."""
    table = markdown(["machine", "date", *header, "command"],
                     [[machine(device), today(), *r, f"`{command()}`"] for r in rows])
    print(table, end="", flush=True)
    if path:
        path = Path(path)
        old = path.read_text().rstrip() if path.exists() else ""
        head, _, body = table.split("\n", 2)
        _, found, rest = ("\n" + old).rpartition("\n" + head + "\n")
        same = found and all(ln[:1] == "|" for ln in rest.split("\n"))
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text((old + "\n" if old else "") + (body if same else "\n" * bool(old) + table))
        os.replace(tmp, path)
