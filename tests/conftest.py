"""Shared fixtures: the repository root and a runner for the ``densenas`` CLI in a subprocess."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


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
