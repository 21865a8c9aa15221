"""benchmarks/search_quality.py --quick end to end: the λ sweep, the matched random architecture and DenseNAS-A
are searched, retrained and evaluated; the CSV, summary and figure are written, and a rerun reuses every stage."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from densenas.config import load_params, parse_set_items

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.e2e


def _run(work: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "benchmarks/search_quality.py", "--quick", "--work", str(work), "--reports",
               str(work / "reports")]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_quick_search_quality_writes_its_evidence(tmp_path: Path) -> None:
    work = tmp_path / "sq"
    first = _run(work)
    assert "done: search-s1-lam0" in first.stderr and "done: eval-densenas_a" in first.stderr
    frame = pd.read_csv(work / "reports" / "search_quality.csv")
    assert sorted(frame.kind.unique()) == ["published", "random", "searched"]
    searched = frame[frame.kind == "searched"]
    assert sorted(searched["lambda"]) == [0.0, 1.0]
    for column in ("lut_latency_ms", "latency_ms", "mult_adds_m_224", "top1"):
        assert frame[column].notna().all(), column
    summary = json.loads((work / "reports" / "search_quality.json").read_text())
    rho = summary["spearman_lambda_vs_lut_latency"]["1"]
    assert rho is None or -1.0 <= rho <= 1.0
    (searched_name, random_name), = summary["searched_minus_random_top1"]["pairs"]
    top1 = frame.set_index("name")["top1"]
    assert summary["searched_minus_random_top1"]["mean"] == pytest.approx(top1[searched_name] - top1[random_name])
    random_row = frame[frame.kind == "random"].iloc[0]
    target = frame.set_index("name").loc[searched_name, "lut_latency_ms"]
    assert abs(random_row.lut_latency_ms - target) <= 0.05 * target, "random arch matched in chained LUT latency"
    assert (work / "reports" / "figures" / "search_quality.png").read_bytes()[:4] == b"\x89PNG"
    assert (work / "s1" / "lam0" / "net_config.json").exists()
    assert not list(work.glob("s1/*/checkpoint.pt")), "search checkpoints are deleted once every search is derived"

    second = _run(work)
    assert "done:" not in second.stderr, "a rerun reuses every finished stage"
    pd.testing.assert_frame_equal(pd.read_csv(work / "reports" / "search_quality.csv")[["name", "top1"]],
                                  frame[["name", "top1"]])


def _load_benchmark(monkeypatch: pytest.MonkeyPatch) -> Any:
    spec = importlib.util.spec_from_file_location("search_quality", REPO / "benchmarks" / "search_quality.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "search_quality", module)  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("lambda_", [0.0, 0.3, 1.0, 3.0, 10.0, 0.15, 1e-5, 2.5e12])
def test_every_lambda_gets_a_variant_the_params_accept(lambda_: float, monkeypatch: pytest.MonkeyPatch) -> None:
    module = _load_benchmark(monkeypatch)
    name, definition = module.variant_set(lambda_)
    params = load_params(REPO / "params.yaml", overrides=parse_set_items([definition]))  # the CLI's --set path
    assert params.search.spaces[module.SPACE].variants[name].lambda_ == lambda_


@pytest.mark.parametrize(("mean", "sem", "pairs", "word"), [
    (1.0, 0.4, 5, "beats"), (1.0, 0.6, 5, "not distinguishable"), (-1.0, 0.4, 5, "worse"),
    (0.03, 0.19, 5, "not distinguishable"), (2.0, None, 1, "not distinguishable")])
def test_verdict_weighs_the_mean_against_its_standard_error(mean: float, sem: float | None, pairs: int,
                                                            word: str, monkeypatch: pytest.MonkeyPatch) -> None:
    assert word in _load_benchmark(monkeypatch).verdict(mean, sem, pairs)
