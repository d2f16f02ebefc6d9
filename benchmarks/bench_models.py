"""Seconds per DPaI step and per SynFlow round on torchvision's resnet50 and vit_b_16 at
224x224 (1000 classes, sparsity 0.9), next to the dense forward + backward of the same model
(batch 1, the floor a path-network step cannot beat). Prints figures; asserts nothing.

    python benchmarks/bench_models.py [--threads 2] [--repeats 3] [--device cpu|cuda|auto]
                                      [--table PATH]

`--device auto` measures the CPU, and the GPU too when CUDA is available. Ends with a Markdown
table (machine, date, command in every row; benchmarks/table.py).
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import dpai  # noqa: E402
from dpai.methods.dpai_method import DPaI  # noqa: E402
from dpai.methods.scoring import working_copy  # noqa: E402
from dpai.methods.synflow import synflow_scores  # noqa: E402
from table import emit, secs  # noqa: E402  (benchmarks/, sys.path[0] when run as a script)

MODELS = ("resnet50", "vit_b_16")


def timed(fn, repeats, device):
    fn()  # warm-up
    out = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        out.append(time.perf_counter() - start)
    return statistics.median(out)


def measure(name, device, repeats, sparsity=0.9):
    model = dpai.create_model("torchvision:" + name, num_classes=1000, image_size=224,
                              seed=0).to(device)
    x = torch.randn(1, 3, 224, 224, device=device)

    def dense():
        model.zero_grad(set_to_none=True)
        model(x).sum().backward()

    search = DPaI(model, sparsity, seed=0)
    work = working_copy(model, train=False, dtype=torch.float64)
    with torch.no_grad():
        for t in [*work.parameters(), *work.buffers()]:
            if t.is_floating_point():
                t.abs_()
    model.eval()
    return {"dense fwd+bwd": timed(dense, repeats, device),
            "dpai step": timed(search.step, repeats, device),
            "synflow round (float64)": timed(lambda: synflow_scores(work), repeats, device)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--table", metavar="PATH", help="also append the table to this .md file")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    devices = [torch.device("cpu")]
    if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()):
        devices = [torch.device("cuda")] if args.device == "cuda" else devices + [torch.device("cuda")]
    print(f"torch {torch.__version__}, {args.threads} CPU threads, median of {args.repeats}")
    rows, header = [], None
    for device in devices:
        for name in MODELS:
            figures = measure(name, device, args.repeats)
            line = ", ".join(f"{k} {v:.3f} s" for k, v in figures.items())
            print(f"{device.type:4s} {name:9s} {line}", flush=True)
            header = ["model", "device", "threads", "repeats (median)",
                      *(f"{k} (s)" for k in figures)]
            rows.append([name, device.type, args.threads, args.repeats,
                         *(secs(v) for v in figures.values())])
    emit(header, rows, args.table, devices[-1])


if __name__ == "__main__":
    main()
