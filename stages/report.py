"""Aggregate masks/ and runs/ into reports/: tables, the paper's figure, DVC metrics, plots.

    python stages/report.py          # from the repo root; reads params.yaml

Opens exactly masks/<method>-<sparsity>-<seed>.json and runs/<method>-<sparsity>-<seed>.json
for the methods, sparsities and seeds in params.yaml, never a glob: stale outputs of older
matrix items stay on disk. The wall-clock side files timings/{mask,train}/<item>.json are read
when present and go only into reports/timings.md and .csv, which are no DVC outputs.
"""
import common
from dpai.report import load_masks, load_runs, load_timings, write_report


def main() -> None:
    params = common.start()  # a matrix over [] (no items) is caught by its list rules
    sparsities = [float(s) for s in params.sparsities]
    where = (".", params.methods, sparsities, params.seeds)
    try:
        masks, runs, timings = load_masks(*where), load_runs(*where), load_timings(*where)
    except (OSError, ValueError) as e:
        common.fail(str(e).splitlines()[0])
    paths = write_report("reports", masks, runs, dataset=params.data.dataset,
                         model=params.model.name, seeds=params.seeds, timings=timings)
    print(f"report: {len(params.methods)} methods x {len(sparsities)} sparsities x "
          f"{len(params.seeds)} seeds -> " + ", ".join(str(p) for p in paths))


if __name__ == "__main__":
    main()
