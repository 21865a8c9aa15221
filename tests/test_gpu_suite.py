"""benchmarks/gpu_suite.py: the CPU rehearsal runs every part to "ok" and writes suite.json and summary.md, so the
GPU command cannot rot between GPU runs; a tight budget kills an overrunning part and skips the rest, on record."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from search_fixtures import REPO, env

pytestmark = pytest.mark.e2e
PARTS = ("fixture", "correctness", "ddp", "lut", "latency_prediction", "search_step", "train_throughput",
         "data_loading")


def run_suite(out: Path, *extra: str) -> tuple[subprocess.CompletedProcess[str], dict]:
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_suite.py"), "--device", "cpu",
                             "--quick", "--out", str(out), *extra], cwd=REPO, capture_output=True, text=True,
                            timeout=240, env=env())
    assert (out / "summary.md").is_file(), result.stderr[-3000:]
    return result, json.loads((out / "suite.json").read_text())


def test_quick_rehearsal_runs_every_part(tmp_path: Path) -> None:
    result, suite = run_suite(tmp_path)
    statuses = {name: part["status"] for name, part in suite["parts"].items()}
    assert statuses == dict.fromkeys(PARTS, "ok"), (statuses, result.stdout[-3000:])
    assert result.returncode == 0, result.stderr[-3000:]
    assert suite["environment"]["device"]["name"] and suite["environment"]["torch"]
    assert suite["wall_s"] <= suite["budget_s"], f"wall {suite['wall_s']} s over the budget {suite['budget_s']} s"
    for name, part in suite["parts"].items():
        failed = [check for check, value in part["checks"].items() if not value["passed"]]
        assert not failed, f"{name}: {failed}"
    sums = suite["parts"]["lut"]["figures"]["path_sums"]
    official = {name: round(value["official_titan_xp_ms"], 2) for name, value in sums.items()}
    assert official == {"densenas_a": 13.65, "densenas_b": 15.82, "densenas_c": 18.01}, official
    assert suite["parts"]["latency_prediction"]["figures"]["summary"]["archs"] == 4 + 3
    assert suite["parts"]["search_step"]["figures"]["fp32"]["paper_search_device_hours"] > 0
    assert suite["parts"]["train_throughput"]["figures"]["fp32"]["images_per_s"] > 0
    summary = (tmp_path / "summary.md").read_text()
    assert all(f"| {name} | ok |" in summary for name in PARTS), summary


def test_budget_kills_an_overrunning_part_and_skips_the_rest(tmp_path: Path) -> None:
    result, suite = run_suite(tmp_path, "--budget", "20", "--limit", "correctness=1")
    statuses = {name: part["status"] for name, part in suite["parts"].items()}
    assert list(statuses) == list(PARTS), statuses
    assert statuses["fixture"] == "ok" and statuses["correctness"] == "timed out", statuses
    later = [statuses[name] for name in PARTS[2:]]
    # A fast part may still finish inside the budget; what the budget must do is cut or skip the rest.
    assert set(later) <= {"ok", "timed out", "skipped"} and "skipped" in later, statuses
    assert all("budget" in part["reason"] for part in suite["parts"].values() if part["status"] == "skipped")
    assert suite["wall_s"] <= 20, f"wall {suite['wall_s']} s over the 20 s budget"
    assert result.returncode == 1
    assert "| correctness | timed out |" in (tmp_path / "summary.md").read_text()
