"""Figures of one setting, drawn with matplotlib's object API (no pyplot state, Agg canvas).

The per-layer figures and DPaI's trajectory have one row of panels per sparsity (ascending),
the training curves one column per sparsity. Every figure is saved atomically as PNG without
matplotlib's version chunk, so identical inputs give byte-identical files; a figure that has
nothing to show still writes a PNG that says why, because DVC expects every declared output to
exist.
"""
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..files.atomic import atomic_write
from .render import sparsity_label
from .results import REFERENCE


def save_figure(fig: Figure, path):
    """Write `fig` as PNG atomically (the temporary name has no .png suffix, so say the format);
    no "Software" chunk (matplotlib's version), so the bytes depend on the drawing only. The
    figures use the constrained layout, so the PNG has the figure's size (no tight bbox)."""
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120,
                                                      metadata={"Software": None}))


def message_figure(text: str) -> Figure:
    fig = Figure(figsize=(6, 2), layout="constrained")
    ax = fig.subplots()
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=12)
    return fig


def layer_names(masks: dict[float, dict[str, list[dict]]]) -> list[str]:
    """Prunable layers in network order (the order of a mask report's "layers"), across
    sparsities and methods."""
    names = {}
    for by_method in masks.values():
        for reports in by_method.values():
            for report in reports:
                names.update(dict.fromkeys(report["layers"]))
    return list(names)


def _layer_mean(reports: list[dict], names: list[str], value) -> list[float]:
    """Per layer, the mean over the per-seed reports of value(report, layer) (NaN if absent)."""
    table = np.array([[value(r, n) for n in names] for r in reports], dtype=float)
    counts = (~np.isnan(table)).sum(axis=0)
    return list(np.where(counts > 0, np.nansum(table, axis=0) / np.maximum(counts, 1), np.nan))


def _sparsity_rows(masks: dict, names: list[str]):
    """A figure with one panel per sparsity (ascending, stacked, shared layer axis)."""
    sparsities = sorted(masks)
    fig = Figure(figsize=(max(6.0, 0.3 * len(names)), 1.0 + 3.5 * len(sparsities)),
                 layout="constrained")
    axes = fig.subplots(len(sparsities), 1, sharex=True, squeeze=False)[:, 0]
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[-1].set_xticks(range(len(names)), names, rotation=90, fontsize=7)
    axes[-1].set_xlabel("prunable layer (network order)")
    return fig, list(zip(sparsities, axes))


def _density(report: dict, layer: str) -> float:
    return report["layers"].get(layer, {}).get("density", np.nan)


def _node_fraction(report: dict, layer: str) -> float:
    t = report["topology"]["layers"].get(layer)
    return t["effective_nodes"] / t["nodes"] if t and t["nodes"] else np.nan


def plot_layer_density(masks: dict[float, dict[str, list[dict]]], path):
    """Per-layer density (mean over seeds), one line per method, one panel per sparsity; the
    log scale shows dense and 1 % layers side by side."""
    names = layer_names(masks)
    fig, panels = _sparsity_rows(masks, names)
    for sparsity, ax in panels:
        for method, reports in masks[sparsity].items():
            ax.plot(range(len(names)), _layer_mean(reports, names, _density), marker="o", ms=3,
                    label=method)
        ax.set_yscale("log")
        ax.set_ylabel("density (kept / total)")
        ax.set_title(f"sparsity {sparsity_label(sparsity)}")
        ax.legend(fontsize=8)
    fig.suptitle("Per-layer density (mean over seeds)")
    return save_figure(fig, path)


def plot_layer_nodes(masks: dict[float, dict[str, list[dict]]], path):
    """Per-layer fraction of effective nodes (mean over seeds), one line per method, one panel
    per sparsity; a layer that collapsed (no effective node) in any seed's mask is marked x."""
    names = layer_names(masks)
    fig, panels = _sparsity_rows(masks, names)
    for sparsity, ax in panels:
        for method, reports in masks[sparsity].items():
            frac = _layer_mean(reports, names, _node_fraction)
            line, = ax.plot(range(len(names)), frac, marker="o", ms=3, label=method)
            hit = {n for r in reports for n in r["topology"]["collapsed_layers"] if n in names}
            where = [i for i, n in enumerate(names) if n in hit]
            if where:
                ax.plot(where, [frac[i] for i in where], "x", ms=10, mew=2,
                        color=line.get_color(), label=f"{method}: collapsed ({len(where)})")
        ax.set_ylim(-0.05, 1.05)
        ax.set_ylabel("effective / all nodes")
        ax.set_title(f"sparsity {sparsity_label(sparsity)}")
        ax.legend(fontsize=8)
    fig.suptitle("Per-layer effective nodes (x = collapsed in some seed)")
    return save_figure(fig, path)


TRAJECTORY = [("objective", "objective"), ("log_paths", "log-paths (reference)"),
              ("nodes", "effective nodes"), ("kernels", "effective kernels")]


def plot_dpai_trajectory(masks: dict[float, dict[str, list[dict]]], path):
    """DPaI's objective, log-paths, effective nodes and kernels against the optimisation step,
    one line per seed, one row of panels per sparsity."""
    if not any(REFERENCE in by_method for by_method in masks.values()):
        return save_figure(message_figure(f"{REFERENCE} not in methods: no trajectory"), path)
    found = {s: [(r["info"].get("seed"), r["info"]["trajectory"])
                 for r in masks[s].get(REFERENCE, [])
                 if (r["info"].get("trajectory") or {}).get("step")] for s in sorted(masks)}
    found = {s: runs for s, runs in found.items() if runs}
    if not found:
        return save_figure(message_figure(f"{REFERENCE}: no trajectory recorded"), path)
    fig = Figure(figsize=(14, 1.0 + 3.0 * len(found)), layout="constrained")
    grid = fig.subplots(len(found), len(TRAJECTORY), squeeze=False)
    for row, (sparsity, runs) in zip(grid, found.items()):
        for ax, (key, label) in zip(row, TRAJECTORY):
            for seed, traj in runs:
                values = [np.nan if v is None else v for v in traj.get(key) or []]
                ax.plot(traj["step"][:len(values)], values, label=f"seed {seed}")
            ax.set_title(f"{label}, {sparsity_label(sparsity)}", fontsize=9)
            ax.grid(alpha=0.3)
        row[0].legend(fontsize=8)
    for ax in grid[-1]:
        ax.set_xlabel("step")
    fig.suptitle(f"{REFERENCE} mask search trajectory")
    return save_figure(fig, path)


CURVE_COLUMNS = ["method", "sparsity", "epoch", "test_acc_mean", "test_acc_std",
                 "train_loss_mean"]


def training_curves(runs: dict[float, dict[str, list[dict]]]) -> pd.DataFrame:
    """Long form: per method, sparsity and epoch, test accuracy mean and std over seeds and the
    mean train loss; methods in params order, sparsities in `runs` order."""
    rows = [{"method": m, "sparsity": s, "epoch": e["epoch"],
             "test_acc": np.nan if e["test_acc"] is None else e["test_acc"],
             "train_loss": np.nan if e["train_loss"] is None else e["train_loss"]}
            for s, by_method in runs.items() for m, rs in by_method.items() for r in rs
            for e in r["epochs"]]
    if not rows:
        return pd.DataFrame(columns=CURVE_COLUMNS)
    methods = list(dict.fromkeys(m for by_method in runs.values() for m in by_method))
    long = pd.DataFrame(rows)
    long["method"] = pd.Categorical(long["method"], categories=methods)  # keep params order
    long["sparsity"] = pd.Categorical(long["sparsity"], categories=list(runs))
    out = long.groupby(["method", "sparsity", "epoch"], observed=True).agg(
        test_acc_mean=("test_acc", "mean"), test_acc_std=("test_acc", "std"),
        train_loss_mean=("train_loss", "mean")).reset_index()
    out["method"] = out["method"].astype(str)
    out["sparsity"] = out["sparsity"].astype(float)
    return out[CURVE_COLUMNS]


def plot_training_curves(curves: pd.DataFrame, path):
    """Per sparsity (columns): test accuracy (mean, shaded ± std) and mean train loss per
    epoch, one line per method."""
    sparsities = sorted(curves["sparsity"].unique()) or [None]
    fig = Figure(figsize=(1.0 + 4.5 * len(sparsities), 7.5), layout="constrained")
    grid = fig.subplots(2, len(sparsities), squeeze=False)
    for col, sparsity in enumerate(sparsities):
        acc_ax, loss_ax = grid[0, col], grid[1, col]
        for method, c in curves[curves["sparsity"] == sparsity].groupby("method", sort=False):
            line, = acc_ax.plot(c["epoch"], c["test_acc_mean"], label=method)
            std = c["test_acc_std"].fillna(0.0)
            acc_ax.fill_between(c["epoch"], c["test_acc_mean"] - std, c["test_acc_mean"] + std,
                                color=line.get_color(), alpha=0.2)
            loss_ax.plot(c["epoch"], c["train_loss_mean"], label=method)
        level = "" if sparsity is None else f", sparsity {sparsity_label(sparsity)}"
        acc_ax.set(xlabel="epoch", ylabel="test accuracy (%)",
                   title=f"Test accuracy (mean ± std){level}")
        loss_ax.set(xlabel="epoch", ylabel="train loss", title=f"Train loss (mean){level}")
        for ax in (acc_ax, loss_ax):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=8)
    return save_figure(fig, path)
