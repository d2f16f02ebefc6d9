"""The paper's figure of one setting: methods x sparsities, as tables and as a three-panel plot.

Tables (Markdown, CSV, LaTeX): final test accuracy mean ± std (best per column bold; a dagger
marks a method whose final accuracy differs from DPaI's by Welch's t-test at p < 0.05),
ln effective nodes (ln of the mean over seeds), log effective paths (ln of the exact number of
input-output paths, mean over seeds), FLOPs through the kept and through the effective weights
(multiply-accumulates per image, mean over seeds). The plot has three panels against
sparsity (accuracy with error bars = std over seeds, ln effective nodes, log effective paths),
one line per method; the x axis is the compression -log10(density), labelled with the sparsity
levels.
"""
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .plots import save_figure
from .render import (best_rows, fmt_macs, fmt_num, fmt_pm, latex_escape,
                     latex_table, markdown_table, sparsity_label)
from .results import REFERENCE, latex_caption, table_label

ALPHA = 0.05  # significance level of the dagger
DAGGER = {False: " †", True: r"$^\dagger$"}
CSV_COLUMNS = ["method", "sparsity", "density", "num_seeds", "final_test_acc_mean",
               "final_test_acc_std", "best_in_column", "p_value_vs_dpai", "significant_vs_dpai",
               "effective_nodes", "ln_effective_nodes", "log_paths_exact", "flops_dense",
               "flops_kept", "flops_effective"]
# (column, title, formatter) of the tables after the accuracy table
QUANTITIES = [("ln_effective_nodes", "ln effective nodes", lambda x: fmt_num(x, 2)),
              ("log_paths_exact", "log effective paths", lambda x: fmt_num(x, 2)),
              ("flops_kept", "FLOPs through kept weights", fmt_macs),
              ("flops_effective", "FLOPs through effective weights", fmt_macs)]


def _grid(summary: pd.DataFrame, column: str) -> pd.DataFrame:
    """methods (rows, params order) x sparsities (columns, ascending) of one column."""
    methods = list(dict.fromkeys(summary["method"]))
    table = summary.pivot(index="method", columns="sparsity", values=column)
    return table.reindex(index=methods, columns=sorted(summary["sparsity"].unique()))


def best_in_column(summary: pd.DataFrame) -> pd.Series:
    """Per (method, sparsity) row: True where the final accuracy mean is the best of its
    sparsity as displayed (2 decimals; ties all win)."""
    best = pd.Series(False, index=summary.index)
    for _, rows in summary.groupby("sparsity", sort=False):
        winners = best_rows(rows["final_test_acc_mean"].tolist())
        best.loc[rows.index[sorted(winners)]] = True
    return best


def significant(summary: pd.DataFrame) -> pd.Series:
    p = summary["p_value_vs_dpai"]
    return p.notna() & (p < ALPHA)


def _table(summary: pd.DataFrame, column: str, fmt, latex: bool):
    grid = _grid(summary, column)
    header = ["method"] + [sparsity_label(s) for s in grid.columns]
    rows = [[latex_escape(m) if latex else m, *[fmt(v) or "--" for v in grid.loc[m]]]
            for m in grid.index]
    return header, rows


def accuracy_cells(summary: pd.DataFrame, latex: bool):
    frame = summary.assign(best=best_in_column(summary), sig=significant(summary))
    keyed = frame.set_index(["method", "sparsity"])
    grid = _grid(summary, "final_test_acc_mean")
    header = ["method"] + [sparsity_label(s) for s in grid.columns]
    rows = []
    for m in grid.index:
        row = [latex_escape(m) if latex else m]
        for s in grid.columns:
            r = keyed.loc[(m, s)]
            text = fmt_pm(r["final_test_acc_mean"], r["final_test_acc_std"], latex=latex)
            if text and r["best"]:
                text = rf"\textbf{{{text}}}" if latex else f"**{text}**"
            if text and r["sig"]:
                text += DAGGER[latex]
            row.append(text or "--")
        rows.append(row)
    return header, rows


def captions(dataset: str, model: str, seeds: list[int]) -> dict[str, str]:
    about = f"{dataset} / {model}, seeds {list(seeds)}"
    return {
        "final_test_acc": (f"{about}: final test accuracy (%), mean ± std over seeds; best per "
                           f"sparsity in bold; † = differs from {REFERENCE} (Welch's t-test on "
                           f"the final accuracies, p < {ALPHA:g})."),
        "ln_effective_nodes": f"{about}: ln of the number of effective nodes (mean over seeds).",
        "log_paths_exact": (f"{about}: log effective paths, ln of the exact number of "
                            f"input-output paths (mean over seeds)."),
        "flops_kept": (f"{about}: FLOPs through the kept weights, multiply-accumulates per image "
                       f"(mean over seeds)."),
        "flops_effective": (f"{about}: FLOPs through the effective weights (those on an "
                            f"input-output path), multiply-accumulates per image (mean over "
                            f"seeds)."),
    }


def _tables(summary: pd.DataFrame, latex: bool):
    """(key, header, rows) of every figure table, the accuracy table first."""
    yield ("final_test_acc", *accuracy_cells(summary, latex))
    for column, _, fmt in QUANTITIES:
        yield (column, *_table(summary, column, fmt, latex))


def figure_markdown(summary: pd.DataFrame, *, dataset, model, seeds) -> str:
    text = captions(dataset, model, seeds)
    titles = {"final_test_acc": "Final test accuracy"} | {c: t for c, t, _ in QUANTITIES}
    parts = [f"# {dataset} / {model}: methods x sparsities", ""]
    for key, header, rows in _tables(summary, latex=False):
        parts += [f"## {titles[key]}", "", f"Table: {text[key]}", "",
                  markdown_table(header, rows), ""]
    return "\n".join(parts)


def figure_latex(summary: pd.DataFrame, *, dataset, model, seeds) -> str:
    text = captions(dataset, model, seeds)
    parts = [f"% {dataset} / {model}: the paper's figure as tables, methods x sparsities\n"]
    for key, header, rows in _tables(summary, latex=True):
        caption = latex_caption(text[key]).replace("†", r"$^\dagger$")
        parts.append(latex_table(header, rows, caption=caption,
                                 label=table_label(dataset, model, f"figure-{key}")))
    return "\n".join(parts)


def figure_frame(summary: pd.DataFrame) -> pd.DataFrame:
    """One row per (method, sparsity) with the CSV_COLUMNS, sparsities ascending."""
    frame = summary.assign(density=1 - summary["sparsity"], best_in_column=best_in_column(summary),
                           significant_vs_dpai=significant(summary))
    order = {m: i for i, m in enumerate(dict.fromkeys(summary["method"]))}
    frame = frame.assign(_m=frame["method"].map(order)).sort_values(["_m", "sparsity"],
                                                                     kind="stable")
    return frame[CSV_COLUMNS].reset_index(drop=True)


def figure_csv(summary: pd.DataFrame) -> str:
    return figure_frame(summary).to_csv(index=False, float_format="%.6g")


MARKERS = ("o", "s", "^", "D")


def compression(sparsity) -> np.ndarray:
    """-log10(density): 0.6838 -> 0.5, 0.9 -> 1, 0.99 -> 2 (the paper's x axis)."""
    return -np.log10(1 - np.asarray(sparsity, dtype=float))


def plot_figure(summary: pd.DataFrame, path, *, dataset: str, model: str):
    """Accuracy (± std), ln effective nodes and log effective paths against sparsity."""
    frame = figure_frame(summary)
    sparsities = sorted(frame["sparsity"].unique())
    fig = Figure(figsize=(15, 4.6), layout="constrained")
    axes = fig.subplots(1, 3)
    panels = [("final_test_acc_mean", "final test accuracy (%)"),
              ("ln_effective_nodes", "ln effective nodes"),
              ("log_paths_exact", "log effective paths")]
    for i, (method, rows) in enumerate(frame.groupby("method", sort=False)):
        # matplotlib's cycle has 10 colours: past the tenth method the marker tells them apart
        style = {"color": f"C{i % 10}", "marker": MARKERS[i // 10 % len(MARKERS)]}
        x = compression(rows["sparsity"])
        std = rows["final_test_acc_std"].fillna(0.0)
        axes[0].errorbar(x, rows["final_test_acc_mean"], yerr=std, capsize=3, label=method,
                         **style)
        for ax, (column, _) in zip(axes[1:], panels[1:]):
            values = rows[column].where(np.isfinite(rows[column]))
            ax.plot(x, values, label=method, **style)
    for ax, (_, label) in zip(axes, panels):
        ax.set_xticks(compression(sparsities), [sparsity_label(s) for s in sparsities])
        ax.set(xlabel="sparsity", ylabel=label, title=label)
        ax.grid(alpha=0.3)
    if len(sparsities) == 1:
        for ax in axes:
            ax.set_xlim(compression(sparsities)[0] - 0.5, compression(sparsities)[0] + 0.5)
    handles, labels = axes[1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right center", fontsize=9)
    fig.suptitle(f"{dataset} / {model}")
    return save_figure(fig, path)

