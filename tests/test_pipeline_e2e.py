"""The whole pipeline at the smoke size through Snakemake: tables, MLflow runs, rerun scoping, DVC round trip.

Runs in a clone of the committed repository (so it tests what CI and users get), with the `smoke` preset written out
as its params.yaml.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import BIN, REPO, workflow_env

from densenas.config import load_params
from densenas.registry import list_models
from densenas.report import table_models

ZOO = set(list_models())
pytestmark = pytest.mark.e2e

SMOKE = load_params(REPO / "params.yaml", preset="smoke")
RETRAINED = len(table_models("mbv2", SMOKE)) + len(table_models("resnet", SMOKE))  # 11: one baseline per table
STAGE_RUNS = {  # MLflow runs expected per stage for `all` with the smoke preset's variants and report lists
    "prepare": 1, "lut": 1, "search": 2 + 5, "derive": 5, "random_arch": 1, "train": RETRAINED,
    "evaluate": RETRAINED, "latency": 2, "report_table": 2, "report_figures": 1,
}
# The DVC round trip: the stages behind one searched model's evaluation, every kind of computing stage (prepare,
# lut, warm-up, search, derive, train, evaluate). The table stages' deps in dvc.yaml are the default report lists
# (DVC cannot build a deps list from params), which the smoke preset shortens.
DVC_TARGET = ("evaluate_mbv2_searched@lat_c", "results/eval/mbv2-lat_c/metrics.json")


def _run(args: list[str], cwd: Path, timeout: float = 1800) -> str:
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=workflow_env())
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result.stdout + result.stderr


def _set_params(work: Path, **changes: object) -> None:
    path = work / "params.yaml"
    raw = yaml.safe_load(path.read_text())
    for dotted, value in changes.items():
        node = raw
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = value
    path.write_text(yaml.safe_dump(raw, sort_keys=False))


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A clone of the repository with the smoke preset, after `snakemake --cores 2 all`; removed after the module
    (its checkpoints, DVC cache and remote take ~11 GB, which CI's disk must not keep for the rest of the suite)."""
    root = tmp_path_factory.mktemp("pipeline")
    work = root / "work"
    _run(["git", "clone", "-q", str(REPO), str(work)], cwd=root)
    # the smoke preset written out as params.yaml, as the README says to do for DVC (it reads params.yaml only)
    resolved = subprocess.run([str(BIN / "densenas"), "--preset", "smoke", "params"], cwd=work, capture_output=True,
                              text=True, check=True)
    (work / "params.yaml").write_text(resolved.stdout)
    _run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "smoke preset"], cwd=work)
    _run([str(BIN / "dvc"), "remote", "add", "-f", "-d", "local", str(root / "remote")], cwd=work)
    _run([str(BIN / "snakemake"), "--cores", "2", "all"], cwd=work)
    yield work
    shutil.rmtree(root, ignore_errors=True)


def test_tables_have_every_paper_row_and_measured_columns(work: Path) -> None:
    paper = pd.read_csv(REPO / "densenas/resources/paper/paper_tables.csv")
    table = pd.read_csv(work / "reports/table_mbv2.csv")
    paper_rows = table[~table["model"].str.startswith("(this run)")]
    assert list(paper_rows["model"]) == list(paper["model"])
    for letter, expected_ms in zip("ABC", (13.646, 15.817, 18.012), strict=True):
        row = table[table["model"] == f"DenseNAS-{letter}"].iloc[0]
        assert abs(row["lut_titanxp_ms"] - expected_ms) <= 0.001, f"DenseNAS-{letter}: {row['lut_titanxp_ms']}"
        below = table.iloc[table.index[table["model"] == f"DenseNAS-{letter}"][0] + 1]
        assert below["this_run_model"] == f"mbv2-lat_{letter.lower()}" and below["compared_with"] == row["model"]
        assert below["diff_lut_titanxp_ms"] == pytest.approx(below["lut_titanxp_ms"] - row["paper_gpu_latency_ms"],
                                                             abs=2e-3)
    measured = ["top1", "top5", "mult_adds_m_224", "params_m_224", "latency_ms", "dataset", "input_size"]
    for model in ("DenseNAS-A", "DenseNAS-B", "DenseNAS-C", "1.0-MobileNetV2", "Random Search"):
        row = table[table["model"] == model].iloc[0]
        assert row[measured].notna().all(), f"{model}: missing measured columns {row[measured].to_dict()}"
    c = table[table["model"] == "DenseNAS-C"].iloc[0]
    assert c["paper_top1"] == 75.3 and abs(c["mult_adds_m_224"] - 360.808) < 1e-3
    searched = table[table["this_run_model"].fillna("").str.startswith("mbv2-lat_")]
    assert len(searched) == 3 and searched["search_hours"].notna().all()
    assert (searched["search_device_hours"] == searched["search_hours"] * searched["search_world_size"]).all()
    assert (searched["search_lut_source"] == "measured").all() and (searched["retrain_epoch"] == "last").all()
    assert searched["lut_titanxp_ms"].notna().all() and searched["search_device"].str.startswith("1 x cpu").all()
    assert searched["lut_latency_ms"].notna().all() and (searched["lut_input_size"] == 32).all()
    resnet = pd.read_csv(work / "reports/table_resnet.csv")
    r1 = resnet[resnet["model"] == "DenseNAS-R1"].iloc[0]
    assert r1["this_run_model"] == "resnet-flops_r1" and pd.notna(r1["top1"])
    assert r1["diff_flops_g"] == pytest.approx(r1["flops_g_224"] - r1["paper_flops_g"], abs=2e-3)
    for figure in ("accuracy_vs_latency", "beta_evolution", "training_curves"):
        assert (work / f"reports/figures/{figure}.png").stat().st_size > 10_000
    assert len(pd.read_csv(work / "reports/table_latency.csv")) == 3 + 3


def test_mlflow_holds_one_run_per_stage_execution(work: Path) -> None:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{work / 'mlflow.db'}")
    runs = [run for exp in client.search_experiments() for run in client.search_runs([exp.experiment_id])]
    counts: dict[str, int] = {}
    for run in runs:
        counts[run.data.tags["stage"]] = counts.get(run.data.tags["stage"], 0) + 1
    for stage, expected in STAGE_RUNS.items():
        assert counts.get(stage) == expected, f"{stage}: expected {expected} runs, got {counts.get(stage)}"
    train = next(r for r in runs if r.data.tags["stage"] == "train" and r.data.tags.get("model") == "densenas_c")
    assert {"best.top1", "last.top1"} <= set(train.data.metrics)
    assert train.data.tags["params_hash"] and train.data.tags["git_commit"] != "unknown"
    assert {"stage", "model", "params_hash", "data_manifest_hash"} <= set(train.data.tags)
    derived = {r.info.run_id: r.data.tags["model"] for r in runs
               if r.data.tags["stage"] == "train" and r.data.tags["model"] not in ZOO}
    models = [m for exp in client.search_experiments() for m in client.search_logged_models([exp.experiment_id])]
    logged = sorted(derived[m.source_run_id] for m in models if m.source_run_id in derived)
    assert logged == sorted(derived.values()) and len(logged) == 5 + 1, "derived nets logged as MLflow models"


def test_html_report_assembles_tables_figures_and_histories(work: Path) -> None:
    _run([str(BIN / "snakemake"), "--report", "reports/report.html", "all"], cwd=work)
    html = (work / "reports/report.html").read_text()
    for name in ("table_mbv2.csv", "table_resnet.csv", "accuracy_vs_latency.png", "history.csv"):
        assert name in html, f"{name} missing from the HTML report"


def test_a_report_only_change_reruns_only_the_report(work: Path) -> None:
    original = (work / "params.yaml").read_text()
    try:
        _set_params(work, **{"report.decimals": 4})
        out = _run([str(BIN / "snakemake"), "-n", "--quiet", "rules", "all"], cwd=work)
    finally:
        (work / "params.yaml").write_text(original)
    planned = {line.split()[0] for line in out.splitlines() if line and line.split()[0].isidentifier()}
    assert planned & {"train", "search", "evaluate", "prepare", "lut"} == set(), out
    assert {"table_mbv2", "table_resnet", "figures"} <= planned, out


def test_dvc_pull_on_a_fresh_clone_leaves_nothing_to_do(work: Path, tmp_path: Path) -> None:
    stage, output = DVC_TARGET
    _run([str(BIN / "dvc"), "commit", "-f", "-q", "--with-deps", stage], cwd=work)
    _run([str(BIN / "dvc"), "push", "-q", "--with-deps", stage], cwd=work)
    _run(["git", "add", "dvc.lock", ".dvc/config"], cwd=work)
    _run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "results"], cwd=work)
    fresh = tmp_path / "fresh"
    _run(["git", "clone", "-q", str(work), str(fresh)], cwd=tmp_path)
    _run([str(BIN / "dvc"), "pull", "-q", "--with-deps", stage], cwd=fresh)
    assert (fresh / "results/search/mbv2/warmup/checkpoint.pt").is_file(), "the shared warm-up came back"
    _run([str(BIN / "snakemake"), "--touch", "--cores", "1", output], cwd=fresh)
    out = _run([str(BIN / "snakemake"), "-n", output], cwd=fresh)
    assert "Nothing to be done" in out, out[-3000:]
