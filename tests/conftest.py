"""Shared fixtures: the repository root and a runner for the ``densenas`` CLI in a subprocess."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def run_cli():
    """Run ``python -m densenas.cli ARGS`` in ``cwd``; return the CompletedProcess."""

    def run(*args: str, cwd: Path = REPO, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "densenas.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout
        )

    return run
