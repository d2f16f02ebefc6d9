"""Aggregate masks/ and runs/ into reports/: results tables, DVC metrics and figures.

    python stages/report.py          # from the repo root; reads params.yaml

Opens exactly masks/{method}/{method}-{seed}.json and runs/{method}-{seed}.json for the
methods and seeds in params.yaml, never a glob: stale outputs of older matrix items stay on disk.
"""
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # works without `pip install -e .`
from dpai.report import load_masks, load_runs, read_params, write_report  # noqa: E402


def main() -> None:
    try:
        cfg = read_params(yaml.safe_load(Path("params.yaml").read_text()) or {})
        masks = load_masks(".", cfg["methods"], cfg["seeds"], sparsity=cfg["sparsity"])
        runs = load_runs(".", cfg["methods"], cfg["seeds"], sparsity=cfg["sparsity"])
    except (OSError, ValueError) as e:  # one clear line, no traceback (as stages/common.fail)
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2)
    paths = write_report("reports", masks, runs, dataset=cfg["dataset"], model=cfg["model"],
                         sparsity=cfg["sparsity"], seeds=cfg["seeds"])
    print(f"report: {len(cfg['methods'])} methods x {len(cfg['seeds'])} seeds -> "
          + ", ".join(str(p) for p in paths))


if __name__ == "__main__":
    main()
