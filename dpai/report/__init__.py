"""Turn mask reports and training runs into tables, DVC metrics and figures.

    from dpai.report import load_masks, load_runs, write_report
    methods, seeds = ["dpai", "snip"], [0, 1, 2]
    masks = load_masks(".", methods, seeds, sparsity=0.9)  # masks/{method}/{method}-{seed}.json
    runs = load_runs(".", methods, seeds, sparsity=0.9)    # runs/{method}-{seed}.json
    write_report("reports", masks, runs, dataset="cifar10", model="resnet20", sparsity=0.9,
                 seeds=seeds)

Across experiments (`dvc exp show --json -A`): `exp_show_records`, `paper_group`, `write_paper`.
"""
from .build import OUTPUTS, write_report
from .inputs import (MASK_FILE, RUN_FILE, load_masks, load_runs, mask_path, read_params,
                     run_path)
from .paper import (exp_show_records, groups, latest_per_sparsity, paper_csv, paper_group,
                    paper_latex, paper_markdown, plot_accuracy_vs_sparsity, sparsity_label,
                    write_paper)
from .plots import (plot_dpai_trajectory, plot_layer_density, plot_layer_nodes,
                    plot_training_curves, training_curves)
from .results import (REFERENCE, metrics, results_csv, results_frame, results_latex,
                      results_markdown, welch_p)

__all__ = ["OUTPUTS", "REFERENCE", "MASK_FILE", "RUN_FILE", "write_report", "load_masks",
           "load_runs", "mask_path", "run_path", "read_params", "results_frame",
           "results_markdown", "results_latex", "results_csv", "metrics", "welch_p",
           "training_curves", "plot_layer_density", "plot_layer_nodes", "plot_dpai_trajectory",
           "plot_training_curves", "exp_show_records", "groups", "latest_per_sparsity",
           "paper_group", "paper_markdown", "paper_latex", "paper_csv",
           "plot_accuracy_vs_sparsity", "sparsity_label", "write_paper"]
