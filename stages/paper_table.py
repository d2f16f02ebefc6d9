"""The paper table: methods x sparsities across DVC experiments, and accuracy vs sparsity.

    dvc exp run --queue -S sparsity=0.6838,0.9,0.9684,0.99 && dvc queue start
    python stages/paper_table.py                      # group of the current params.yaml
    python stages/paper_table.py --dataset cifar10 --model resnet20 --out reports/paper
    python stages/paper_table.py --from-json exps.json   # a saved `dvc exp show --json -A`

Writes {out}/{dataset}_{model}.md/.csv/.tex and {dataset}_{model}_accuracy_vs_sparsity.png.
When several experiments share (dataset, model, sparsity) the newest wins (see
dpai/report/paper.py for the rule).
"""
import argparse
import json
import subprocess
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # works without `pip install -e .`
from dpai.report import exp_show_records, groups, paper_group, write_paper  # noqa: E402
from dpai.report.paper import METRICS_FILE  # noqa: E402


def dvc_exp_show() -> list:
    """`dvc exp show --json -A`: every experiment of every commit, not just HEAD's."""
    cmd = ["dvc", "exp", "show", "--json", "-A"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        detail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"`{' '.join(cmd)}` failed: {detail}")
    return json.loads(proc.stdout)


def default_group(records) -> tuple[str, str]:
    """The (dataset, model) of params.yaml; else the only group there is."""
    params = Path("params.yaml")
    if params.is_file():
        p = yaml.safe_load(params.read_text()) or {}
        dataset, model = (p.get("data") or {}).get("dataset"), (p.get("model") or {}).get("name")
        if dataset and model:
            return str(dataset), str(model)
    found = groups(records)
    if len(found) != 1:
        raise ValueError(f"pass --dataset and --model: params.yaml does not name them and the "
                         f"experiments hold the groups {found}")
    return found[0]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", help="default: data.dataset of params.yaml")
    ap.add_argument("--model", help="default: model.name of params.yaml")
    ap.add_argument("--out", default="reports/paper", help="output folder")
    ap.add_argument("--from-json", type=Path, help="a saved `dvc exp show --json -A` output")
    ap.add_argument("--metrics-file", default=METRICS_FILE, help="the experiments' metrics file")
    args = ap.parse_args(argv)
    try:
        doc = json.loads(args.from_json.read_text()) if args.from_json else dvc_exp_show()
        records = exp_show_records(doc, args.metrics_file)
        if records.empty:
            raise ValueError(f"no experiment has per-method results in {args.metrics_file}; "
                             f"run `dvc exp run -S sparsity=0.9` (or queue several) first")
        dataset, model = args.dataset, args.model
        if not (dataset and model):
            default = default_group(records)
            dataset, model = dataset or default[0], model or default[1]
        selected = paper_group(records, dataset, model)
    except (OSError, ValueError, RuntimeError) as e:  # one clear line, no traceback
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2)
    for path in write_paper(selected, args.out):
        print(path)


if __name__ == "__main__":
    main()
