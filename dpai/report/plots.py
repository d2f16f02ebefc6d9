"""Figures of one experiment, drawn with matplotlib's object API (no pyplot state, Agg canvas).

Every figure is saved atomically as PNG; a figure that has nothing to show still writes a
PNG that says why, because DVC expects every declared output to exist.
"""
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..io import atomic_write
from .results import REFERENCE


def save_figure(fig: Figure, path):
    """Write `fig` as PNG atomically (the temporary name has no .png suffix, so say the format)."""
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120,
                                                      bbox_inches="tight"))


def message_figure(text: str) -> Figure:
    fig = Figure(figsize=(6, 2))
    ax = fig.subplots()
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=12)
    return fig


def layer_names(masks: dict[str, list[dict]]) -> list[str]:
    """Prunable layers in network order (the order of a mask report's "layers"), across methods."""
    names = {}
    for reports in masks.values():
        for report in reports:
            names.update(dict.fromkeys(report["layers"]))
    return list(names)


def _layer_mean(reports: list[dict], names: list[str], value) -> list[float]:
    """Per layer, the mean over the per-seed reports of value(report, layer) (NaN if absent)."""
    table = np.array([[value(r, n) for n in names] for r in reports], dtype=float)
    counts = (~np.isnan(table)).sum(axis=0)
    return list(np.where(counts > 0, np.nansum(table, axis=0) / np.maximum(counts, 1), np.nan))


def _layer_axes(fig: Figure, names: list[str]):
    ax = fig.subplots()
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
    ax.set_xlabel("prunable layer (network order)")
    ax.grid(alpha=0.3)
    return ax


def _density(report: dict, layer: str) -> float:
    return report["layers"].get(layer, {}).get("density", np.nan)


def _node_fraction(report: dict, layer: str) -> float:
    t = report["topology"]["layers"].get(layer)
    return t["effective_nodes"] / t["nodes"] if t and t["nodes"] else np.nan


def plot_layer_density(masks: dict[str, list[dict]], path):
    """Per-layer density (mean over seeds), one line per method; log scale shows dense and
    1 % layers side by side."""
    names = layer_names(masks)
    fig = Figure(figsize=(max(6.0, 0.3 * len(names)), 4.5))
    ax = _layer_axes(fig, names)
    for method, reports in masks.items():
        ax.plot(range(len(names)), _layer_mean(reports, names, _density), marker="o", ms=3,
                label=method)
    ax.set_yscale("log")
    ax.set_ylabel("density (kept / total)")
    ax.set_title("Per-layer density")
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def plot_layer_nodes(masks: dict[str, list[dict]], path):
    """Per-layer fraction of effective nodes (mean over seeds), one line per method; a layer
    that collapsed (no effective node) in any seed's mask is marked x."""
    names = layer_names(masks)
    fig = Figure(figsize=(max(6.0, 0.3 * len(names)), 4.5))
    ax = _layer_axes(fig, names)
    for method, reports in masks.items():
        frac = _layer_mean(reports, names, _node_fraction)
        line, = ax.plot(range(len(names)), frac, marker="o", ms=3, label=method)
        hit = {n for r in reports for n in r["topology"]["collapsed_layers"] if n in names}
        where = [i for i, n in enumerate(names) if n in hit]
        if where:
            ax.plot(where, [frac[i] for i in where], "x", ms=10, mew=2, color=line.get_color(),
                    label=f"{method}: collapsed ({len(where)})")
    ax.set_ylim(-0.05, 1.05)
    ax.set_ylabel("effective nodes / nodes (mean over seeds)")
    ax.set_title("Per-layer effective nodes (x = collapsed in some seed)")
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def plot_dpai_trajectory(masks: dict[str, list[dict]], path):
    """DPaI's objective, log-paths, effective nodes and kernels against the optimisation step,
    one line per seed."""
    if REFERENCE not in masks:
        return save_figure(message_figure(f"{REFERENCE} not in methods: no trajectory"), path)
    found = [(r["info"].get("seed"), r["info"]["trajectory"]) for r in masks[REFERENCE]
             if (r["info"].get("trajectory") or {}).get("step")]
    if not found:
        return save_figure(message_figure(f"{REFERENCE}: no trajectory recorded"), path)
    panels = [("objective", "objective"), ("log_paths", "log-paths (reference)"),
              ("nodes", "effective nodes"), ("kernels", "effective kernels")]
    fig = Figure(figsize=(10, 7))
    axes = fig.subplots(2, 2, sharex=True).ravel()
    for ax, (key, label) in zip(axes, panels):
        for seed, traj in found:
            values = [np.nan if v is None else v for v in traj.get(key) or []]
            ax.plot(traj["step"][:len(values)], values, label=f"seed {seed}")
        ax.set_title(label)
        ax.grid(alpha=0.3)
    for ax in axes[2:]:
        ax.set_xlabel("step")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{REFERENCE} mask search trajectory")
    return save_figure(fig, path)


def training_curves(runs: dict[str, list[dict]]) -> pd.DataFrame:
    """Per method and epoch: test accuracy mean and std over seeds, and mean train loss."""
    rows = [{"method": m, "epoch": e["epoch"], "test_acc": e["test_acc"],
             "train_loss": e["train_loss"]} for m, rs in runs.items() for r in rs
            for e in r["epochs"]]
    cols = ["method", "epoch", "test_acc_mean", "test_acc_std", "train_loss_mean"]
    if not rows:
        return pd.DataFrame(columns=cols)
    long = pd.DataFrame(rows)
    long["method"] = pd.Categorical(long["method"], categories=list(runs))  # keep params order
    out = long.groupby(["method", "epoch"], observed=True).agg(
        test_acc_mean=("test_acc", "mean"), test_acc_std=("test_acc", "std"),
        train_loss_mean=("train_loss", "mean")).reset_index()
    out["method"] = out["method"].astype(str)
    return out[cols]


def plot_training_curves(curves: pd.DataFrame, path):
    """Test accuracy (mean, shaded ± std) and mean train loss per epoch, one line per method."""
    fig = Figure(figsize=(11, 4.2))
    acc_ax, loss_ax = fig.subplots(1, 2)
    for method, c in curves.groupby("method", sort=False):
        line, = acc_ax.plot(c["epoch"], c["test_acc_mean"], label=method)
        std = c["test_acc_std"].fillna(0.0)
        acc_ax.fill_between(c["epoch"], c["test_acc_mean"] - std, c["test_acc_mean"] + std,
                            color=line.get_color(), alpha=0.2)
        loss_ax.plot(c["epoch"], c["train_loss_mean"], label=method)
    acc_ax.set(xlabel="epoch", ylabel="test accuracy (%)", title="Test accuracy (mean ± std)")
    loss_ax.set(xlabel="epoch", ylabel="train loss", title="Train loss (mean over seeds)")
    for ax in (acc_ax, loss_ax):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return save_figure(fig, path)
