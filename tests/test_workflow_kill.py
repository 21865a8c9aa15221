"""SIGKILL through the workflow: Snakemake and its jobs are killed during prepare, lut, the search warm-up, a search
variant and a retraining; after `snakemake --unlock` and a re-run with `--rerun-incomplete` the outputs equal those
of an uninterrupted run, the interrupted stages resumed from their checkpoints, and after every kill each file that
looks like an output is complete.

Both runs use a clone of the committed repository at the smoke size, with a FLOPs-objective variant so that the
searched architecture does not depend on latencies measured during the run (the LUT is still built and killed).
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import BIN, workflow_env
from workflow_fixtures import LUT, SEARCH, TARGETS, TRAIN, WARMUP, clone, outputs, write_preset

from densenas.checkpoint import load_checkpoint
from densenas.lut.lut_file import read_lut

pytestmark = pytest.mark.e2e


def _snakemake(work: Path, *args: str) -> subprocess.Popen:
    """Snakemake in its own session, so one killpg reaches it and every job it started."""
    log = (work / "snakemake.out").open("a")
    return subprocess.Popen([str(BIN / "snakemake"), "--cores", "1", *args, *TARGETS], cwd=work, env=workflow_env(),
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _finish(process: subprocess.Popen, work: Path, timeout: float = 900) -> None:
    assert process.wait(timeout=timeout) == 0, (work / "snakemake.out").read_text()[-4000:]


def _kill_at_next(process: subprocess.Popen, points: dict[str, Callable[[], bool]], timeout: float = 600) -> str:
    """SIGKILL the whole run as soon as one of ``points`` is reached (Snakemake picks the job order); its name."""
    deadline = time.monotonic() + timeout
    while True:
        reached = next((name for name, ready in points.items() if ready()), None)
        if reached is not None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            return reached
        assert process.poll() is None, f"the run ended before any of the kill points {sorted(points)}"
        assert time.monotonic() < deadline, f"kill points never reached: {sorted(points)}"
        time.sleep(0.02)


def _staging(work: Path) -> bool:
    return any((work / "data/prepared").glob(".fashion_mnist.staging-*"))


def _started(work: Path, log: str, output: str) -> Callable[[], bool]:
    """The job wrote to its log and its output does not exist yet."""
    def ready() -> bool:
        path = work / log
        return path.is_file() and path.stat().st_size > 0 and not (work / output).exists()
    return ready


def _checkpointed(work: Path, folder: str) -> Callable[[], bool]:
    """The stage saved a checkpoint and has not finished (metrics.json is its last file)."""
    return lambda: (work / folder / "checkpoint.pt").is_file() and not (work / folder / "metrics.json").exists()


KILL_POINTS: dict[str, Callable[[Path], Callable[[], bool]]] = {
    "prepare": lambda w: lambda: _staging(w),
    "lut": lambda w: _started(w, "logs/lut/mbv2/cpu-b1-r32-float32.log", LUT),
    "search warm-up": lambda w: _checkpointed(w, WARMUP),
    "search variant": lambda w: _checkpointed(w, SEARCH),
    "train": lambda w: _checkpointed(w, TRAIN),
}


def _assert_nothing_half_written(work: Path, when: str) -> None:
    """Every file that looks like an output parses or loads; temporary files are hidden (dot) names."""
    for path in [*work.glob("results/**/*"), *work.glob("data/prepared/*/manifest.json")]:
        if path.is_dir() or path.name.startswith("."):
            continue
        if path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".pt":
            load_checkpoint(path, {})
        elif path.suffix == ".csv":
            list(csv.DictReader(path.open()))
    assert not (work / "data/prepared/fashion_mnist").exists() or (
        work / "data/prepared/fashion_mnist/manifest.json").is_file(), f"{when}: a prepared folder without manifest"


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[str]]:
    """(uninterrupted clone, killed-and-resumed clone, the kill points that hit a running stage)."""
    preset = write_preset(tmp_path_factory.mktemp("preset"))
    reference, killed = (clone(tmp_path_factory.mktemp(name), preset) for name in ("reference", "killed"))
    uninterrupted = _snakemake(reference)  # side by side with the killed run: one core each
    pending = {name: point(killed) for name, point in KILL_POINTS.items()}
    hits = []
    while pending:
        name = _kill_at_next(_snakemake(killed, "--rerun-incomplete"), pending)
        del pending[name]
        hits.append(name)
        _assert_nothing_half_written(killed, f"after the kill during {name}")
        subprocess.run([str(BIN / "snakemake"), "--unlock", *TARGETS], cwd=killed, env=workflow_env(), check=True,
                       capture_output=True)
    _finish(_snakemake(killed, "--rerun-incomplete"), killed)
    _finish(uninterrupted, reference)
    return reference, killed, hits


def test_every_kill_point_was_hit(runs: tuple[Path, Path, list[str]]) -> None:
    assert sorted(runs[2]) == sorted(KILL_POINTS)


def test_killed_run_ends_with_the_uninterruptedoutputs(runs: tuple[Path, Path, list[str]]) -> None:
    reference, killed, _ = runs
    expected, got = outputs(reference), outputs(killed)
    assert sorted(got) == sorted(expected)
    assert len(expected) >= 20, sorted(expected)
    differing = [name for name in expected if got[name] != expected[name]]
    assert not differing, f"outputs differ after kill and resume: {differing}"


def test_killed_stages_resumed_from_their_checkpoints(runs: tuple[Path, Path, list[str]]) -> None:
    _, killed, _ = runs
    assert "resumed from" in (killed / "logs/search/mbv2/warmup.log").read_text()
    assert "resumed from" in (killed / "logs/search/mbv2/flops_c.log").read_text()
    assert "densenas: resuming" in (killed / "logs/train/mbv2-flops_c.log").read_text()


def test_lut_rebuilt_complete_after_its_kill(runs: tuple[Path, Path, list[str]]) -> None:
    """Latencies are measurements and differ between runs; the ops of the table and how they were timed do not."""
    reference, killed, _ = runs
    expected, got = (read_lut(work / LUT) for work in (reference, killed))  # schema and checksum verified
    assert sorted(got["entries"]) == sorted(expected["entries"])
    settings = ("space", "metric", "input_size", "batch", "dtype", "threads", "warmup", "repeats")
    assert {k: got[k] for k in settings} == {k: expected[k] for k in settings}
