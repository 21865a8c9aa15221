"""Checkpoints round-trip RNG states, load with weights_only, and refuse a foreign identity or a broken file."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from densenas.checkpoint import load_checkpoint, rng_state, save_checkpoint, seed_everything, set_rng_state
from densenas.errors import DensenasError


def _draw() -> tuple[float, float, float]:
    return torch.rand(1).item(), float(np.random.rand()), random.random()


def test_rng_states_survive_a_save_and_load(tmp_path: Path) -> None:
    seed_everything(7)
    save_checkpoint(tmp_path / "c.pt", {"identity": {"kind": "test"}, "rng": rng_state()})
    expected = _draw()
    set_rng_state(load_checkpoint(tmp_path / "c.pt", {"kind": "test"})["rng"])
    assert _draw() == expected


def test_foreign_identity_is_refused_by_name(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "c.pt", {"identity": {"kind": "search", "space": "mbv2"}})
    with pytest.raises(DensenasError, match="space='mbv2', expected space='resnet'"):
        load_checkpoint(tmp_path / "c.pt", {"space": "resnet"})


def test_truncated_file_is_refused(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "c.pt", {"identity": {"kind": "x"}, "w": torch.ones(1000)})
    data = (tmp_path / "c.pt").read_bytes()
    (tmp_path / "c.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(DensenasError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "c.pt", {"kind": "x"})


def test_save_leaves_no_partial_file_on_failure(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        save_checkpoint(tmp_path / "c.pt", {"no": "identity"})
    assert list(tmp_path.iterdir()) == []
