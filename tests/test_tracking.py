"""MLflow tracking under load and failure: 8 processes logging at once to one sqlite store, an unreachable server
that fails fast by name, and the pre-flight check a stage can run before its work."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO

from densenas.config import Params, load_params
from densenas.errors import DensenasError
from densenas.tracking import StageRecord, check_tracking, log_stage

WRITERS = 8
UNREACHABLE = "http://127.0.0.1:9"  # loopback, discard port: nothing listens, the connection is refused at once
# One writer: import everything, say so, wait for the common start signal, then log one train run.
WRITER = """
import sys, time
from pathlib import Path
import mlflow  # noqa: F401  (imported before the start signal, so the writers log at the same moment)
from densenas.config import load_params
from densenas.tracking import StageRecord, log_stage
repo, uri, folder, index = sys.argv[1:]
folder = Path(folder)
params = load_params(Path(repo) / "params.yaml", overrides={"tracking": {"enabled": True, "uri": uri}})
(folder / f"ready{index}").touch()
while not (folder / "go").exists():
    time.sleep(0.01)
log_stage(params, StageRecord(stage="train", space="mbv2", model=f"writer{index}",
                              metrics_file=folder / "metrics.json", history_file=folder / "history.csv"))
"""


def _params(uri: str, enabled: bool = True) -> Params:
    return load_params(REPO / "params.yaml", overrides={"tracking": {"enabled": enabled, "uri": uri}})


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No tracking URI from outside; log_stage's fail-fast HTTP settings do not leak into other tests."""
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.e2e
def test_concurrent_writers_share_one_sqlite_store(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    (tmp_path / "metrics.json").write_text(json.dumps({"best": {"top1": 50.0}, "wall_s": 1.0}))
    (tmp_path / "history.csv").write_text("epoch,train_loss,val_top1\n1,2.0,40.0\n2,1.5,45.0\n3,1.2,50.0\n")
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(REPO), uri, str(tmp_path), str(i)], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(WRITERS)]
    try:
        deadline = time.monotonic() + 240
        while len(list(tmp_path.glob("ready*"))) < WRITERS and time.monotonic() < deadline:
            assert all(w.poll() is None for w in writers), "a writer ended before the start signal"
            time.sleep(0.05)
        (tmp_path / "go").touch()
        results = [(w.wait(timeout=240), *w.communicate()) for w in writers]
    finally:
        for writer in writers:
            writer.kill()
    for index, (code, _, err) in enumerate(results):
        assert code == 0, f"writer {index}: exit {code}\n{err}"
        for symptom in ("database is locked", "OperationalError", "IntegrityError", "Traceback"):
            assert symptom not in err, f"writer {index}: {symptom!r} on stderr\n{err}"

    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("densenas-mbv2")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == WRITERS, f"expected {WRITERS} runs, got {len(runs)}"
    assert sorted(r.data.tags["model"] for r in runs) == sorted(f"writer{i}" for i in range(WRITERS))
    for run in runs:
        assert run.info.status == "FINISHED" and run.data.metrics["best.top1"] == 50.0, run
        assert len(client.get_metric_history(run.info.run_id, "epoch/val_top1")) == 3


def test_unreachable_server_fails_fast_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the client lock file of a server URI lands in the working directory
    started = time.monotonic()
    with pytest.raises(DensenasError, match=f"tracking: MLflow at '{UNREACHABLE}' failed"):
        log_stage(_params(UNREACHABLE), StageRecord(stage="train", space="mbv2", model="m"))
    assert time.monotonic() - started < 30, f"log_stage took {time.monotonic() - started:.1f} s to give up"


def test_preflight_refuses_an_unreachable_server_in_seconds() -> None:
    started = time.monotonic()
    with pytest.raises(DensenasError, match=f"tracking: MLflow at '{UNREACHABLE}' is unreachable"):
        check_tracking(_params(UNREACHABLE))
    assert time.monotonic() - started < 10, f"check_tracking took {time.monotonic() - started:.1f} s"


def test_preflight_checks_the_store_folder_and_the_environment(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    check_tracking(_params(f"sqlite:///{tmp_path / 'new' / 'mlflow.db'}"))  # a folder log_stage can create
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    bad = f"sqlite:///{blocker / 'mlflow.db'}"
    with pytest.raises(DensenasError, match=f"MLflow store '{bad}': {blocker} is not a writable folder"):
        check_tracking(_params(bad))
    check_tracking(_params(bad, enabled=False))  # tracking off: nothing to check
    monkeypatch.setenv("MLFLOW_TRACKING_URI", UNREACHABLE)
    with pytest.raises(DensenasError, match=UNREACHABLE):
        check_tracking(_params(f"sqlite:///{tmp_path / 'mlflow.db'}"))


def test_a_network_is_logged_as_an_mlflow_model(tmp_path: Path) -> None:
    """The train stage logs derived nets this way; MLflow's pytorch flavour gives back the same function."""
    import mlflow
    import mlflow.pytorch
    import torch

    from densenas.registry import create_model

    net = create_model("densenas_a", num_classes=10).eval()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_id = log_stage(_params(uri), StageRecord(stage="train", space="mbv2", model="mbv2-x", network=net,
                                                 network_input_size=32))
    mlflow.set_tracking_uri(uri)
    loaded = mlflow.pytorch.load_model(f"runs:/{run_id}/model").eval()
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(images), net(images))
