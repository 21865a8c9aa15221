"""DDP search under torchrun with 2 CPU processes (gloo): weights, α and β identical on every rank after every
architecture and weight step, with per-rank batch = global / 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from search_fixtures import REPO, env, prepare_tiny

pytestmark = pytest.mark.e2e


def test_ranks_stay_identical_after_every_step(tmp_path: Path) -> None:
    prepared, lut = prepare_tiny(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
         str(REPO / "tests" / "search_ddp_worker.py"), str(prepared), str(lut), "3"],
        cwd=REPO, capture_output=True, text=True, timeout=300, env=env())
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert "identical on 2 ranks after 6 steps" in result.stdout
