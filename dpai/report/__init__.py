"""Turn mask reports and training runs into tables, DVC metrics and figures.

    from dpai.report import load_masks, load_runs, load_timings, write_report
    methods, sparsities, seeds = ["dpai", "snip"], [0.9, 0.99], [0, 1, 2]
    masks = load_masks(".", methods, sparsities, seeds)  # masks/{method}-{sparsity}-{seed}.json
    runs = load_runs(".", methods, sparsities, seeds)    # runs/{method}-{sparsity}-{seed}.json
    timings = load_timings(".", methods, sparsities, seeds)  # timings/{mask,train}/..., optional
    write_report("reports", masks, runs, dataset="cifar10", model="resnet20", seeds=seeds,
                 timings=timings)

A comparison across experiments is `dvc exp show` / `dvc exp diff` on reports/metrics.json.
"""
from .build import OUTPUTS, SIDE_OUTPUTS, write_report
from .figure import figure_csv, figure_frame, figure_latex, figure_markdown, plot_figure
from .inputs import (MASK_FILE, RUN_FILE, TIMING_FILE, item_name, load_masks, load_runs,
                     load_timings, mask_path, run_path, sparsity_name, timing_path)
from .plots import (plot_dpai_trajectory, plot_layer_density, plot_layer_nodes,
                    plot_training_curves, training_curves)
from .render import sparsity_label
from .results import (REFERENCE, metrics, results_csv, results_frame, results_latex,
                      results_markdown, sparsity_key, summary_frame, welch_p)
from .timings import timings_csv, timings_frame, timings_markdown

__all__ = ["OUTPUTS", "SIDE_OUTPUTS", "REFERENCE", "MASK_FILE", "RUN_FILE", "TIMING_FILE",
           "write_report", "load_masks", "load_runs", "load_timings", "mask_path", "run_path",
           "timing_path", "item_name", "sparsity_name", "sparsity_key", "sparsity_label",
           "results_frame", "summary_frame", "results_markdown", "results_latex",
           "results_csv", "metrics", "welch_p", "figure_frame", "figure_markdown",
           "figure_latex", "figure_csv", "plot_figure", "training_curves",
           "plot_layer_density", "plot_layer_nodes", "plot_dpai_trajectory",
           "plot_training_curves", "timings_frame", "timings_markdown", "timings_csv"]
