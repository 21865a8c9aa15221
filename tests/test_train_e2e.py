"""`densenas train` end to end: a run killed after a checkpoint resumes to the uninterrupted result (CPU, fixed
seed), and under torchrun with 2 CPU processes (gloo) the replicas hold identical weights after every epoch."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from train_fixtures import REPO, prepare_small, quick_overrides, set_args, write_tiny_net

pytestmark = pytest.mark.e2e
EPOCHS = 4


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("e2e")
    return prepare_small(folder / "prepared"), write_tiny_net(folder)


def _train_cmd(data: Path, net: Path, out: Path, epochs: int = EPOCHS) -> list[str]:
    overrides = quick_overrides(epochs=epochs, batch_size=10)
    return ["-m", "densenas.cli", *set_args(overrides), "train", "--model", str(net), "--name", "tiny",
            "--data", str(data), "--out", str(out), "--device", "cpu"]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def _run(args: list[str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout,
                            env=_env())
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def _epoch_of(checkpoint: Path) -> int:
    return torch.load(checkpoint, weights_only=True)["state"]["epoch"]


@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM-preempted"])
def test_killed_run_resumes_to_the_uninterrupted_result(setup: tuple[Path, Path], tmp_path: Path,
                                                        stop: signal.Signals) -> None:
    """SIGKILL, or SIGTERM as slurm preempts a job (caught: the run stops at a step with exit code 75, which the
    slurm profile retries), after the first checkpoint; the re-run ends where an uninterrupted run does."""
    data, net = setup
    _run(_train_cmd(data, net, tmp_path / "whole"))

    interrupted = tmp_path / "interrupted"
    with (tmp_path / "stderr.txt").open("w") as stderr:
        process = subprocess.Popen([sys.executable, *_train_cmd(data, net, interrupted)], cwd=REPO, env=_env(),
                                   stdout=subprocess.DEVNULL, stderr=stderr)
        deadline = time.monotonic() + 240
        while not (interrupted / "checkpoint.pt").exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        process.send_signal(stop)
        process.wait(timeout=120)
    if stop == signal.SIGTERM:
        message = (tmp_path / "stderr.txt").read_text()
        assert process.returncode == 75, message[-2000:]
        assert "training stopped by SIGTERM in epoch" in message and "run again to resume" in message
    killed_at = _epoch_of(interrupted / "checkpoint.pt")
    assert killed_at < EPOCHS, f"the run finished ({killed_at} epochs) before it could be killed"
    assert not (interrupted / "metrics.json").exists()

    resumed = _run(_train_cmd(data, net, interrupted))
    assert f"resuming {interrupted / 'checkpoint.pt'} after epoch {killed_at}" in resumed.stderr

    whole, again = (json.loads((d / "metrics.json").read_text()) for d in (tmp_path / "whole", interrupted))
    for key in ("best", "last", "steps", "params"):
        assert again[key] == whole[key], f"{key}: resumed {again[key]} != uninterrupted {whole[key]}"
    strip_time = [lines.rsplit(",", 1)[0] for lines in (tmp_path / "whole" / "history.csv").read_text().splitlines()]
    resumed_rows = [lines.rsplit(",", 1)[0] for lines in (interrupted / "history.csv").read_text().splitlines()]
    assert resumed_rows == strip_time, "per-epoch history differs from the uninterrupted run"
    final = [torch.load(d / "checkpoint.pt", weights_only=True)["model"] for d in (tmp_path / "whole", interrupted)]
    for name, tensor in final[0].items():
        assert torch.equal(tensor, final[1][name]), f"final weights differ at {name}"


def test_ddp_two_cpu_processes_keep_replicas_identical(setup: tuple[Path, Path], tmp_path: Path) -> None:
    data, net = setup
    out = tmp_path / "ddp"
    cmd = _train_cmd(data, net, out, epochs=2)
    _run(["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *cmd])
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["batch_size"] == 10
    assert metrics["steps_per_epoch"] == 200 // 10, "the global batch is split, not doubled"
    checkpoint = torch.load(out / "checkpoint.pt", weights_only=True)
    digests = checkpoint["replica_digests"]
    assert len(digests) == 2 and digests[0] == digests[1], f"replica parameter digests differ: {digests}"
    assert len(checkpoint["rng"]) == 2, "each rank's RNG state is kept for resuming"
    assert sorted(p.name for p in out.iterdir()) == ["best.pt", "checkpoint.pt", "history.csv", "metrics.json"]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_two_nodes_train_the_same_weights_as_one_node_with_two_processes(setup: tuple[Path, Path],
                                                                        tmp_path: Path) -> None:
    """`workflow.nodes_per_job: 2` through densenas.launch: two launchers ("nodes", 1 gloo process each) meet at
    a c10d rendezvous on localhost and end with the weights of one launcher running 2 processes."""
    data, net = setup
    single, multi = tmp_path / "one_node", tmp_path / "two_nodes"
    cli = _train_cmd(data, net, single, epochs=2)[2:]  # without "-m densenas.cli": the launcher adds it
    _run(["-m", "densenas.launch", "--nnodes", "1", "--nproc-per-node", "2", "--", *cli])
    endpoint = f"127.0.0.1:{_free_port()}"
    node = ["-m", "densenas.launch", "--nnodes", "2", "--nproc-per-node", "1", "--rdzv-endpoint", endpoint,
            "--rdzv-id", "test-two-nodes", "--", *_train_cmd(data, net, multi, epochs=2)[2:]]
    nodes = [subprocess.Popen([sys.executable, *node], cwd=REPO, env=_env(), stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    errors = [process.communicate(timeout=300)[1] for process in nodes]
    assert [process.returncode for process in nodes] == [0, 0], errors[0][-2000:] + errors[1][-2000:]
    runs = [json.loads((d / "metrics.json").read_text()) for d in (single, multi)]
    assert runs[0]["world_size"] == runs[1]["world_size"] == 2
    assert runs[1]["best"] == runs[0]["best"] and runs[1]["last"] == runs[0]["last"]
    weights = [torch.load(d / "checkpoint.pt", weights_only=True)["model"] for d in (single, multi)]
    for name, tensor in weights[0].items():
        assert torch.equal(tensor, weights[1][name]), f"weights differ at {name}"
