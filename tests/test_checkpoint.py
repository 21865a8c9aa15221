"""Checkpoints round-trip RNG states, load with weights_only (pickled code is refused unexecuted), carry and verify
a content checksum, and refuse a foreign identity or a broken file."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from densenas.checkpoint import (
    INTEGRITY,
    content_digest,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    seed_everything,
    set_rng_state,
)
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


class _RunsCode:
    """Unpickling it calls ``open(marker, "w")``: a stand-in for whatever a foreign pickle could execute."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy-pickle"])
def test_pickled_code_is_refused_without_running_it(tmp_path: Path, zip_format: bool) -> None:
    marker = tmp_path / "ran"
    path = tmp_path / "c.pt"
    torch.save({"identity": {"kind": "x"}, "payload": _RunsCode(marker)}, path,
               _use_new_zipfile_serialization=zip_format)
    torch.load(path, weights_only=False)  # the control: an unrestricted load does run it
    assert marker.exists(), "the test payload should execute under an unrestricted load"
    marker.unlink()
    with pytest.raises(DensenasError, match=r"c\.pt: not a readable checkpoint \(UnpicklingError\)"):
        load_checkpoint(path, {"kind": "x"})
    assert not marker.exists(), "load_checkpoint executed code from the file"


def test_content_checksum_is_recorded_and_verified(tmp_path: Path) -> None:
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.Adam(model.parameters(), betas=(0.5, 0.999))
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    payload = {"identity": {"kind": "x"}, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
               "rng": rng_state(), "flag": torch.tensor([True, False]), "half": torch.ones(2, dtype=torch.bfloat16)}
    save_checkpoint(tmp_path / "c.pt", payload)
    raw = torch.load(tmp_path / "c.pt", weights_only=True)
    assert raw[INTEGRITY] == content_digest(payload), "the file records the digest of what was saved"
    loaded = load_checkpoint(tmp_path / "c.pt", {"kind": "x"})
    assert INTEGRITY not in loaded and torch.equal(loaded["model"]["weight"], model.state_dict()["weight"])

    data = bytearray((tmp_path / "c.pt").read_bytes())
    weight = model.state_dict()["weight"].numpy().tobytes()
    data[data.index(weight) + 2] ^= 0x01  # one bit of one weight: torch.load itself does not notice
    (tmp_path / "flipped.pt").write_bytes(bytes(data))
    assert not torch.equal(torch.load(tmp_path / "flipped.pt", weights_only=True)["model"]["weight"],
                           model.state_dict()["weight"])
    with pytest.raises(DensenasError, match=f"flipped.pt: content differs from its recorded {INTEGRITY}"):
        load_checkpoint(tmp_path / "flipped.pt", {"kind": "x"})

    torch.save({"identity": {"kind": "x"}}, tmp_path / "unstamped.pt")
    with pytest.raises(DensenasError, match=f"unstamped.pt: checkpoint has no {INTEGRITY}"):
        load_checkpoint(tmp_path / "unstamped.pt", {"kind": "x"})


def test_atomic_write_removes_the_temp_file_a_killed_writer_left(tmp_path: Path) -> None:
    """A SIGKILL between mkstemp and rename leaves `.name.host-pid.XXXX.tmp`; the next write of that file removes
    it, but not the temp file of a writer still alive (a concurrent write) or of another target."""
    import socket
    import subprocess

    from densenas.atomic import write_text

    host = socket.gethostname().replace(".", "_")
    finished = subprocess.Popen(["true"])  # a writer that has exited
    finished.wait()
    stale = tmp_path / f".history.csv.{host}-{finished.pid}.abc123.tmp"
    stale.write_text("half a file")
    busy = tmp_path / f".history.csv.{host}-{os.getpid()}.def456.tmp"
    busy.write_text("being written")
    other = tmp_path / f".history.csv.bak.{host}-{finished.pid}.abc123.tmp"
    other.write_text("another target's temp")
    write_text(tmp_path / "history.csv", "epoch\n")
    assert not stale.exists(), "the stale temp file of history.csv survived the next write"
    assert busy.exists(), "the temp file of a live writer was removed"
    assert other.exists(), "a temp file of another target was removed"
    assert (tmp_path / "history.csv").read_text() == "epoch\n"
