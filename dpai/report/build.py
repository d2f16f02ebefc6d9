"""Write every report file of one experiment into a folder (what `stages/report.py` produces)."""
from pathlib import Path

from ..io import write_json, write_text
from . import plots
from .results import metrics, results_csv, results_frame, results_latex, results_markdown

OUTPUTS = ("results.md", "results.csv", "results.tex", "metrics.json", "layer_density.png",
           "layer_nodes.png", "dpai_trajectory.png", "training_curves.png", "training_curves.csv")


def write_report(out_dir, masks: dict[str, list[dict]], runs: dict[str, list[dict]], *,
                 dataset: str, model: str, sparsity: float, seeds: list[int]) -> list[Path]:
    """Tables, metrics, plots and curves of `masks` (method -> mask reports, one per seed) and
    `runs` (method -> runs, one per seed) into `out_dir`; returns the paths written (OUTPUTS)."""
    out = Path(out_dir)
    frame = results_frame(masks, runs)
    about = dict(dataset=dataset, model=model, sparsity=sparsity, seeds=seeds)
    doc = metrics(frame, **about)  # validates the method names before anything is written
    curves = plots.training_curves(runs)
    return [
        write_text(out / "results.md", results_markdown(frame, **about)),
        write_text(out / "results.csv", results_csv(frame)),
        write_text(out / "results.tex", results_latex(frame, **about)),
        write_json(out / "metrics.json", doc),
        plots.plot_layer_density(masks, out / "layer_density.png"),
        plots.plot_layer_nodes(masks, out / "layer_nodes.png"),
        plots.plot_dpai_trajectory(masks, out / "dpai_trajectory.png"),
        plots.plot_training_curves(curves, out / "training_curves.png"),
        write_text(out / "training_curves.csv", curves.to_csv(index=False, float_format="%.6g")),
    ]
