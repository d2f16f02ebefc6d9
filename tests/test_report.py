"""Report stage on real mask/run files in the pipeline's layout (several methods, 2 sparsities,
3 seeds); every number is checked against a value computed here by hand."""
import importlib.util
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from matplotlib.image import imread
from scipy import stats

from dpai.report import (OUTPUTS, SIDE_OUTPUTS, figure_markdown, load_masks, load_runs,
                         load_timings, metrics, plot_dpai_trajectory, plot_figure,
                         results_markdown, summary_frame, write_report)

REPO = Path(__file__).resolve().parents[1]
METHODS = ["dpai", "snip", "random_erk"]
SPARSITIES = [0.9, 0.99]
SEEDS = [0, 1, 2]
LAYERS = {"conv1": (16, 3), "layer1.0.conv1": (16, 16), "layer1.0.conv2": (16, 16), "fc": (10, 16)}
POSITIONS = {"conv1": 64, "layer1.0.conv1": 64, "layer1.0.conv2": 64, "fc": 1}
# final and best test accuracy per (method, sparsity), one value per seed
FINAL = {("dpai", 0.9): [91.0, 91.5, 90.8], ("snip", 0.9): [90.9, 91.6, 90.5],
         ("random_erk", 0.9): [85.0, 86.0, 84.5],
         ("dpai", 0.99): [70.0, 72.5, 71.0], ("snip", 0.99): [73.0, 74.0, 72.0],
         ("random_erk", 0.99): [40.0, 55.0, 47.0]}
BEST = {k: [v + 0.2 + 0.1 * i for i, v in enumerate(vals)] for k, vals in FINAL.items()}
BEST[("snip", 0.9)] = [91.9, 92.3, 91.8]          # snip best at best-epoch, dpai at final
COLLAPSED = {("random_erk", 0.99, 1): ["layer1.0.conv2"]}  # (method, sparsity, seed) -> layers


def _params() -> dict:
    """A complete params.yaml (the stage validates the whole set) for this test's items."""
    from dvc.utils.hydra import compose_and_dump
    with tempfile.TemporaryDirectory() as tmp:
        compose_and_dump(f"{tmp}/p.yaml", str(REPO / "conf"), None, "config", str(REPO),
                         ["data.dataset=cifar10"])
        params = yaml.safe_load(Path(f"{tmp}/p.yaml").read_text())
    return {**params, "sparsity": 0.99, "sparsities": SPARSITIES, "methods": METHODS,
            "seeds": SEEDS}


PARAMS = _params()


def item(method, sparsity, seed):
    return f"{method}-{float(sparsity)}-{seed}"


def mask_report(method, sparsity, seed):
    """A mask report as stages/mask.py writes it; counts vary with method, sparsity and seed."""
    layers, topo_layers, kept_all, total_all = {}, {}, 0, 0
    collapsed = COLLAPSED.get((method, sparsity, seed), [])
    shrink = 1 if sparsity == 0.9 else 4
    flops = {"dense": 0, "kept": 0, "effective": 0}
    for i, (name, (out_ch, in_ch)) in enumerate(LAYERS.items()):
        total = out_ch * in_ch * (1 if name == "fc" else 9)
        kept = total // ((5 + i + METHODS.index(method)) * shrink) + seed
        kept_all, total_all = kept_all + kept, total_all + total
        layers[name] = {"kept": kept, "total": total, "density": kept / total}
        alive = 0 if name in collapsed else out_ch - 2 - i - seed - (shrink - 1)
        eff = 0 if name in collapsed else kept - 3
        topo_layers[name] = {"kept": kept, "effective_params": eff, "nodes": out_ch,
                             "effective_nodes": alive, "kernels": out_ch * in_ch,
                             "effective_kernels": alive * 2}
        for key, n in (("dense", total), ("kept", kept), ("effective", eff)):
            flops[key] += n * POSITIONS[name]
    info = {"method": method, "sparsity": sparsity, "seed": seed, "params": {}}
    if method == "dpai":
        info["trajectory"] = {"step": [0, 10, 20], "objective": [5.0, 4.0, 3.5 - seed],
                              "log_paths": [40.0, 50.0, 60.0 + seed], "nodes": [70, 60, 55],
                              "kernels": [900, 800, 700], "params": [300, 310, 320]}
    topology = {"effective_params": sum(t["effective_params"] for t in topo_layers.values()),
                "effective_nodes": sum(t["effective_nodes"] for t in topo_layers.values()),
                "effective_kernels": sum(t["effective_kernels"] for t in topo_layers.values()),
                "log_paths_reference": 43.64,
                "log_paths_exact": 28.7412345 + seed - 10 * (shrink - 1),
                "collapsed_layers": collapsed, "layers": topo_layers}
    return {"density": kept_all / total_all, "sparsity": 1 - kept_all / total_all,
            "kept": kept_all, "total": total_all, "layers": layers, "info": info,
            "topology": topology, "flops": flops}


def run_doc(method, sparsity, seed):
    final = FINAL[(method, sparsity)][seed]
    epochs = [{"epoch": e, "lr": 0.1, "train_loss": 2.0 / e + seed * 0.01 + sparsity,
               "train_acc": 50.0 + 10 * e, "test_loss": 1.0 / e,
               "test_acc": final - (3 - e) * (1 + seed)} for e in (1, 2, 3)]
    return {"method": method, "seed": seed, "sparsity": sparsity, "density": 1 - sparsity,
            "init": "same", "dataset": "cifar10", "model": "resnet20", "config": {},
            "environment": {"torch": "x", "device": "cpu", "threads": 1,
                            "deterministic": True},
            "epochs": epochs, "final_test_acc": final,
            "best_test_acc": BEST[(method, sparsity)][seed], "best_epoch": 3,
            "final_train_acc": 80.0, "steps": 30}


def write_inputs(root, params=PARAMS):
    """masks/<item>.json, runs/<item>.json, params.yaml; timing side files for some items."""
    for d in ("masks", "runs", "timings/mask", "timings/train"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for m in METHODS:
        for s in SPARSITIES:
            for seed in SEEDS:
                name = item(m, s, seed)
                (root / "masks" / f"{name}.json").write_text(json.dumps(mask_report(m, s, seed)))
                (root / "runs" / f"{name}.json").write_text(json.dumps(run_doc(m, s, seed)))
    # timings: all of snip at 0.9, mask only for dpai seed 0 at 0.99
    for seed in SEEDS:
        (root / "timings/mask" / f"{item('snip', 0.9, seed)}.json").write_text(
            json.dumps({"seconds": 2.0 + seed}))
        (root / "timings/train" / f"{item('snip', 0.9, seed)}.json").write_text(
            json.dumps({"seconds": 100.0 + 10 * seed}))
    (root / "timings/mask" / f"{item('dpai', 0.99, 0)}.json").write_text('{"seconds": 7.5}')
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture
def inputs(tmp_path):
    write_inputs(tmp_path)
    return tmp_path


def run_stage(root):
    """stages/report.py's main() run in `root` (in this process: a fresh interpreter would
    spend most of the test's time importing torch, which dpai's package init loads)."""
    if str(REPO / "stages") not in sys.path:
        sys.path.insert(0, str(REPO / "stages"))  # the stage imports its neighbour common.py
    spec = importlib.util.spec_from_file_location("report_stage", REPO / "stages" / "report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cwd, env, threads = os.getcwd(), dict(os.environ), torch.get_num_threads()
    os.chdir(root)
    try:
        module.main()
    finally:  # the stage sets threads and DPAI_TMPDIR for its process: undo for the others
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(env)
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """Inputs and the reports the stage script writes from them (rendered once: the figures
    take seconds); tests that read the reports use these, tests that change inputs copy."""
    root = tmp_path_factory.mktemp("shared")
    write_inputs(root)
    (root / "runs" / "old-0.9-9.json").write_text("stale")   # never opened
    run_stage(root)
    return root


@pytest.fixture
def out(shared):
    return shared / "reports"


def load(root, methods=METHODS, sparsities=SPARSITIES, seeds=SEEDS):
    return (load_masks(root, methods, sparsities, seeds),
            load_runs(root, methods, sparsities, seeds))


def report(root, out="reports", methods=METHODS, seeds=SEEDS):
    masks, runs = load(root, methods, seeds=seeds)
    write_report(root / out, masks, runs, dataset="cifar10", model="resnet20", seeds=seeds,
                 timings=load_timings(root, methods, SPARSITIES, seeds))
    return root / out


# -- numbers computed here, by hand ------------------------------------------------------
def mean(xs):
    return sum(xs) / len(xs)


def std(xs):  # sample standard deviation
    m = mean(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def welch(a, b):
    """Two-sided Welch p-value from its formula (t statistic, Welch-Satterthwaite df)."""
    va, vb = std(a) ** 2 / len(a), std(b) ** 2 / len(b)
    t = (mean(a) - mean(b)) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    return 2 * stats.t.sf(abs(t), df)


def mask_mean(m, s, get):
    return mean([get(mask_report(m, s, seed)) for seed in SEEDS])


def pm(m, s):
    return f"{mean(FINAL[(m, s)]):.2f} ± {std(FINAL[(m, s)]):.2f}"


def md_tables(text):
    """Every pipe table of a Markdown text: list of (header cells, {first cell: cells})."""
    tables, current = [], None
    for line in text.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if current is None:
                current = (cells, {})
                tables.append(current)
            elif not set("".join(cells)) <= set("-:"):
                current[1][cells[0]] = cells
        else:
            current = None
    return tables


# -- the tables ---------------------------------------------------------------------------
def test_summary_numbers_and_welch_p(inputs):
    summary = summary_frame(*load(inputs))
    assert list(zip(summary["method"], summary["sparsity"])) == \
        [(m, s) for s in SPARSITIES for m in METHODS]
    rows = summary.set_index(["method", "sparsity"])
    for (m, s), r in rows.iterrows():
        assert r["final_test_acc_mean"] == pytest.approx(mean(FINAL[(m, s)]), rel=1e-12)
        assert r["final_test_acc_std"] == pytest.approx(std(FINAL[(m, s)]), rel=1e-12)
        assert r["best_test_acc_mean"] == pytest.approx(mean(BEST[(m, s)]), rel=1e-12)
        assert r["best_test_acc_std"] == pytest.approx(std(BEST[(m, s)]), rel=1e-12)
        assert r["density"] == pytest.approx(mask_mean(m, s, lambda d: d["kept"] / d["total"]))
        nodes = mask_mean(m, s, lambda d: d["topology"]["effective_nodes"])
        assert r["effective_nodes"] == pytest.approx(nodes)
        assert r["ln_effective_nodes"] == pytest.approx(math.log(nodes))
        for key in ("effective_kernels", "effective_params", "log_paths_exact"):
            assert r[key] == pytest.approx(mask_mean(m, s, lambda d: d["topology"][key]))
        for key in ("dense", "kept", "effective"):   # FLOPs: per-layer kept x positions, by hand
            by_hand = mean([sum(layer[{"dense": "total", "kept": "kept"}[key]] * POSITIONS[n]
                                if key != "effective" else
                                mask_report(m, s, seed)["topology"]["layers"][n][
                                    "effective_params"] * POSITIONS[n]
                                for n, layer in mask_report(m, s, seed)["layers"].items())
                            for seed in SEEDS])
            assert r[f"flops_{key}"] == pytest.approx(by_hand)
        if m == "dpai":
            assert np.isnan(r["p_value_vs_dpai"])
        else:
            assert r["p_value_vs_dpai"] == pytest.approx(welch(FINAL[("dpai", s)], FINAL[(m, s)]),
                                                         rel=1e-9)
    assert rows["collapsed_layers"].tolist() == [0, 0, 0, 0, 0, 1]   # random_erk, 0.99, seed 1
    assert rows["collapsed_seeds"].tolist() == [0, 0, 0, 0, 0, 1]
    assert rows.at[("random_erk", 0.99), "p_value_vs_dpai"] < 0.05 \
        < rows.at[("snip", 0.9), "p_value_vs_dpai"]


def test_results_markdown_per_sparsity_accuracy_and_structure(out):
    text = (out / "results.md").read_text()
    assert [line for line in text.splitlines() if line.startswith("## ")] == \
        ["## Sparsity 90 % (density 0.1)", "## Sparsity 99 % (density 0.01)"]
    tables = md_tables(text)
    assert len(tables) == 4                         # accuracy + structure, per sparsity
    for s, (acc, struct) in zip(SPARSITIES, (tables[0:2], tables[2:4])):
        header, rows = acc
        assert header == ["method", "final test acc. (%)", "best epoch (test-selected) (%)",
                          "p vs dpai"]
        assert list(rows) == METHODS
        finals = {m: mean(FINAL[(m, s)]) for m in METHODS}
        bests = {m: mean(BEST[(m, s)]) for m in METHODS}
        for m in METHODS:
            bold_final = finals[m] == max(finals.values())
            assert rows[m][1] == (f"**{pm(m, s)}**" if bold_final else pm(m, s))
            assert rows[m][2].startswith("**") == (bests[m] == max(bests.values()))
            if m == "dpai":
                assert rows[m][3] == ""
            else:
                p = welch(FINAL[("dpai", s)], FINAL[(m, s)])
                assert rows[m][3] == f"{p:.3g}" + (" *" if p < 0.05 else "")
        header, rows = struct
        assert header == ["method", "density", "eff. nodes", "eff. kernels", "eff. params",
                          "log-paths (exact)", "layer collapse", "FLOPs kept", "FLOPs eff."]
        assert len(header) <= 9
        nodes = mask_mean("dpai", s, lambda d: d["topology"]["effective_nodes"])
        assert rows["dpai"][2] == f"{nodes:.0f}"
        kept = mask_mean("snip", s, lambda d: d["flops"]["kept"])
        assert rows["snip"][7] == f"{kept / 1e3:.3g}K"
    assert md_tables(text)[0][1]["dpai"][1].startswith("**")      # 0.9: dpai best final
    assert md_tables(text)[0][1]["snip"][2].startswith("**")      # 0.9: snip best-epoch
    assert md_tables(text)[2][1]["snip"][1].startswith("**")      # 0.99: snip best final
    assert md_tables(text)[3][1]["random_erk"][6] == "yes (1; 1/3 masks)"
    assert md_tables(text)[3][1]["snip"][6] == "no"


def test_results_csv_has_every_number_per_method_and_sparsity(out):
    csv = pd.read_csv(out / "results.csv")
    assert list(zip(csv["method"], csv["sparsity"])) == [(m, s) for s in SPARSITIES
                                                         for m in METHODS]
    for col in ("final_test_acc_mean", "final_test_acc_std", "best_test_acc_mean",
                "best_test_acc_std", "p_value_vs_dpai", "density", "effective_nodes",
                "effective_kernels", "effective_params", "log_paths_exact", "collapsed_layers",
                "flops_dense", "flops_kept", "flops_effective"):
        assert col in csv.columns, col
    # wall-clock seconds are not in a DVC output: they live in the timings side files
    assert not [c for c in csv.columns if "seconds" in c]
    r = csv[(csv["method"] == "random_erk") & (csv["sparsity"] == 0.99)].iloc[0]
    assert r["final_test_acc_std"] == pytest.approx(std(FINAL[("random_erk", 0.99)]), rel=1e-5)
    assert r["p_value_vs_dpai"] == pytest.approx(welch(FINAL[("dpai", 0.99)],
                                                       FINAL[("random_erk", 0.99)]), rel=1e-5)


def test_figure_tables_bold_best_and_dagger(out):
    tables = md_tables((out / "figure.md").read_text())
    assert len(tables) == 5       # accuracy, ln nodes, log paths, FLOPs kept, FLOPs effective
    header, rows = tables[0]
    assert header == ["method", "90 %", "99 %"] and list(rows) == METHODS
    for col, s in enumerate(SPARSITIES, start=1):
        best = max(mean(FINAL[(m, s)]) for m in METHODS)
        for m in METHODS:
            expected = pm(m, s)
            if mean(FINAL[(m, s)]) == best:
                expected = f"**{expected}**"
            if m != "dpai" and welch(FINAL[("dpai", s)], FINAL[(m, s)]) < 0.05:
                expected += " †"
            assert rows[m][col] == expected
    assert rows["random_erk"][2].endswith(" †") and rows["snip"][2].startswith("**")
    for table, get in ((tables[1], lambda d: d["topology"]["effective_nodes"]),
                       (tables[2], lambda d: d["topology"]["log_paths_exact"])):
        for m in METHODS:
            values = [mask_mean(m, s, get) for s in SPARSITIES]
            if table is tables[1]:
                values = [math.log(v) for v in values]
            assert table[1][m][1:] == [f"{v:.2f}" for v in values]
    eff = mask_mean("dpai", 0.9, lambda d: d["flops"]["effective"])
    assert tables[4][1]["dpai"][1] == f"{eff / 1e3:.3g}K"

    csv = pd.read_csv(out / "figure.csv")
    assert list(zip(csv["method"], csv["sparsity"])) == [(m, s) for m in METHODS
                                                         for s in SPARSITIES]
    r = csv.set_index(["method", "sparsity"])
    assert r.at[("snip", 0.99), "best_in_column"] and not r.at[("dpai", 0.99), "best_in_column"]
    assert r.at[("random_erk", 0.99), "significant_vs_dpai"]
    assert r.at[("dpai", 0.9), "density"] == pytest.approx(0.1)


_ROW = re.compile(r"\\\\\s*$")


def check_latex(tex):
    """Balanced braces and environments; in every tabular each row has as many cells as the
    column spec; returns the column counts."""
    plain = tex.replace(r"\{", "").replace(r"\}", "")
    depth = 0
    for c in plain:
        depth += {"{": 1, "}": -1}.get(c, 0)
        assert depth >= 0
    assert depth == 0
    envs = re.findall(r"\\(begin|end)\{(\w+)\}", tex)
    stack = []
    for kind, name in envs:
        if kind == "begin":
            stack.append(name)
        else:
            assert stack.pop() == name
    assert not stack
    counts = []
    for spec, body in re.findall(r"\\begin\{tabular\}\{([lrc]+)\}(.*?)\\end\{tabular\}", tex,
                                 re.S):
        rows = [line for line in body.splitlines() if _ROW.search(line)]
        assert rows
        for row in rows:
            assert row.replace(r"\&", "").count("&") + 1 == len(spec), row
        counts.append(len(spec))
    return counts


def test_latex_compiles_structurally_and_fits_a_page(out):
    results = (out / "results.tex").read_text()
    counts = check_latex(results)
    assert counts == [4, 9, 4, 9] and max(counts) <= 9
    assert results.count(r"\toprule") == 4 and r"$\pm$" in results
    rows = [line.split(" & ") for line in results.splitlines() if line.startswith("random")]
    assert rows and all(r[0] == r"random\_erk" for r in rows)
    assert r"p \textless{} 0.05" in results
    figure = (out / "figure.tex").read_text()
    assert check_latex(figure) == [3] * 5
    assert r"\textbf{" in figure and r"$^\dagger$" in figure
    for tex in (results, figure):      # every underscore outside comments escaped
        body = "\n".join(line for line in tex.splitlines() if not line.startswith("%"))
        assert "_" not in body.replace(r"\_", "")


def test_pngs_decode_not_blank(out):
    for name in OUTPUTS:
        if name.endswith(".png"):
            img = imread(out / name)
            assert img.ndim == 3 and img.shape[2] in (3, 4), name
            assert img[..., :3].var() > 1e-3, name
    # figure size x 120 dpi (constrained layout, no trimming): the figure 15 x 4.6 inches;
    # per-sparsity figures grow with the 2 sparsities (columns of curves, rows of layers)
    assert imread(out / "figure.png").shape[:2] == (552, 1800)
    assert imread(out / "training_curves.png").shape[:2] == (900, 120 * (1 + 4.5 * 2))
    assert imread(out / "layer_density.png").shape[:2] == (120 * (1 + 3.5 * 2), 720)
    assert imread(out / "dpai_trajectory.png").shape[:2] == (120 * (1 + 3 * 2), 1680)


def test_metrics_document(out):
    doc = json.loads((out / "metrics.json").read_text())
    assert (doc["dataset"], doc["model"], doc["sparsities"], doc["num_seeds"]) == \
        ("cifar10", "resnet20", [0.9, 0.99], 3)
    assert list(doc["methods"]) == METHODS
    assert list(doc["methods"]["snip"]) == ["s0_9", "s0_99"]

    def keys(node):
        if isinstance(node, dict):
            for k, v in node.items():
                yield k
                yield from keys(v)
    assert not [k for k in keys(doc) if "." in k or "@" in k]
    snip = doc["methods"]["snip"]["s0_99"]
    assert snip["final_test_acc_mean"] == round(mean(FINAL[("snip", 0.99)]), 4)
    assert snip["final_test_acc_std"] == round(std(FINAL[("snip", 0.99)]), 4)
    assert snip["best_test_acc_mean"] == round(mean(BEST[("snip", 0.99)]), 4)
    assert doc["methods"]["dpai"]["s0_9"]["log_paths_exact"] == 29.7412   # 28.74 .. 30.74
    assert doc["methods"]["random_erk"]["s0_99"]["collapsed_layers"] == 1
    assert doc["methods"]["dpai"]["s0_9"]["p_value_vs_dpai"] is None
    for key in ("effective_nodes", "flops_kept", "flops_effective"):
        assert key in snip


def test_training_curves_long_form(out):
    curves = pd.read_csv(out / "training_curves.csv")
    assert list(curves.columns) == ["method", "sparsity", "epoch", "test_acc_mean",
                                    "test_acc_std", "train_loss_mean"]
    assert len(curves) == len(METHODS) * len(SPARSITIES) * 3
    row = curves[(curves["method"] == "snip") & (curves["sparsity"] == 0.99)
                 & (curves["epoch"] == 1)].iloc[0]
    accs = [run_doc("snip", 0.99, s)["epochs"][0]["test_acc"] for s in SEEDS]
    loss = [run_doc("snip", 0.99, s)["epochs"][0]["train_loss"] for s in SEEDS]
    assert row["test_acc_mean"] == pytest.approx(mean(accs), rel=1e-5)
    assert row["test_acc_std"] == pytest.approx(std(accs), rel=1e-5)
    assert row["train_loss_mean"] == pytest.approx(mean(loss), rel=1e-5)


def test_timings_side_files(out):
    assert not set(SIDE_OUTPUTS) & set(OUTPUTS)
    frame = pd.read_csv(out / "timings.csv").set_index(["method", "sparsity"])
    assert frame.at[("snip", 0.9), "mask_seconds_mean"] == pytest.approx(3.0)
    assert frame.at[("snip", 0.9), "train_seconds_total"] == pytest.approx(330.0)
    assert frame.at[("dpai", 0.99), "mask_seeds_timed"] == 1
    assert np.isnan(frame.at[("dpai", 0.99), "train_seconds_mean"])
    assert np.isnan(frame.at[("random_erk", 0.9), "mask_seconds_mean"])
    lines = (out / "timings.md").read_text().splitlines()
    assert "| snip | 90 % | 3.0 | 110.0 | 339 | 3/3, 3/3 |" in lines
    assert "| dpai | 99 % | 7.5 |  | 8 | 1/3, 0/3 |" in lines
    assert "| random_erk | 90 % |  |  |  | 0/3, 0/3 |" in lines


def test_byte_identical_across_runs_and_timings_do_not_leak(shared, tmp_path):
    """The library on a copy of the inputs with other wall-clock seconds writes the same bytes
    as the stage script did; only the timing side files differ."""
    for name in ("masks", "runs", "timings"):
        shutil.copytree(shared / name, tmp_path / name)
    for path in (tmp_path / "timings").rglob("*.json"):
        path.write_text(json.dumps({"seconds": 999.0}))
    second = report(tmp_path, out="b")
    for name in OUTPUTS:
        assert (shared / "reports" / name).read_bytes() == (second / name).read_bytes(), name
    assert (shared / "reports" / "timings.md").read_bytes() != \
        (second / "timings.md").read_bytes()


# -- inputs: exact files, loud failures ----------------------------------------------------
def test_missing_file_error_names_the_file(inputs):
    (inputs / "runs" / "snip-0.99-2.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"runs/snip-0\.99-2\.json"):
        load(inputs)
    (inputs / "masks" / "dpai-0.9-1.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"masks/dpai-0\.9-1\.json"):
        load(inputs)


def test_stale_extra_files_are_ignored(inputs):
    before = summary_frame(*load(inputs))
    (inputs / "runs" / "snip-0.99-7.json").write_text(json.dumps(
        {**run_doc("snip", 0.99, 0), "seed": 7, "final_test_acc": 1.0}))
    (inputs / "runs" / "magnitude-0.9-0.json").write_text("not json")
    (inputs / "masks" / "snip-0.5-0.json").write_text("not json")
    (inputs / "masks" / "snip").mkdir()
    (inputs / "masks" / "snip" / "snip-0.json").write_text("not json")   # the old layout
    (inputs / "runs" / "snip-0.json").write_text("not json")
    pd.testing.assert_frame_equal(summary_frame(*load(inputs)), before)


def test_file_from_another_sparsity_is_rejected(inputs):
    (inputs / "runs" / "dpai-0.9-1.json").write_text(json.dumps(run_doc("dpai", 0.99, 1)))
    with pytest.raises(ValueError, match=r"runs/dpai-0\.9-1\.json: sparsity=0\.99"):
        load(inputs)


def test_mask_report_without_flops_is_named(inputs):
    doc = mask_report("snip", 0.9, 0)
    del doc["flops"]
    (inputs / "masks" / "snip-0.9-0.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=r"masks/snip-0\.9-0\.json: key 'flops' is missing"):
        load(inputs)


def tables(masks, runs, seeds=SEEDS):
    summary = summary_frame(masks, runs)
    about = dict(dataset="cifar10", model="resnet20", seeds=seeds)
    return (results_markdown(summary, **about), figure_markdown(summary, **about),
            metrics(summary, **about))


def test_without_dpai_p_values_are_na_and_trajectory_still_written(shared, tmp_path):
    masks, runs = load(shared, ["snip", "random_erk"])
    results, figure, doc = tables(masks, runs)
    acc = md_tables(results)[0][1]
    assert acc["snip"][3] == "n/a" and acc["random_erk"][3] == "n/a"
    assert not ["†" for row in md_tables(figure)[0][1].values() for cell in row if "†" in cell]
    assert list(doc["methods"]) == ["snip", "random_erk"]
    plot_dpai_trajectory(masks, tmp_path / "t.png")
    assert imread(tmp_path / "t.png")[..., :3].var() > 0


def test_single_seed_has_no_std_and_no_p_value(shared):
    results, figure, doc = tables(*load(shared, seeds=[0]), seeds=[0])
    acc = md_tables(results)[0][1]
    assert acc["dpai"][1] == "**91.00**" and acc["snip"][3] == "n/a"
    assert doc["methods"]["snip"]["s0_9"]["final_test_acc_std"] is None
    assert md_tables(figure)[0][1]["snip"][1] == "90.90"


def _no_temp_files(folder):
    return not [p for p in Path(folder).rglob("*") if p.name.startswith(".") or p.suffix == ".tmp"]


def test_stage_script_writes_every_output(out):
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUTS + SIDE_OUTPUTS)
    assert _no_temp_files(out)


def test_stage_script_fails_with_one_line_naming_the_file(inputs, capsys):
    (inputs / "masks" / "snip-0.99-2.json").unlink()
    with pytest.raises(SystemExit) as exit_:
        run_stage(inputs)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and "masks/snip-0.99-2.json" in err
    assert err.startswith("error: missing mask report")
    assert not (inputs / "reports").exists()


# -- DVC: the report stage's declared files and the plots template --------------------------
def _report_stage():
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["report"]


def test_dvc_yaml_declares_exactly_the_outputs():
    stage = _report_stage()
    declared = [next(iter(entry)) for key in ("outs", "metrics", "plots")
                for entry in stage[key]]
    assert sorted(declared) == sorted(f"reports/{name}" for name in OUTPUTS)
    assert stage["params"] == ["methods", "sparsities", "seeds", "data.dataset", "model.name"]
    assert all(next(iter(e.values()))["cache"] is False
               for key in ("outs", "metrics", "plots") for e in stage[key])


def test_dvc_plots_colour_by_method(shared, tmp_path):
    """`dvc plots show --json` in a throw-away DVC repo with this repo's template and plots
    entry: the rendered vega-lite spec colours by the method column."""
    if shutil.which("dvc") is None:
        pytest.skip("dvc is not installed")
    repo = tmp_path / "dvcrepo"
    shutil.copytree(shared / "reports", repo / "reports")
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    subprocess.run(["dvc", "init", "--no-scm", "-q"], cwd=repo, check=True, env=env,
                   capture_output=True)
    (repo / ".dvc" / "plots").mkdir()
    shutil.copy(REPO / ".dvc" / "plots" / "by_method.json", repo / ".dvc" / "plots")
    stage = {"cmd": "true", "plots": _report_stage()["plots"]}
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"report": stage}}))
    proc = subprocess.run(["dvc", "plots", "show", "--json"], cwd=repo, env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    (spec,) = [p["content"] for p in doc["data"]["reports/training_curves.csv"]]
    enc = spec["encoding"]
    assert enc["color"]["field"] == "method" and enc["strokeDash"]["field"] == "sparsity"
    assert enc["x"]["field"] == "epoch" and enc["y"]["field"] == "test_acc_mean"
    values = spec["data"]["values"]
    assert {v["method"] for v in values} == set(METHODS)
    assert len(values) == len(METHODS) * len(SPARSITIES) * 3
    assert not [a for a in json.dumps(spec).split('"') if a.startswith("<DVC_METRIC")]


def test_dead_mask_no_paths_renders(inputs, tmp_path):
    """A mask without any input-output path: 0 effective nodes (ln = -inf) and a log-path
    count written as null (strict JSON for -inf) render as '-inf' and '--', metrics as null."""
    for seed in SEEDS:
        doc = mask_report("random_erk", 0.99, seed)
        doc["topology"].update(effective_nodes=0, log_paths_exact=None)
        doc["flops"]["effective"] = 0
        (inputs / "masks" / f"{item('random_erk', 0.99, seed)}.json").write_text(json.dumps(doc))
    masks, runs = load(inputs)
    results, figure, doc = tables(masks, runs)
    grids = md_tables(figure)
    assert grids[1][1]["random_erk"][2] == "-inf" and grids[2][1]["random_erk"][2] == "--"
    assert grids[4][1]["random_erk"][2] == "0"
    assert md_tables(results)[3][1]["random_erk"][5] == ""
    dead = doc["methods"]["random_erk"]["s0_99"]
    assert dead["log_paths_exact"] is None and dead["effective_nodes"] == 0
    summary = summary_frame(masks, runs)
    plot_figure(summary, tmp_path / "f.png", dataset="cifar10", model="resnet20")
    assert imread(tmp_path / "f.png").shape[:2] == (552, 1800)


def test_figure_tells_twelve_methods_apart(monkeypatch, tmp_path):
    """Past matplotlib's ten colours (twelve methods with NTK-SAP and PX) every line still
    has its own colour and marker pair."""
    from dpai.report import figure
    methods = [f"m{i}" for i in range(12)]
    summary = pd.DataFrame({"method": methods, "sparsity": 0.99, "final_test_acc_mean": 50.0,
                            "final_test_acc_std": 1.0, "p_value_vs_dpai": float("nan"),
                            **{c: 1.0 for c in figure.CSV_COLUMNS
                               if c not in ("method", "sparsity", "final_test_acc_mean",
                                            "final_test_acc_std", "p_value_vs_dpai", "density",
                                            "best_in_column", "significant_vs_dpai")}})
    drawn = {}
    monkeypatch.setattr(figure, "save_figure", lambda fig, path: drawn.setdefault("fig", fig))
    figure.plot_figure(summary, tmp_path / "f.png", dataset="d", model="m")
    lines = drawn["fig"].axes[1].get_lines()
    styles = {(line.get_color(), line.get_marker()) for line in lines}
    assert len(lines) == 12 and len(styles) == 12
