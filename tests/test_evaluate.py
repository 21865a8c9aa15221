"""`densenas evaluate`: accuracy of best.pt, mult-adds at 224 (paper convention), measured latency with its protocol,
the LUT-predicted latency of DenseNAS models, and refusal of a checkpoint made for another network."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from train_fixtures import prepare_small, quick_overrides, quick_params, set_args, write_tiny_net

from densenas.errors import DensenasError
from densenas.evaluate import load_trained, predicted_latency, titanxp_latency_ms
from densenas.lut import write_lut
from densenas.official_lut import official_lut_document
from densenas.registry import get_entry, published_archs
from densenas.train import topk_correct
from densenas.train.stage import run_training


@pytest.fixture(scope="module")
def small_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepare_small(tmp_path_factory.mktemp("prepared") / "fashion_mnist")


@pytest.fixture(scope="module")
def official_lut(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The official TITAN-Xp MBV2 table in our LUT format (224 px, batch 32, 100 classes)."""
    path = tmp_path_factory.mktemp("lut") / "official.json"
    write_lut(path, official_lut_document("lat_list_densenas_mbv2_xp32", "mbv2")[0])
    return path


def test_topk_correct_counts_hits_within_k() -> None:
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.5, 0.2, 0.3], [0.0, 0.1, 0.9]])
    labels = torch.tensor([1, 2, 0])
    assert topk_correct(logits, labels, (1, 2, 5)).tolist() == [1, 2, 3]  # k above the class count: every label


@pytest.mark.parametrize("model", ["densenas_a", "densenas_b", "densenas_c"])
def test_lut_prediction_matches_the_official_table_sum(model: str, official_lut: Path) -> None:
    """The LUT merges the per-layer values of a node's stacked layers (one signature), so the sum may differ from
    the raw official-table sum by the spread of those values: it must stay within the skip-placement range."""
    predicted = predicted_latency(model, official_lut)
    reference = published_archs()["models"][model]["official_lut_path_sum_ms"]
    low, high = reference["range_over_skip_positions"]
    assert low - 0.01 <= predicted["latency_ms"] <= high + 0.01, f"{predicted['latency_ms']} not in [{low}, {high}]"
    assert predicted["latency_ms"] == pytest.approx(reference["space_layer_counts"], abs=0.02)
    assert predicted["batch"] == 32 and predicted["input_size"] == 224 and predicted["unit"] == "ms"


def test_lut_prediction_needs_a_densenas_model(official_lut: Path) -> None:
    with pytest.raises(DensenasError, match="not a DenseNAS-family model"):
        predicted_latency("mobilenet_v2", official_lut)


def test_checkpoint_of_another_network_is_refused(small_data: Path, tmp_path: Path) -> None:
    net_config = write_tiny_net(tmp_path)
    run_training(str(net_config), quick_params(epochs=1), name="tiny", data_dir=small_data, out_dir=tmp_path / "tiny",
                 device="cpu")
    _, payload = load_trained(str(net_config), tmp_path / "tiny" / "best.pt", num_classes=10)
    assert payload["epoch"] == 1
    with pytest.raises(DensenasError, match="arch="):
        load_trained("densenas_c", tmp_path / "tiny" / "best.pt", num_classes=10)


@pytest.mark.e2e
def test_evaluate_densenas_c(run_cli, small_data: Path, official_lut: Path, tmp_path: Path) -> None:
    overrides = set_args(quick_overrides(epochs=1, batch_size=50))
    trained = run_cli(*overrides, "train", "--model", "densenas_c", "--data", str(small_data), "--out",
                      str(tmp_path / "train"), "--device", "cpu")
    assert trained.returncode == 0, trained.stderr[-3000:]
    out = tmp_path / "eval" / "metrics.json"
    result = run_cli(*overrides, "evaluate", "--model", "densenas_c", "--checkpoint", str(tmp_path / "train/best.pt"),
                     "--data", str(small_data), "--lut", str(official_lut), "--out", str(out), "--device", "cpu")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads(out.read_text())
    assert metrics["mult_adds_m_224"] == pytest.approx(360.81, abs=0.005), "paper: 360.81 M mult-adds at 224"
    assert metrics["params_m_224"] == pytest.approx(6.134, abs=0.0005)
    assert metrics["input_size"] == 32 and metrics["num_classes"] == 10 and metrics["images"] == 200
    best = json.loads((tmp_path / "train" / "metrics.json").read_text())["best"]
    assert (metrics["top1"], metrics["top5"]) == (best["top1"], best["top5"]), "evaluate must reproduce best.pt's val"
    latency = metrics["latency"]
    assert latency["mean_ms"] > 0
    protocol = latency["protocol"]
    assert (protocol["device"], protocol["batch"], protocol["input_size"], protocol["dtype"]) == (
        "cpu", 1, 224, "float32"), f"CPU protocol of SPEC §10.1 expected, got {protocol}"
    assert protocol["statistic"] == "mean" and protocol["repeats"] == 3 and protocol["warmup"] == 1
    assert metrics["lut_latency"]["latency_ms"] == pytest.approx(18.01, abs=0.02)
    untimed_out = tmp_path / "eval" / "untimed.json"
    untimed = run_cli(*overrides, "evaluate", "--model", "densenas_c", "--checkpoint", str(tmp_path / "train/best.pt"),
                      "--data", str(small_data), "--no-latency", "--out", str(untimed_out), "--device", "cpu")
    assert untimed.returncode == 0, untimed.stderr[-3000:]
    record = json.loads(untimed_out.read_text())
    assert record["latency"] is None and "latency not timed" in untimed.stderr, "the pipeline's latency job times it"
    assert (record["top1"], record["mult_adds_m_224"]) == (metrics["top1"], metrics["mult_adds_m_224"])


@pytest.mark.parametrize(("model", "expected_ms"), [("densenas_a", 13.646), ("densenas_b", 15.817),
                                                    ("densenas_c", 18.012)])
def test_titanxp_latency_is_the_official_path_sum(model: str, expected_ms: float) -> None:
    value = titanxp_latency_ms(model)
    assert value is not None and abs(value - expected_ms) <= 0.001, f"{model}: {value} ms, expected {expected_ms}"


def test_titanxp_latency_of_a_net_config_file_and_of_other_networks(tmp_path: Path) -> None:
    config = get_entry("densenas_c").net_config
    path = tmp_path / "c.json"
    path.write_text(json.dumps({**config.to_dict(),
                                "node_path": published_archs()["models"]["densenas_c"]["node_path"]}))
    assert titanxp_latency_ms(str(path)) == pytest.approx(titanxp_latency_ms("densenas_c"), abs=1e-12)
    assert titanxp_latency_ms("mobilenet_v2") is None and titanxp_latency_ms("resnet_space_issue19") is None
