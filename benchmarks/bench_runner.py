"""Wall time of the toy DVC pipeline of tests/test_runner.py: plain sequential `dvc repro` vs
`dpai-repro -j N` (same repo, copied), and whether the two dvc.lock files are the same bytes.

    python benchmarks/bench_runner.py --seeds 0 1 --sleep 3 -j 2 [--table PATH]

The toy: prep -> a@<method>-<seed> -> b@<method>-<seed> -> agg, each stage a tiny Python
script that sleeps --sleep seconds (a stand-in for work that is not this machine's CPU, e.g.
a GPU job; CPU-bound stages share the cores). Prints the figures as a Markdown table (machine,
date, command in every row; benchmarks/table.py); asserts nothing.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from test_runner import ENV, RUNNER_PY, lock, make_toy  # noqa: E402
from table import emit, secs  # noqa: E402  (benchmarks/, sys.path[0] when run as a script)


def timed(cmd, cwd, env):
    t0 = time.monotonic()
    subprocess.run(cmd, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.monotonic() - t0


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", nargs="+", default=["m1", "m2"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--sleep", type=float, default=3.0)
    p.add_argument("-j", "--jobs", type=int, default=2)
    p.add_argument("--table", metavar="PATH", help="also append the table to this .md file")
    args = p.parse_args()
    env = {**ENV, "TOY_SLEEP": str(args.sleep)}
    with tempfile.TemporaryDirectory() as tmp:
        base = make_toy(Path(tmp) / "base", args.methods, args.seeds)
        seq, par = Path(tmp) / "seq", Path(tmp) / "par"
        shutil.copytree(base, seq, symlinks=True)
        shutil.copytree(base, par, symlinks=True)
        n = 2 + 2 * len(args.methods) * len(args.seeds)
        t_seq = timed([sys.executable, "-m", "dvc", "repro"], seq, env)
        code = ("import runpy, sys; p = sys.argv.pop(1); sys.argv[0] = 'dpai-repro'; "
                "runpy.run_path(p, run_name='__main__')")
        t_par = timed([sys.executable, "-c", code, str(RUNNER_PY), "--no-validate",
                       "-j", str(args.jobs)], par, env)
        emit(["toy items", "sleep per stage (s)", "load average", "dvc repro (s)", "jobs N",
              "dpai-repro -j N (s)", "same dvc.lock (bytes)"],
             [[n, f"{args.sleep:g}", f"{os.getloadavg()[0]:.1f}", secs(t_seq), args.jobs,
               secs(t_par), lock(seq) == lock(par)]], args.table)


if __name__ == "__main__":
    main()
