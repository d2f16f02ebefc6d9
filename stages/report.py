"""Aggregate masks/ and runs/ into reports/: tables, the paper's figure, DVC metrics, plots.

    python stages/report.py          # from the repo root; reads params.yaml

Opens exactly masks/<method>-<sparsity>-<seed>.json and runs/<method>-<sparsity>-<seed>.json
for the methods, sparsities and seeds in params.yaml, never a glob: stale outputs of older
matrix items stay on disk. The wall-clock side files timings/{mask,train}/<item>.json are read
when present and go only into reports/timings.md and .csv, which are no DVC outputs.
"""
import sys

import common
from dpai.report import load_masks, load_runs, load_timings, read_params, write_report


def main() -> None:
    params = common.start()  # the whole params.yaml, validated (a matrix over [] makes no items)
    try:
        cfg = read_params(params)
        where = (".", cfg["methods"], cfg["sparsities"], cfg["seeds"])
        masks, runs, timings = load_masks(*where), load_runs(*where), load_timings(*where)
    except (OSError, ValueError) as e:  # one clear line, no traceback (as stages/common.fail)
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2)
    paths = write_report("reports", masks, runs, dataset=cfg["dataset"], model=cfg["model"],
                         seeds=cfg["seeds"], timings=timings)
    print(f"report: {len(cfg['methods'])} methods x {len(cfg['sparsities'])} sparsities x "
          f"{len(cfg['seeds'])} seeds -> " + ", ".join(str(p) for p in paths))


if __name__ == "__main__":
    main()
