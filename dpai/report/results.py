"""The results table of one experiment (one dataset, model and sparsity): one row per method.

Accuracies are mean and sample standard deviation (ddof=1) over seeds. Final-epoch test
accuracy is the primary number; best-epoch test accuracy is what the reference reports (the
test set picks the epoch), so it is labelled as such. DPaI is compared with every other
method by Welch's t-test on the final accuracies. Mask numbers (density, effective counts,
log-paths, mask time) are means over the per-seed masks; `collapsed_layers` is the most layers
any seed's mask lost and `collapsed_seeds` how many masks lost at least one.
"""
import math

import numpy as np
import pandas as pd
from scipy import stats

from .render import (best_rows, fmt_num, fmt_p, fmt_pm, is_missing, latex_escape,
                     latex_table, markdown_table)

REFERENCE = "dpai"  # the method every other one is tested against
BEST_LABEL = "best epoch (test-selected, as in the reference)"
COLUMNS = ["num_seeds", "num_masks", "final_test_acc_mean", "final_test_acc_std",
           "best_test_acc_mean", "best_test_acc_std", "density", "effective_nodes",
           "effective_kernels", "effective_params", "log_paths_exact", "collapsed_layers", "collapsed_seeds",
           "mask_seconds", "train_seconds", "p_value_vs_dpai"]
METRIC_KEYS = ["final_test_acc_mean", "final_test_acc_std", "best_test_acc_mean",
               "best_test_acc_std", "density", "effective_nodes", "log_paths_exact",
               "collapsed_layers"]


def mean_std(values) -> tuple[float, float]:
    """Mean and sample std (ddof=1); std is NaN with fewer than two values."""
    a = np.asarray(values, dtype=float)
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


def results_frame(masks: dict[str, list[dict]], runs: dict[str, list[dict]]) -> pd.DataFrame:
    """One numeric row per method (index `method`, in `masks` order) with the COLUMNS, from
    `masks` (method -> mask reports, one per seed) and `runs` (method -> runs, one per seed)."""
    final = {m: [r["final_test_acc"] for r in runs[m]] for m in masks}
    rows = {}
    for method, reports in masks.items():
        topo = [r["topology"] for r in reports]
        collapsed = [len(t["collapsed_layers"]) for t in topo]
        rows[method] = {
            "num_seeds": len(runs[method]),
            "num_masks": len(reports),
            **dict(zip(["final_test_acc_mean", "final_test_acc_std"], mean_std(final[method]))),
            **dict(zip(["best_test_acc_mean", "best_test_acc_std"],
                       mean_std([r["best_test_acc"] for r in runs[method]]))),
            "density": _mean(r["density"] for r in reports),
            **{k: _mean(t[k] for t in topo) for k in ("effective_nodes", "effective_kernels",
                                                      "effective_params", "log_paths_exact")},
            "collapsed_layers": max(collapsed),
            "collapsed_seeds": sum(c > 0 for c in collapsed),
            "mask_seconds": _mean(r["info"].get("seconds") for r in reports),
            "train_seconds": float(np.mean([r["train_seconds"] for r in runs[method]])),
            "p_value_vs_dpai": (welch_p(final[REFERENCE], final[method])
                                if REFERENCE in masks and method != REFERENCE else math.nan),
        }
    frame = pd.DataFrame.from_dict(rows, orient="index", columns=COLUMNS)
    frame.index.name = "method"
    return frame


def caption(dataset: str, model: str, sparsity: float, seeds: list[int]) -> str:
    return (f"{dataset} / {model} at sparsity {sparsity:g} (density {1 - sparsity:.4g}), "
            f"seeds {list(seeds)}: test accuracy (%) as mean ± std over seeds; p: Welch t-test "
            f"of {REFERENCE}'s final accuracy vs the method (* = p < 0.05).")


def _cells(frame: pd.DataFrame, latex: bool) -> tuple[list[str], list[list[str]]]:
    header = ["method", "final test acc. (%)", f"{BEST_LABEL} (%)", "density",
              "effective nodes", "effective kernels", "effective params", "log-paths (exact)",
              "layer collapse", "mask time (s)", "train time (s)", f"p vs {REFERENCE}"]
    best = {c: best_rows(frame[f"{c}_mean"].tolist()) for c in ("final_test_acc", "best_test_acc")}
    rows = []
    for i, (method, r) in enumerate(frame.iterrows()):
        acc = []
        for c in ("final_test_acc", "best_test_acc"):
            text = fmt_pm(r[f"{c}_mean"], r[f"{c}_std"], latex=latex)
            if i in best[c]:
                text = rf"\textbf{{{text}}}" if latex else f"**{text}**"
            acc.append(text)
        collapsed, hit, n = (int(r[k]) for k in ("collapsed_layers", "collapsed_seeds",
                                                 "num_masks"))
        flag = ("no" if not collapsed else f"yes ({collapsed})" if n == 1
                else f"yes ({collapsed}; {hit}/{n} masks)")
        p = "" if method == REFERENCE else fmt_p(r["p_value_vs_dpai"])
        rows.append([latex_escape(method) if latex else method, *acc, fmt_num(r["density"], 4),
                     fmt_num(r["effective_nodes"], 0), fmt_num(r["effective_kernels"], 0),
                     fmt_num(r["effective_params"], 0), fmt_num(r["log_paths_exact"], 2),
                     flag, fmt_num(r["mask_seconds"], 2),
                     fmt_num(r["train_seconds"], 1), p])
    return header, rows


def results_markdown(frame, *, dataset, model, sparsity, seeds) -> str:
    header, rows = _cells(frame, latex=False)
    return (f"Table: {caption(dataset, model, sparsity, seeds)}\n\n"
            + markdown_table(header, rows) + "\n")


def results_latex(frame, *, dataset, model, sparsity, seeds) -> str:
    header, rows = _cells(frame, latex=True)
    text = latex_escape(caption(dataset, model, sparsity, seeds)).replace("±", r"$\pm$")
    return latex_table(header, rows, caption=text,
                       label=f"tab:{dataset}-{model}-{sparsity:g}".replace("_", "-"))


def results_csv(frame: pd.DataFrame) -> str:
    return frame.to_csv(float_format="%.6g")


def _clean(x, digits: int = 4):
    """A JSON-safe rounded number: None for NaN/inf, int for integral counts."""
    if is_missing(x) or (isinstance(x, float) and math.isinf(x)):
        return None
    if isinstance(x, (int, np.integer)):
        return int(x)
    return round(float(x), digits)


def metrics(frame: pd.DataFrame, *, dataset: str, model: str, sparsity: float,
            seeds: list[int]) -> dict:
    """The DVC metrics document; no '.' or '@' in keys, so flattened names stay unambiguous."""
    for method in frame.index:
        if "." in method or "@" in method:
            raise ValueError(f"method={method!r} cannot be a metrics key: "
                             f"names must not contain '.' or '@'")
    return {"dataset": dataset, "model": model, "sparsity": _clean(sparsity, 6),
            "num_seeds": len(seeds),
            "methods": {m: {k: _clean(frame.at[m, k]) for k in METRIC_KEYS} for m in frame.index}}
