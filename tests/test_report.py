"""`densenas report table` from result files: searched rows below the paper rows they aim at, the compared
quantities as paper | ours | ours - paper, search cost as device-hours with device and world size, the LUT
source and the retrained epoch, the measured latency from the table's latency job; the ResNet table in the paper's
G FLOPs."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from densenas.config import load_params
from densenas.errors import DensenasError
from densenas.report import ResultPaths, build_table, paper_table, table_models

REPO = Path(__file__).resolve().parents[1]


def _write(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))


def _results(root: Path, space: str, params) -> None:
    """Eval/train metrics for every table model, search metrics for every variant, the latency job's record; values
    derived from the name, so each row's numbers are its own."""
    models = table_models(space, params)
    _write(root / "latency" / f"{space}.json", {
        "models": {model: {"mean_ms": 10.0 + index, "round_spread_pct": 1.0} for index, model in enumerate(models)},
        "protocol": {"batch": 1, "device_name": "cpu"}})
    for index, model in enumerate(models):
        _write(root / "eval" / model / "metrics.json", {
            "top1": 70.0 + index, "top5": 90.0, "mult_adds_m_224": 300.0 + index, "params_m_224": 4.0 + index / 10,
            "latency": None,
            "lut_titanxp_ms": 15.0 + index if space == "mbv2" else None, "dataset": "fashion_mnist",
            "input_size": 32})
        _write(root / "train" / model / "metrics.json", {"last": {"top1": 69.0}, "epochs": 3, "device": "cpu"})
    for index, variant in enumerate(sorted(params.search.spaces[space].variants)):
        _write(root / "search" / space / variant / "metrics.json", {
            "search_hours": 0.5 + index, "device_hours": 2 * (0.5 + index), "device": "2 x NVIDIA H200",
            "world_size": 2, "lut_source": "official" if space == "mbv2" else None,
            "retrain_epochs": {"last": 3, "best_supernet_val": 1 + index}})


@pytest.fixture
def params():
    return load_params(REPO / "params.yaml", overrides={"search": {"retrain_epoch": "best_supernet_val"}})


def test_mbv2_searched_rows_sit_below_their_paper_rows_with_differences(tmp_path: Path, params) -> None:
    _results(tmp_path, "mbv2", params)
    table = build_table("mbv2", table_models("mbv2", params), ResultPaths(tmp_path), params)
    names = list(table["model"])
    for letter in "ABC":
        below = names.index(f"DenseNAS-{letter}") + 1
        assert names[below] == f"(this run) mbv2-lat_{letter.lower()}", names
    row = table.set_index("model").loc["(this run) mbv2-lat_b"]
    paper = paper_table("mbv2").set_index("model").loc["DenseNAS-B"]
    assert row["compared_with"] == "DenseNAS-B" and row["paper_flops_m"] == paper["flops_m"]
    assert row["diff_mult_adds_m"] == pytest.approx(row["mult_adds_m_224"] - paper["flops_m"])
    assert row["diff_lut_titanxp_ms"] == pytest.approx(row["lut_titanxp_ms"] - paper["gpu_latency_ms"])
    assert row["diff_top1"] == pytest.approx(row["top1"] - paper["top1"])
    assert row["search_device_hours"] == pytest.approx(2 * row["search_hours"]) and row["search_world_size"] == 2
    assert row["search_device"] == "2 x NVIDIA H200" and row["search_lut_source"] == "official"
    assert (row["retrain_epoch"], row["retrain_epoch_number"]) == ("best_supernet_val", 2)
    published = table.set_index("model").loc["DenseNAS-B"]
    assert published["this_run_model"] == "densenas_b" and pd.notna(published["diff_top1"])
    columns = list(table.columns)
    for triple in (("paper_gpu_latency_ms", "lut_titanxp_ms", "diff_lut_titanxp_ms"),
                   ("paper_search_gpu_hours", "search_device_hours", "diff_search_gpu_hours")):
        start = columns.index(triple[0])
        assert tuple(columns[start:start + 3]) == triple, columns
    assert table.set_index("model").loc["Random Search"]["this_run_model"] == "mbv2-random"
    assert not any(name.startswith("(this run)") for name in names[names.index("DenseNAS-C") + 2:]), \
        "every searched variant has a paper row"


def test_resnet_table_in_g_flops_fills_the_paper_rows(tmp_path: Path, params) -> None:
    _results(tmp_path, "resnet", params)
    table = build_table("resnet", table_models("resnet", params), ResultPaths(tmp_path), params)
    r1 = table.set_index("model").loc["DenseNAS-R1"]
    assert r1["this_run_model"] == "resnet-flops_r1"
    assert r1["flops_g_224"] == pytest.approx(r1["mult_adds_m_224"] / 1000, abs=1e-3)
    assert r1["diff_flops_g"] == pytest.approx(r1["flops_g_224"] - r1["paper_flops_g"], abs=1e-3)
    assert "diff_lut_titanxp_ms" not in table and "diff_search_gpu_hours" not in table


def test_measured_latency_comes_from_the_latency_job(tmp_path: Path, params) -> None:
    """Each row's measured latency is the latency job's figure for that model; a record without one of the
    table's models is refused, naming the file and the model."""
    _results(tmp_path, "mbv2", params)
    models = table_models("mbv2", params)
    table = build_table("mbv2", models, ResultPaths(tmp_path), params).set_index("this_run_model")
    for index, model in enumerate(models):
        assert table.loc[model, "latency_ms"] == pytest.approx(10.0 + index), model
        assert table.loc[model, "latency_device"] == "cpu" and table.loc[model, "latency_batch"] == 1
    record = json.loads((tmp_path / "latency" / "mbv2.json").read_text())
    del record["models"]["mbv2-lat_b"]
    _write(tmp_path / "latency" / "mbv2.json", record)
    with pytest.raises(DensenasError, match=r"latency/mbv2\.json: no latency of model 'mbv2-lat_b'"):
        build_table("mbv2", models, ResultPaths(tmp_path), params)
