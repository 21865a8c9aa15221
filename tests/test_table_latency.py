"""`densenas latency`: every network of a table timed in one job, in rounds; a missing net_config is named."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from densenas.config import load_params
from densenas.report import table_models
from tests.train_fixtures import REPO, TINY_NET, set_args

OVERRIDES = {"report": {"mbv2_published": ["densenas_a"], "mbv2_baselines": ["mobilenet_v2"]},
             "evaluate": {"latency_warmup": 1, "latency_repeats": 2, "latency_rounds": 2},
             "tracking": {"enabled": False}}


def _searched_net_configs(results: Path) -> list[str]:
    """TINY_NET (1000 classes) as every searched and random-search network of the mbv2 table."""
    models = table_models("mbv2", load_params(REPO / "params.yaml", overrides=OVERRIDES))
    for model in models:
        if model.startswith("mbv2-"):
            path = results / "search" / "mbv2" / model.removeprefix("mbv2-") / "net_config.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({**TINY_NET, "num_classes": 1000}))
    return models


def test_every_table_model_is_timed_in_each_round(run_cli, tmp_path: Path) -> None:
    models = _searched_net_configs(tmp_path / "results")
    result = run_cli(*set_args(OVERRIDES), "latency", "--space", "mbv2", "--results", str(tmp_path / "results"))
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((tmp_path / "results" / "latency" / "mbv2.json").read_text())
    assert list(record["models"]) == models
    for model, timed in record["models"].items():
        assert len(timed["round_means_ms"]) == 2 and min(timed["round_means_ms"]) > 0, model
        assert timed["mean_ms"] == pytest.approx(statistics.fmean(timed["round_means_ms"]))
    protocol = record["protocol"]
    assert (protocol["rounds"], protocol["batch"], protocol["input_size"], protocol["num_classes"]) == (2, 1, 224, 1000)
    assert (protocol["warmup"], protocol["repeats"], protocol["threads"]) == (1, 2, 1)


def test_a_missing_net_config_is_named(run_cli, tmp_path: Path) -> None:
    _searched_net_configs(tmp_path / "results")
    missing = tmp_path / "results" / "search" / "mbv2" / "lat_b" / "net_config.json"
    missing.unlink()
    result = run_cli(*set_args(OVERRIDES), "latency", "--space", "mbv2", "--results", str(tmp_path / "results"))
    assert result.returncode != 0 and "lat_b/net_config.json" in result.stderr, result.stderr[-2000:]
    assert not (tmp_path / "results" / "latency" / "mbv2.json").exists()
