"""The results of one setting (dataset, model) at each sparsity: one row per (method, sparsity).

Accuracies are mean and sample standard deviation (ddof=1) over seeds. Final-epoch test
accuracy is the primary number; best-epoch test accuracy is what the reference reports (the
test set picks the epoch), so it is labelled as such. DPaI is compared with every other
method by Welch's t-test on the final accuracies. Mask numbers (density, effective counts,
log-paths, FLOPs) are means over the per-seed masks; `ln_effective_nodes` is the natural log
of that mean; `collapsed_layers` is the most layers any seed's mask lost and
`collapsed_seeds` how many masks lost at least one. FLOPs are multiply-accumulates per image
through the prunable weights (dense, kept, effective; `dpai.flops`).

Per sparsity the tables are split so that the LaTeX fits a page: accuracy (method, final,
best-epoch, p) and structure (method, density, effective nodes/kernels/params, log-paths,
collapse, FLOPs kept and effective).
"""
import math

import numpy as np
import pandas as pd
from scipy import stats

from .inputs import check_method_names, sparsity_name
from .render import (best_rows, fmt_macs, fmt_num, fmt_p, fmt_pm, is_missing, latex_escape,
                     latex_table, markdown_table, sparsity_label)

REFERENCE = "dpai"  # the method every other one is tested against
BEST_LABEL = "best epoch (test-selected)"
COLUMNS = ["num_seeds", "num_masks", "final_test_acc_mean", "final_test_acc_std",
           "best_test_acc_mean", "best_test_acc_std", "p_value_vs_dpai", "density",
           "effective_nodes", "ln_effective_nodes", "effective_kernels", "effective_params",
           "log_paths_exact", "collapsed_layers", "collapsed_seeds", "flops_dense", "flops_kept",
           "flops_effective"]
METRIC_KEYS = ["final_test_acc_mean", "final_test_acc_std", "best_test_acc_mean",
               "best_test_acc_std", "p_value_vs_dpai", "density", "effective_nodes",
               "log_paths_exact", "collapsed_layers", "flops_kept", "flops_effective"]


def mean_std(values) -> tuple[float, float]:
    """Mean and sample std (ddof=1); std is NaN with fewer than two values."""
    a = np.asarray([_float(v) for v in values], dtype=float)
    return float(a.mean()), (float(a.std(ddof=1)) if a.size > 1 else math.nan)


def welch_p(a, b) -> float:
    """Two-sided Welch t-test p-value of a vs b; NaN when either has fewer than two values."""
    if len(a) < 2 or len(b) < 2:
        return math.nan
    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def _float(x) -> float:
    return math.nan if x is None else float(x)


def _mean(values) -> float:
    return float(np.mean([_float(v) for v in values]))


def _ln(x: float) -> float:
    return math.nan if is_missing(x) else -math.inf if x <= 0 else math.log(x)


def results_frame(masks: dict[str, list[dict]], runs: dict[str, list[dict]]) -> pd.DataFrame:
    """One numeric row per method (index `method`, in `masks` order) with the COLUMNS, from
    `masks` (method -> mask reports, one per seed) and `runs` (method -> runs, one per seed)
    of one sparsity."""
    final = {m: [_float(r["final_test_acc"]) for r in runs[m]] for m in masks}
    rows = {}
    for method, reports in masks.items():
        topo = [r["topology"] for r in reports]
        collapsed = [len(t["collapsed_layers"]) for t in topo]
        nodes = _mean(t["effective_nodes"] for t in topo)
        rows[method] = {
            "num_seeds": len(runs[method]),
            "num_masks": len(reports),
            **dict(zip(["final_test_acc_mean", "final_test_acc_std"], mean_std(final[method]))),
            **dict(zip(["best_test_acc_mean", "best_test_acc_std"],
                       mean_std([r["best_test_acc"] for r in runs[method]]))),
            "p_value_vs_dpai": (welch_p(final[REFERENCE], final[method])
                                if REFERENCE in masks and method != REFERENCE else math.nan),
            "density": _mean(r["density"] for r in reports),
            "effective_nodes": nodes,
            "ln_effective_nodes": _ln(nodes),
            **{k: _mean(t[k] for t in topo) for k in ("effective_kernels", "effective_params",
                                                      "log_paths_exact")},
            "collapsed_layers": max(collapsed),
            "collapsed_seeds": sum(c > 0 for c in collapsed),
            **{f"flops_{k}": _mean(r["flops"][k] for r in reports)
               for k in ("dense", "kept", "effective")},
        }
    frame = pd.DataFrame.from_dict(rows, orient="index", columns=COLUMNS)
    frame.index.name = "method"
    return frame


def summary_frame(masks: dict[float, dict[str, list[dict]]],
                  runs: dict[float, dict[str, list[dict]]]) -> pd.DataFrame:
    """One row per (method, sparsity), sparsities in `masks` order, methods in params order:
    columns method, sparsity and the COLUMNS of `results_frame`."""
    parts = [results_frame(masks[s], runs[s]).reset_index().assign(sparsity=s) for s in masks]
    frame = pd.concat(parts, ignore_index=True)
    return frame[["method", "sparsity", *COLUMNS]]


def at_sparsity(summary: pd.DataFrame, sparsity: float) -> pd.DataFrame:
    """The rows of one sparsity, indexed by method."""
    return summary[summary["sparsity"] == sparsity].set_index("method")


def _about(dataset: str, model: str, sparsity: float, seeds: list[int]) -> str:
    return (f"{dataset} / {model} at sparsity {sparsity_label(sparsity)} (density "
            f"{1 - sparsity:.4g}), seeds {list(seeds)}")


def accuracy_caption(dataset, model, sparsity, seeds) -> str:
    return (f"{_about(dataset, model, sparsity, seeds)}: test accuracy (%) as mean ± std over "
            f"seeds, best per column in bold; the best epoch is selected on the test set (as "
            f"in the reference); p: Welch t-test of {REFERENCE}'s final accuracy vs the method "
            f"(* = p < 0.05).")


def structure_caption(dataset, model, sparsity, seeds) -> str:
    return (f"{_about(dataset, model, sparsity, seeds)}: mask structure, means over seeds. "
            f"Effective = on an input-output path; log-paths = ln of the exact number of "
            f"input-output paths; layer collapse = layers without an effective node; FLOPs = "
            f"multiply-accumulates per image through the kept and the effective weights.")


def _bold(text: str, latex: bool) -> str:
    return rf"\textbf{{{text}}}" if latex else f"**{text}**"


def _name(method: str, latex: bool) -> str:
    return latex_escape(method) if latex else method


def accuracy_cells(frame: pd.DataFrame, latex: bool) -> tuple[list[str], list[list[str]]]:
    header = ["method", "final test acc. (%)", f"{BEST_LABEL} (%)", f"p vs {REFERENCE}"]
    best = {c: best_rows(frame[f"{c}_mean"].tolist()) for c in ("final_test_acc", "best_test_acc")}
    rows = []
    for i, (method, r) in enumerate(frame.iterrows()):
        acc = []
        for c in ("final_test_acc", "best_test_acc"):
            text = fmt_pm(r[f"{c}_mean"], r[f"{c}_std"], latex=latex)
            acc.append(_bold(text, latex) if i in best[c] else text)
        p = "" if method == REFERENCE else fmt_p(r["p_value_vs_dpai"])
        rows.append([_name(method, latex), *acc, p])
    return header, rows


def collapse_flag(collapsed: int, hit: int, n: int) -> str:
    """'no', 'yes (k)' for one mask, 'yes (k; hit/n masks)' over seeds."""
    return ("no" if not collapsed else f"yes ({collapsed})" if n == 1
            else f"yes ({collapsed}; {hit}/{n} masks)")


def structure_cells(frame: pd.DataFrame, latex: bool) -> tuple[list[str], list[list[str]]]:
    header = ["method", "density", "eff. nodes", "eff. kernels", "eff. params",
              "log-paths (exact)", "layer collapse", "FLOPs kept", "FLOPs eff."]
    rows = []
    for method, r in frame.iterrows():
        flag = collapse_flag(*(int(r[k]) for k in ("collapsed_layers", "collapsed_seeds",
                                                   "num_masks")))
        rows.append([_name(method, latex), fmt_num(r["density"], 4),
                     fmt_num(r["effective_nodes"], 0), fmt_num(r["effective_kernels"], 0),
                     fmt_num(r["effective_params"], 0), fmt_num(r["log_paths_exact"], 2), flag,
                     fmt_macs(r["flops_kept"]), fmt_macs(r["flops_effective"])])
    return header, rows


def results_markdown(summary: pd.DataFrame, *, dataset, model, seeds) -> str:
    parts = [f"# {dataset} / {model}: results per sparsity", ""]
    for s in dict.fromkeys(summary["sparsity"]):
        frame = at_sparsity(summary, s)
        parts += [f"## Sparsity {sparsity_label(s)} (density {1 - s:.4g})", "",
                  f"Table: {accuracy_caption(dataset, model, s, seeds)}", "",
                  markdown_table(*accuracy_cells(frame, latex=False)), "",
                  f"Table: {structure_caption(dataset, model, s, seeds)}", "",
                  markdown_table(*structure_cells(frame, latex=False)), ""]
    return "\n".join(parts)


def latex_caption(text: str) -> str:
    return latex_escape(text).replace("±", r"$\pm$")


def table_label(dataset: str, model: str, what: str, sparsity: float | None = None) -> str:
    tail = f"-{sparsity_name(sparsity)}" if sparsity is not None else ""
    return f"tab:{dataset}-{model}-{what}{tail}".replace("_", "-")


def results_latex(summary: pd.DataFrame, *, dataset, model, seeds) -> str:
    parts = [f"% {dataset} / {model}: per sparsity an accuracy and a structure table "
             f"(booktabs)\n"]
    for s in dict.fromkeys(summary["sparsity"]):
        frame = at_sparsity(summary, s)
        parts.append(latex_table(*accuracy_cells(frame, latex=True),
                                 caption=latex_caption(accuracy_caption(dataset, model, s, seeds)),
                                 label=table_label(dataset, model, "accuracy", s)))
        parts.append(latex_table(*structure_cells(frame, latex=True),
                                 caption=latex_caption(structure_caption(dataset, model, s,
                                                                         seeds)),
                                 label=table_label(dataset, model, "structure", s)))
    return "\n".join(parts)


def results_csv(summary: pd.DataFrame) -> str:
    return summary.to_csv(index=False, float_format="%.6g")


def _clean(x, digits: int = 4):
    """A JSON-safe rounded number: None for NaN/inf, int for integral counts."""
    if is_missing(x) or (isinstance(x, float) and math.isinf(x)):
        return None
    if isinstance(x, (int, np.integer)):
        return int(x)
    return round(float(x), digits)


def sparsity_key(sparsity: float) -> str:
    """A metrics key for a sparsity without '.' or '@': 0.99 -> 's0_99', 0.6838 -> 's0_6838'."""
    return "s" + sparsity_name(sparsity).replace(".", "_").replace("+", "")


def metrics(summary: pd.DataFrame, *, dataset: str, model: str, seeds: list[int]) -> dict:
    """The DVC metrics document: methods -> sparsity key -> numbers. No '.' or '@' in keys, so
    the names `dvc exp show` flattens them to stay unambiguous."""
    methods = list(dict.fromkeys(summary["method"]))
    check_method_names(methods)
    sparsities = list(dict.fromkeys(summary["sparsity"]))
    rows = summary.set_index(["method", "sparsity"])
    return {"dataset": dataset, "model": model,
            "sparsities": [_clean(s, 6) for s in sparsities], "num_seeds": len(seeds),
            "methods": {m: {sparsity_key(s): {k: _clean(rows.at[(m, s), k]) for k in METRIC_KEYS}
                            for s in sparsities} for m in methods}}
