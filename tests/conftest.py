"""Shared fixtures: the repository root and a runner for the ``densenas`` CLI in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def workflow_env() -> dict[str, str]:
    """Environment for snakemake/dvc runs in a clone: this venv's tools first on PATH (the rules call `densenas`),
    and no outside MLflow URI, so each clone logs to its own sqlite store."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


@pytest.fixture
def one_thread():
    """Tiny tensors and 32 px forwards are thousands of small ops: intra-op threads only add synchronisation
    (10-100x slower on a busy machine), so tests that use this fixture run single-threaded."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def run_cli():
    """Run ``python -m densenas.cli ARGS`` in ``cwd``; return the CompletedProcess."""

    def run(*args: str, cwd: Path = REPO, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "densenas.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout
        )

    return run


# The longest modules (a smoke pipeline or two each, minutes) start first, longest first, so that with
# `-n auto --dist loadfile` the shorter modules fill in behind them and the workers finish together (a 3-minute
# module dispatched last kept one worker busy alone for ~70 s). Worker-seconds of a CI run, 2026-12-04:
# pipeline 518, search e2e 214, generated inputs 163, slurm 147, workflow kill 134, search quality 100, gpu suite 64.
LONGEST_FIRST = ("test_pipeline_e2e.py", "test_search_e2e.py", "test_generated_inputs.py", "test_slurm_e2e.py",
                 "test_workflow_kill.py", "test_search_quality.py", "test_gpu_suite.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: index for index, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
