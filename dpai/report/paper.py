"""The paper table across experiments: methods x sparsities, read from `dvc exp show --json -A`.

Each experiment (one `dvc exp run -S sparsity=...`) leaves a metrics file (reports/metrics.json)
with its dataset, model, sparsity and per-method accuracy. Rows are grouped by (dataset, model)
and by sparsity. Duplicate rule: when several entries share (dataset, model, sparsity) the
newest wins as a whole (never a mix of methods from different runs). Newest = the workspace
(what is on disk now) first, unless its results equal a committed entry's (after `dvc exp run`
the workspace is a copy of the experiment: the experiment is credited, with its timestamp);
then the latest `timestamp` of the commit; equal timestamps go to the entry listed first by
DVC, which lists a baseline's experiments newest first.
"""
import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..io import write_text
from .plots import save_figure
from .render import best_rows, fmt_pm, latex_escape, latex_table, markdown_table

METRICS_FILE = "reports/metrics.json"
RECORD_COLUMNS = ["dataset", "model", "sparsity", "method", "final_test_acc_mean",
                  "final_test_acc_std", "num_seeds", "experiment", "rev", "timestamp", "entry"]


FINISHED = ("success", "finished")  # executor states of a queued/temp experiment that is done


def _entries(doc: list):
    """(name, entry) for every workspace, baseline and finished experiment revision, in order."""
    for base in doc or []:
        rev = str(base.get("rev"))
        yield base.get("name") or (rev if rev == "workspace" else rev[:7]), base
        for exp in base.get("experiments") or []:
            state = (exp.get("executor") or {}).get("state")
            if state and state not in FINISHED:  # queued, running, failed: no final results
                continue
            for rev in exp.get("revs") or []:
                yield rev.get("name") or exp.get("name") or rev.get("rev"), rev


def _num(x) -> float:
    return math.nan if x is None else float(x)


def exp_show_records(doc: list, metrics_file: str = METRICS_FILE) -> pd.DataFrame:
    """One row per (entry, method) of a `dvc exp show --json` document that has results.

    Entries that failed, are still queued, or whose metrics file lacks "methods" are skipped.
    dataset, model and sparsity come from the metrics file (it describes itself), else params."""
    rows = []
    for entry_id, (name, entry) in enumerate(_entries(doc)):
        data = entry.get("data") or {}
        found = ((data.get("metrics") or {}).get(metrics_file) or {}).get("data")
        if entry.get("error") or not isinstance(found, dict) \
                or not isinstance(found.get("methods"), dict):
            continue
        params = ((data.get("params") or {}).get("params.yaml") or {}).get("data") or {}
        dataset = found.get("dataset", (params.get("data") or {}).get("dataset"))
        model = found.get("model", (params.get("model") or {}).get("name"))
        sparsity = found.get("sparsity", params.get("sparsity"))
        if dataset is None or model is None or sparsity is None:
            continue
        rev = entry.get("rev") or data.get("rev")
        stamp = pd.Timestamp(data["timestamp"]) if data.get("timestamp") else pd.NaT
        for method, values in found["methods"].items():
            rows.append({"dataset": str(dataset), "model": str(model),
                         "sparsity": round(float(sparsity), 6), "method": method,
                         "final_test_acc_mean": _num(values.get("final_test_acc_mean")),
                         "final_test_acc_std": _num(values.get("final_test_acc_std")),
                         "num_seeds": found.get("num_seeds"), "experiment": str(name),
                         "rev": rev, "timestamp": stamp, "entry": entry_id})
    return pd.DataFrame(rows, columns=RECORD_COLUMNS)


def groups(records: pd.DataFrame) -> list[tuple[str, str]]:
    return sorted(set(zip(records["dataset"], records["model"])))


def _drop_workspace_copies(records: pd.DataFrame) -> pd.DataFrame:
    """Without the workspace's rows when a committed entry holds the very same results."""
    cols = ["dataset", "model", "sparsity", "method", "final_test_acc_mean", "final_test_acc_std"]
    results = {e: frozenset(map(tuple, rows[cols].astype(str).values))
               for e, rows in records.groupby("entry")}
    workspace = set(records.loc[records["rev"] == "workspace", "entry"])
    copies = {e for e in workspace if any(results[e] == results[o] for o in results if o != e)}
    return records[~records["entry"].isin(copies)]


def latest_per_sparsity(records: pd.DataFrame) -> pd.DataFrame:
    """Only the rows of the newest entry for each (dataset, model, sparsity) (module docstring)."""
    if records.empty:
        return records
    records = _drop_workspace_copies(records)
    entries = records.drop_duplicates("entry").assign(
        workspace=lambda f: f["rev"] == "workspace")
    entries = entries.sort_values(["workspace", "timestamp", "entry"],
                                  ascending=[False, False, True], na_position="last")
    keep = entries.drop_duplicates(["dataset", "model", "sparsity"])["entry"]
    return records[records["entry"].isin(keep)].reset_index(drop=True)


def paper_group(records: pd.DataFrame, dataset: str, model: str) -> pd.DataFrame:
    """The deduplicated rows of one (dataset, model), sorted by sparsity; a clear error if none."""
    if records.empty:
        raise ValueError(f"no experiment has per-method results in {METRICS_FILE}; run "
                         f"`dvc exp run -S sparsity=0.9` (or queue several) first")
    chosen = records[(records["dataset"] == dataset) & (records["model"] == model)]
    if chosen.empty:
        raise ValueError(f"dataset={dataset!r}, model={model!r}: no experiments; available "
                         f"(dataset, model) groups: {groups(records)}")
    chosen = latest_per_sparsity(chosen)
    return chosen.sort_values(["sparsity", "entry"], kind="stable").reset_index(drop=True)


def sparsity_label(sparsity: float) -> str:
    """0.6838 -> '68.38 %', 0.9 -> '90 %'."""
    return f"{round(100 * sparsity, 4):g} %"


def _cells(selected: pd.DataFrame, latex: bool):
    sparsities = sorted(selected["sparsity"].unique())
    methods = list(dict.fromkeys(selected["method"]))
    cell = {(r.method, r.sparsity): r for r in selected.itertuples()}
    header = ["method"] + [sparsity_label(s) for s in sparsities]
    best = {s: {methods[i] for i in best_rows([getattr(cell.get((m, s)), "final_test_acc_mean",
                                                       None) for m in methods])}
            for s in sparsities}
    rows = []
    for m in methods:
        row = [latex_escape(m) if latex else m]
        for s in sparsities:
            r = cell.get((m, s))
            text = fmt_pm(r.final_test_acc_mean, r.final_test_acc_std, latex=latex) if r else ""
            if text and m in best[s]:
                text = rf"\textbf{{{text}}}" if latex else f"**{text}**"
            row.append(text or ("--" if latex else "–"))
        rows.append(row)
    return header, rows


def _caption(selected: pd.DataFrame) -> str:
    first = selected.iloc[0]
    sources = selected.drop_duplicates("sparsity")
    where = ", ".join(f"{sparsity_label(r.sparsity)} = {r.experiment}"
                      + (f" ({r.rev[:7]})" if isinstance(r.rev, str) and r.rev != "workspace"
                         and r.rev[:7] != r.experiment else "") for r in sources.itertuples())
    seeds = sorted({int(n) for n in selected["num_seeds"].dropna()})
    n = f" (n = {', '.join(map(str, seeds))} seeds)" if seeds else ""
    return (f"{first.dataset} / {first.model}: final test accuracy (%), mean ± std over "
            f"seeds{n}, by sparsity. Sources: {where}.")


def paper_markdown(selected: pd.DataFrame) -> str:
    header, rows = _cells(selected, latex=False)
    return f"Table: {_caption(selected)}\n\n" + markdown_table(header, rows) + "\n"


def paper_latex(selected: pd.DataFrame) -> str:
    header, rows = _cells(selected, latex=True)
    first = selected.iloc[0]
    return latex_table(header, rows,
                       caption=latex_escape(_caption(selected)).replace("±", r"$\pm$"),
                       label=f"tab:{first.dataset}-{first.model}".replace("_", "-"))


def paper_csv(selected: pd.DataFrame) -> str:
    """Tidy: one line per (method, sparsity), with the experiment each number came from."""
    out = selected.assign(density=1 - selected["sparsity"])
    cols = ["dataset", "model", "method", "sparsity", "density", "final_test_acc_mean",
            "final_test_acc_std", "num_seeds", "experiment", "rev", "timestamp"]
    return out[cols].to_csv(index=False, float_format="%.6g")


def plot_accuracy_vs_sparsity(selected: pd.DataFrame, path):
    """Final test accuracy (± std) against compression -log10(density), labelled by sparsity."""
    first = selected.iloc[0]
    fig = Figure(figsize=(6.5, 4.5))
    ax = fig.subplots()
    compression = lambda s: -np.log10(1 - np.asarray(s, dtype=float))  # noqa: E731
    for method, rows in selected.groupby("method", sort=False):
        ax.errorbar(compression(rows["sparsity"]), rows["final_test_acc_mean"],
                    yerr=rows["final_test_acc_std"].fillna(0.0), marker="o", capsize=3,
                    label=method)
    sparsities = sorted(selected["sparsity"].unique())
    ax.set_xticks(compression(sparsities), [sparsity_label(s) for s in sparsities])
    ax.set(xlabel="sparsity (x = compression, -log10 density)", ylabel="final test accuracy (%)",
           title=f"{first.dataset} / {first.model}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def write_paper(selected: pd.DataFrame, out_dir) -> list[Path]:
    """{dataset}_{model}.md/.csv/.tex and {dataset}_{model}_accuracy_vs_sparsity.png in out_dir."""
    first = selected.iloc[0]
    stem = Path(out_dir) / f"{first.dataset}_{first.model}".replace("/", "-")
    return [write_text(f"{stem}.md", paper_markdown(selected)),
            write_text(f"{stem}.csv", paper_csv(selected)),
            write_text(f"{stem}.tex", paper_latex(selected)),
            plot_accuracy_vs_sparsity(selected, f"{stem}_accuracy_vs_sparsity.png")]
