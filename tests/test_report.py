"""Report stage and paper table on synthetic mask/run files with the pipeline's exact schema."""
import copy
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

from dpai.report import (OUTPUTS, exp_show_records, latest_per_sparsity, load_masks, load_runs,
                         paper_group, read_params, results_frame, sparsity_label, write_paper,
                         write_report)

REPO = Path(__file__).resolve().parents[1]
METHODS = ["dpai", "snip", "random_erk"]
SEEDS = [0, 1, 2]
SPARSITY = 0.9
LAYERS = {"conv1": (16, 3), "layer1.0.conv1": (16, 16), "layer1.0.conv2": (16, 16), "fc": (10, 16)}
FINAL = {"dpai": [91.0, 91.5, 90.8], "snip": [90.9, 91.6, 90.5], "random_erk": [85.0, 86.0, 84.5]}
BEST = {"dpai": [91.2, 91.7, 91.0], "snip": [91.9, 92.3, 91.8], "random_erk": [85.5, 86.1, 85.0]}
COLLAPSED = {("random_erk", 1): ["layer1.0.conv2"]}  # (method, seed) -> collapsed layers
PARAMS = {"sparsity": SPARSITY, "methods": METHODS, "seeds": SEEDS,
          "data": {"dataset": "cifar10"}, "model": {"name": "resnet20"}}


def mask_report(method, seed=0, sparsity=SPARSITY):
    """A mask report as stages/mask.py writes it; counts vary with the method and the seed."""
    layers, topo_layers, kept_all, total_all = {}, {}, 0, 0
    collapsed = COLLAPSED.get((method, seed), [])
    for i, (name, (out_ch, in_ch)) in enumerate(LAYERS.items()):
        total = out_ch * in_ch * (1 if name == "fc" else 9)
        kept = total // (5 + i + METHODS.index(method)) + seed
        kept_all, total_all = kept_all + kept, total_all + total
        layers[name] = {"kept": kept, "total": total, "density": kept / total}
        alive = 0 if name in collapsed else out_ch - 2 - i - seed
        topo_layers[name] = {"kept": kept, "effective_params": kept - 3, "nodes": out_ch,
                             "effective_nodes": alive, "kernels": out_ch * in_ch,
                             "effective_kernels": alive * 2}
    info = {"method": method, "sparsity": sparsity, "seed": seed, "params": {},
            "density": kept_all / total_all, "seconds": 1.25 + METHODS.index(method) + seed}
    if method == "dpai":
        info["trajectory"] = {"step": [0, 10, 20], "objective": [5.0, 4.0, 3.5 - seed],
                              "log_paths": [40.0, 50.0, 60.0 + seed], "nodes": [70, 60, 55],
                              "kernels": [900, 800, 700], "params": [300, 310, 320]}
    topology = {"effective_params": sum(t["effective_params"] for t in topo_layers.values()),
                "effective_nodes": sum(t["effective_nodes"] for t in topo_layers.values()),
                "effective_kernels": sum(t["effective_kernels"] for t in topo_layers.values()),
                "log_paths_reference": 43.64, "log_paths_exact": 28.7412345 + seed,
                "collapsed_layers": collapsed, "layers": topo_layers, "seconds": 0.5}
    return {"density": kept_all / total_all, "sparsity": 1 - kept_all / total_all,
            "kept": kept_all, "total": total_all, "layers": layers, "info": info,
            "topology": topology}


def run_doc(method, seed, sparsity=SPARSITY):
    final = FINAL[method][SEEDS.index(seed)]
    epochs = [{"epoch": e, "lr": 0.1, "train_loss": 2.0 / e + seed * 0.01,
               "train_acc": 50.0 + 10 * e, "test_loss": 1.0 / e,
               "test_acc": final - (3 - e) * (1 + seed), "seconds": 2.0} for e in (1, 2, 3)]
    return {"method": method, "seed": seed, "sparsity": sparsity, "density": 1 - sparsity,
            "final_test_acc": final, "best_test_acc": BEST[method][SEEDS.index(seed)],
            "best_epoch": 3, "final_train_acc": 80.0, "train_seconds": 10.0 + seed,
            "epochs": epochs}


def write_inputs(root, methods=METHODS, seeds=SEEDS, params=PARAMS):
    """masks/{m}/{m}-{s}.json and runs/{m}-{s}.json, the layout of stages/mask.py and train.py."""
    for m in methods:
        (root / "masks" / m).mkdir(parents=True, exist_ok=True)
        (root / "runs").mkdir(exist_ok=True)
        for s in seeds:
            (root / "masks" / m / f"{m}-{s}.json").write_text(json.dumps(mask_report(m, s)))
            (root / "runs" / f"{m}-{s}.json").write_text(json.dumps(run_doc(m, s)))
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture
def inputs(tmp_path):
    write_inputs(tmp_path)
    return tmp_path


def build(root, methods=METHODS):
    return (load_masks(root, methods, SEEDS, SPARSITY),
            load_runs(root, methods, SEEDS, SPARSITY))


def report(root, methods=METHODS):
    masks, runs = build(root, methods)
    write_report(root / "reports", masks, runs, dataset="cifar10", model="resnet20",
                 sparsity=SPARSITY, seeds=SEEDS)
    return root / "reports"


# -- the results table ----------------------------------------------------------------------
def test_results_frame_numbers_and_welch_p(inputs):
    frame = results_frame(*build(inputs))
    assert list(frame.index) == METHODS
    for m in METHODS:
        assert frame.at[m, "final_test_acc_mean"] == pytest.approx(np.mean(FINAL[m]))
        assert frame.at[m, "final_test_acc_std"] == pytest.approx(np.std(FINAL[m], ddof=1))
        assert frame.at[m, "best_test_acc_mean"] == pytest.approx(np.mean(BEST[m]))
        assert frame.at[m, "best_test_acc_std"] == pytest.approx(np.std(BEST[m], ddof=1))
        reports = [mask_report(m, s) for s in SEEDS]      # mask numbers: mean over seeds
        assert frame.at[m, "density"] == pytest.approx(np.mean([r["density"] for r in reports]))
        for key in ("effective_nodes", "effective_kernels", "effective_params",
                    "log_paths_exact"):
            assert frame.at[m, key] == pytest.approx(np.mean([r["topology"][key]
                                                              for r in reports]))
        assert frame.at[m, "mask_seconds"] == pytest.approx(1.25 + METHODS.index(m) + 1)
        assert frame.at[m, "train_seconds"] == pytest.approx(11.0)
        if m != "dpai":
            expected = stats.ttest_ind(FINAL["dpai"], FINAL[m], equal_var=False).pvalue
            assert frame.at[m, "p_value_vs_dpai"] == pytest.approx(expected, rel=1e-12)
    assert np.isnan(frame.at["dpai", "p_value_vs_dpai"])
    assert frame["collapsed_layers"].tolist() == [0, 0, 1]  # random_erk, in seed 1 only
    assert frame["collapsed_seeds"].tolist() == [0, 0, 1]
    assert frame.at["snip", "p_value_vs_dpai"] > 0.05 > frame.at["random_erk", "p_value_vs_dpai"]


def test_markdown_csv_and_metrics(inputs):
    out = report(inputs)
    md = (out / "results.md").read_text().splitlines()
    assert md[0].startswith("Table: cifar10 / resnet20 at sparsity 0.9") and "[0, 1, 2]" in md[0]
    header, rows = md[2], [r for r in md[4:] if r.startswith("|")]
    assert "best epoch (test-selected, as in the reference)" in header
    assert [r.split("|")[1].strip() for r in rows] == METHODS
    cells = {r.split("|")[1].strip(): [c.strip() for c in r.split("|")[2:-1]] for r in rows}
    mean, std = np.mean(FINAL["dpai"]), np.std(FINAL["dpai"], ddof=1)
    assert cells["dpai"][0] == f"**{mean:.2f} ± {std:.2f}**"
    assert cells["dpai"][-1] == ""                      # no test of dpai against itself
    assert not cells["snip"][-1].endswith("*") and cells["random_erk"][-1].endswith(" *")
    assert cells["random_erk"][7] == "yes (1; 1/3 masks)" and cells["snip"][7] == "no"
    nodes = np.mean([mask_report("dpai", s)["topology"]["effective_nodes"] for s in SEEDS])
    assert cells["dpai"][3] == f"{nodes:.0f}"           # effective nodes, mean over seeds

    csv = pd.read_csv(out / "results.csv", index_col="method")
    assert list(csv.index) == METHODS
    for col in ["final_test_acc_mean", "final_test_acc_std", "best_test_acc_mean",
                "best_test_acc_std", "density", "effective_nodes", "effective_kernels",
                "effective_params", "log_paths_exact", "collapsed_layers", "mask_seconds",
                "train_seconds", "p_value_vs_dpai"]:
        assert col in csv.columns
    assert csv.at["snip", "final_test_acc_std"] == pytest.approx(np.std(FINAL["snip"], ddof=1),
                                                                  rel=1e-5)

    doc = json.loads((out / "metrics.json").read_text())
    assert (doc["dataset"], doc["model"], doc["sparsity"]) == ("cifar10", "resnet20", 0.9)
    assert list(doc["methods"]) == METHODS
    assert set(doc["methods"]["snip"]) == {
        "final_test_acc_mean", "final_test_acc_std", "best_test_acc_mean", "best_test_acc_std",
        "density", "effective_nodes", "log_paths_exact", "collapsed_layers"}
    assert doc["methods"]["dpai"]["log_paths_exact"] == 29.7412   # mean of 28.74, 29.74, 30.74
    assert doc["methods"]["random_erk"]["collapsed_layers"] == 1
    assert not any(c in key for key in doc["methods"] for c in ".@")


def test_latex_booktabs_bold_best_per_column_and_escaping(inputs):
    tex = (report(inputs) / "results.tex").read_text()
    assert all(rule in tex for rule in (r"\toprule", r"\midrule", r"\bottomrule"))
    rows = {line.split(" & ")[0]: line.split(" & ") for line in tex.splitlines()
            if " & " in line and r"\textbackslash" not in line and "method" not in line}
    assert set(rows) == {"dpai", "snip", r"random\_erk"}
    # final accuracy: dpai best; best-epoch accuracy: snip best
    assert rows["dpai"][1].startswith(r"\textbf{") and not rows["snip"][1].startswith(r"\textbf")
    assert rows["snip"][2].startswith(r"\textbf{") and not rows["dpai"][2].startswith(r"\textbf")
    assert r"$\pm$" in rows["dpai"][1]
    assert "_" not in tex.replace(r"\_", "")            # every underscore escaped
    assert "<" not in tex and r"p \textless{} 0.05" in tex


def test_plots_and_training_curves_written(inputs):
    out = report(inputs)
    for name in OUTPUTS:
        assert (out / name).stat().st_size > 0, name
        if name.endswith(".png"):
            assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    curves = pd.read_csv(out / "training_curves.csv")
    assert list(curves.columns) == ["method", "epoch", "test_acc_mean", "test_acc_std",
                                    "train_loss_mean"]
    assert list(curves["method"].unique()) == METHODS
    last = curves[(curves["method"] == "snip") & (curves["epoch"] == 1)].iloc[0]
    accs = [run_doc("snip", s)["epochs"][0]["test_acc"] for s in SEEDS]
    assert last["test_acc_mean"] == pytest.approx(np.mean(accs))
    assert last["test_acc_std"] == pytest.approx(np.std(accs, ddof=1))


def test_without_dpai_p_values_are_na_and_trajectory_still_written(inputs):
    out = report(inputs, methods=["snip", "random_erk"])
    rows = [r for r in (out / "results.md").read_text().splitlines()[4:] if r.startswith("|")]
    assert all(r.rstrip(" |").endswith("n/a") for r in rows)
    assert (out / "dpai_trajectory.png").stat().st_size > 0
    assert list(json.loads((out / "metrics.json").read_text())["methods"]) == ["snip", "random_erk"]


def test_single_seed_has_no_std_and_no_p_value(inputs):
    masks, runs = load_masks(inputs, METHODS, [0]), load_runs(inputs, METHODS, [0])
    write_report(inputs / "reports", masks, runs, dataset="cifar10", model="resnet20",
                 sparsity=SPARSITY, seeds=[0])
    rows = [r for r in (inputs / "reports" / "results.md").read_text().splitlines()[4:]
            if r.startswith("|")]
    assert "**91.00**" in rows[0] and "±" not in rows[0]
    assert rows[1].rstrip(" |").endswith("n/a") and rows[2].rstrip(" |").endswith("n/a")
    doc = json.loads((inputs / "reports" / "metrics.json").read_text())
    assert doc["methods"]["snip"]["final_test_acc_std"] is None


# -- inputs: exact files, loud failures ----------------------------------------------------
def test_missing_file_error_names_the_file(inputs):
    (inputs / "runs" / "snip-2.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"runs/snip-2\.json"):
        build(inputs)
    (inputs / "masks" / "dpai" / "dpai-1.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"masks/dpai/dpai-1\.json"):
        build(inputs)


def test_stale_extra_files_are_ignored(inputs):
    before = results_frame(*build(inputs))
    (inputs / "runs" / "snip-7.json").write_text(json.dumps({**run_doc("snip", 0), "seed": 7,
                                                             "final_test_acc": 1.0}))
    (inputs / "runs" / "magnitude-0.json").write_text("not json")
    (inputs / "masks" / "magnitude.json").write_text("not json")
    (inputs / "masks" / "snip" / "snip-5.json").write_text("not json")
    pd.testing.assert_frame_equal(results_frame(*build(inputs)), before)


def test_one_mask_report_shared_by_all_seeds(inputs):
    """The layout masks/{method}.json (no {seed} in the template) also works."""
    for m in METHODS:
        (inputs / "masks" / f"{m}.json").write_text(json.dumps(mask_report(m, 0)))
    masks = load_masks(inputs, METHODS, SEEDS, SPARSITY, template="masks/{method}.json")
    assert [len(r) for r in masks.values()] == [1, 1, 1]
    frame = results_frame(masks, load_runs(inputs, METHODS, SEEDS, SPARSITY))
    assert frame.at["snip", "effective_nodes"] == mask_report("snip", 0)["topology"][
        "effective_nodes"]
    assert frame.at["snip", "final_test_acc_mean"] == pytest.approx(np.mean(FINAL["snip"]))


def test_file_from_another_sparsity_is_rejected(inputs):
    (inputs / "runs" / "dpai-1.json").write_text(json.dumps(run_doc("dpai", 1, sparsity=0.99)))
    with pytest.raises(ValueError, match=r"runs/dpai-1\.json: sparsity=0\.99"):
        build(inputs)


@pytest.mark.parametrize("change, match", [
    (lambda p: p.pop("seeds"), "'seeds' is missing"),
    (lambda p: p.update(sparsity=1.5), "sparsity=1.5"),
    (lambda p: p.update(methods=["dpai", "dpai"]), "methods="),
    (lambda p: p["model"].pop("name"), "'model.name' is missing"),
])
def test_read_params_rejects_bad_values(change, match):
    params = copy.deepcopy(PARAMS)
    change(params)
    with pytest.raises(ValueError, match=match):
        read_params(params)


def test_bad_method_name_fails_before_anything_is_written(inputs):
    masks, runs = build(inputs)
    masks["a.b"], runs["a.b"] = masks["snip"], runs["snip"]
    with pytest.raises(ValueError, match="'a.b'"):
        write_report(inputs / "reports", masks, runs, dataset="cifar10", model="resnet20",
                     sparsity=SPARSITY, seeds=SEEDS)
    assert not (inputs / "reports").exists()


def _no_temp_files(folder):
    return not [p for p in Path(folder).rglob("*") if p.name.startswith(".") or p.suffix == ".tmp"]


def test_stage_script_runs_and_fails_with_one_line(inputs):
    (inputs / "runs" / "old-9.json").write_text("stale")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    cmd = [sys.executable, str(REPO / "stages" / "report.py")]
    ok = subprocess.run(cmd, cwd=inputs, env=env, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert sorted(p.name for p in (inputs / "reports").iterdir()) == sorted(OUTPUTS)
    assert _no_temp_files(inputs / "reports")

    (inputs / "masks" / "snip" / "snip-2.json").unlink()
    bad = subprocess.run(cmd, cwd=inputs, env=env, capture_output=True, text=True)
    assert bad.returncode != 0
    assert bad.stderr.strip().count("\n") == 0 and "masks/snip/snip-2.json" in bad.stderr


# -- the paper table across experiments ----------------------------------------------------
def entry(rev, name, stamp, sparsity, acc, dataset="cifar10", error=None):
    metrics = {"dataset": dataset, "model": "resnet20", "sparsity": sparsity, "num_seeds": 3,
               "methods": {m: {"final_test_acc_mean": a, "final_test_acc_std": 0.1 * (i + 1)}
                           for i, (m, a) in enumerate(zip(METHODS, acc))}}
    return {"rev": rev, "name": name, "error": error, "experiments": None,
            "data": {"rev": rev, "timestamp": stamp,
                     "params": {"params.yaml": {"data": {"sparsity": sparsity}}},
                     "metrics": {"reports/metrics.json": {"data": metrics}},
                     "deps": {}, "outs": {}}}


def exp_show_doc():
    """Workspace, a baseline and experiments: 0.99 run twice (the newer must win)."""
    base = entry("a" * 40, "main", "2025-01-01T10:00:00", 0.9, [90.0, 89.0, 85.0])
    queued = {"rev": "c" * 40, "name": "queued-one", "error": None,
              "data": {"rev": "c" * 40, "timestamp": None, "params": {}, "metrics": {}}}
    failed = entry("f" * 40, "broken", "2025-01-03T00:00:00", 0.99, [1, 1, 1],
                   error={"type": "ReproductionError"})
    base["experiments"] = [
        {"name": "newer-99", "revs": [entry("e" * 40, "newer-99", "2025-01-02T12:00:00", 0.99,
                                            [70.0, 72.0, 40.0])]},
        {"name": "older-99", "revs": [entry("d" * 40, "older-99", "2025-01-02T11:00:00", 0.99,
                                            [60.0, 50.0, 30.0])]},
        {"name": "mnist-9", "revs": [entry("b" * 40, "mnist-9", "2025-01-02T13:00:00", 0.9,
                                           [99.0, 98.0, 97.0], dataset="mnist")]},
        {"name": "queued-one", "revs": [queued]}, {"name": "broken", "revs": [failed]},
        {"name": "running-99", "executor": {"state": "running"},
         "revs": [entry("9" * 40, "running-99", "2025-01-04T00:00:00", 0.99, [5.0, 5.0, 5.0])]},
        {"name": "done-queued", "executor": {"state": "success"},
         "revs": [entry("7" * 40, "done-queued", "2024-12-01T00:00:00", 0.9684, [80, 79, 60])]}]
    workspace = entry("workspace", None, None, 0.9, [91.0, 88.0, 86.0])
    return [workspace, base]


def test_paper_parsing_keeps_newest_per_sparsity():
    records = exp_show_records(exp_show_doc())
    assert len(records) == 6 * len(METHODS)       # queued, running and failed entries skipped
    selected = paper_group(records, "cifar10", "resnet20")
    assert sorted(selected["sparsity"].unique()) == [0.9, 0.9684, 0.99]
    by = selected.set_index(["sparsity", "method"])["final_test_acc_mean"]
    assert by[(0.9, "dpai")] == 91.0                    # the workspace beats the older commit
    assert by[(0.99, "dpai")] == 70.0 and by[(0.99, "random_erk")] == 40.0  # newer-99 as a whole
    assert set(selected["experiment"]) == {"workspace", "newer-99", "done-queued"}
    with pytest.raises(ValueError, match=r"available .*\('mnist', 'resnet20'\)"):
        paper_group(records, "cifar100", "vgg19_bn")
    with pytest.raises(ValueError, match="no experiment"):
        paper_group(exp_show_records([]), "cifar10", "resnet20")


def test_workspace_copy_of_an_experiment_credits_the_experiment():
    doc = exp_show_doc()
    doc[0] = entry("workspace", None, None, 0.99, [70.0, 72.0, 40.0])  # = newer-99, applied
    selected = paper_group(exp_show_records(doc), "cifar10", "resnet20")
    assert set(selected["experiment"]) == {"main", "newer-99", "done-queued"}


def test_equal_timestamps_keep_the_entry_dvc_lists_first():
    doc = exp_show_doc()
    for exp in doc[1]["experiments"][:2]:
        exp["revs"][0]["data"]["timestamp"] = "2025-01-02T12:00:00"
    selected = latest_per_sparsity(exp_show_records(doc))
    assert set(selected[selected["sparsity"] == 0.99]["experiment"]) == {"newer-99"}


def test_sparsity_labels():
    assert [sparsity_label(s) for s in (0.6838, 0.9, 0.9684, 0.99)] == \
        ["68.38 %", "90 %", "96.84 %", "99 %"]


def test_paper_outputs(tmp_path):
    selected = paper_group(exp_show_records(exp_show_doc()), "cifar10", "resnet20")
    paths = write_paper(selected, tmp_path / "paper")
    assert [p.name for p in paths] == ["cifar10_resnet20.md", "cifar10_resnet20.csv",
                                       "cifar10_resnet20.tex",
                                       "cifar10_resnet20_accuracy_vs_sparsity.png"]
    md = paths[0].read_text().splitlines()
    assert md[2] == "| method | 90 % | 96.84 % | 99 % |"
    assert md[4] == "| dpai | **91.00 ± 0.10** | **80.00 ± 0.10** | 70.00 ± 0.10 |"
    assert md[5] == "| snip | 88.00 ± 0.20 | 79.00 ± 0.20 | **72.00 ± 0.20** |"
    tex = paths[2].read_text()
    assert r"\textbf{72.00 $\pm$ 0.20}" in tex and r"\textbf{91.00 $\pm$ 0.10}" in tex
    assert r"random\_erk & 86.00 $\pm$ 0.30 & 60.00 $\pm$ 0.30 & 40.00 $\pm$ 0.30 \\" in tex
    csv = pd.read_csv(paths[1])
    assert len(csv) == 9 and set(csv["experiment"]) == {"workspace", "newer-99", "done-queued"}
    assert paths[3].stat().st_size > 0
    assert _no_temp_files(tmp_path / "paper")


def test_paper_method_missing_at_one_sparsity(tmp_path):
    doc = exp_show_doc()
    del doc[1]["experiments"][0]["revs"][0]["data"]["metrics"]["reports/metrics.json"][
        "data"]["methods"]["snip"]
    paths = write_paper(paper_group(exp_show_records(doc), "cifar10", "resnet20"), tmp_path)
    assert "| snip | 88.00 ± 0.20 | 79.00 ± 0.20 | – |" in paths[0].read_text()
    assert r"snip & 88.00 $\pm$ 0.20 & 79.00 $\pm$ 0.20 & -- \\" in paths[2].read_text()


def _paper_script():
    spec = importlib.util.spec_from_file_location("paper_table", REPO / "stages" / "paper_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_paper_table_script_from_json(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(PARAMS))
    (tmp_path / "exps.json").write_text(json.dumps(exp_show_doc()))
    script = _paper_script()
    script.main(["--from-json", "exps.json"])            # group from params.yaml
    assert (tmp_path / "reports" / "paper" / "cifar10_resnet20.md").is_file()
    script.main(["--from-json", "exps.json", "--dataset", "mnist", "--model", "resnet20",
                 "--out", "p"])
    assert "99.00" in (tmp_path / "p" / "mnist_resnet20.md").read_text()
    (tmp_path / "empty.json").write_text("[]")
    with pytest.raises(SystemExit):
        script.main(["--from-json", "empty.json"])
    assert "no experiment" in capsys.readouterr().err
