"""Write every report file of one setting into a folder (what `stages/report.py` produces)."""
from pathlib import Path

from ..files.atomic import write_json, write_text
from . import plots
from .figure import figure_csv, figure_latex, figure_markdown, plot_figure
from .inputs import check_method_names
from .results import metrics, results_csv, results_latex, results_markdown, summary_frame
from .timings import timings_csv, timings_frame, timings_markdown

# DVC outputs of the report stage (dvc.yaml): pure functions of the mask reports, runs and
# params, byte-identical for identical inputs
OUTPUTS = ("results.md", "results.csv", "results.tex", "figure.md", "figure.csv", "figure.tex",
           "figure.png", "metrics.json", "layer_density.png", "layer_nodes.png",
           "dpai_trajectory.png", "training_curves.png", "training_curves.csv")
# side files from the wall-clock timings: no DVC output, nothing depends on them
SIDE_OUTPUTS = ("timings.md", "timings.csv")


def write_report(out_dir, masks: dict[float, dict[str, list[dict]]],
                 runs: dict[float, dict[str, list[dict]]], *, dataset: str, model: str,
                 seeds: list[int], timings: dict | None = None) -> list[Path]:
    """Tables, figure, metrics, plots and curves of `masks` and `runs` (sparsity -> method ->
    one document per seed, as `load_masks` / `load_runs` return them) into `out_dir`, and, with
    `timings` (`load_timings`), the side files; returns the paths written (OUTPUTS, then
    SIDE_OUTPUTS)."""
    out = Path(out_dir)
    check_method_names(m for by_method in masks.values() for m in by_method)
    summary = summary_frame(masks, runs)
    about = dict(dataset=dataset, model=model, seeds=seeds)
    doc = metrics(summary, **about)
    curves = plots.training_curves(runs)
    paths = [
        write_text(out / "results.md", results_markdown(summary, **about)),
        write_text(out / "results.csv", results_csv(summary)),
        write_text(out / "results.tex", results_latex(summary, **about)),
        write_text(out / "figure.md", figure_markdown(summary, **about)),
        write_text(out / "figure.csv", figure_csv(summary)),
        write_text(out / "figure.tex", figure_latex(summary, **about)),
        plot_figure(summary, out / "figure.png", dataset=dataset, model=model),
        write_json(out / "metrics.json", doc),
        plots.plot_layer_density(masks, out / "layer_density.png"),
        plots.plot_layer_nodes(masks, out / "layer_nodes.png"),
        plots.plot_dpai_trajectory(masks, out / "dpai_trajectory.png"),
        plots.plot_training_curves(curves, out / "training_curves.png"),
        write_text(out / "training_curves.csv", curves.to_csv(index=False, float_format="%.6g")),
    ]
    if timings is not None:
        frame = timings_frame(timings)
        paths += [write_text(out / "timings.md", timings_markdown(frame, dataset=dataset,
                                                                  model=model)),
                  write_text(out / "timings.csv", timings_csv(frame))]
    return paths
