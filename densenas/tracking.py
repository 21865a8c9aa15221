"""MLflow tracking of stage runs: params, per-epoch metrics, artifacts and provenance tags.

Stages write files (the source of truth); after a stage succeeds the CLI logs what it wrote here, on rank 0
only. Writers are serialised with a file lock beside a sqlite store, so parallel Snakemake jobs never hit
sqlite lock or migration errors; an unreachable server fails fast with a message instead of hanging, and
:func:`check_tracking` lets a stage find that out before it starts its work.
"""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from filelock import FileLock

from densenas.config import Params
from densenas.errors import DensenasError

_HTTP_FAIL_FAST = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


@dataclass
class StageRecord:
    """What one stage execution produced, for MLflow: the CLI fills it, :func:`log_stage` logs it."""

    stage: str
    space: str | None = None
    model: str | None = None
    variant: str | None = None
    metrics_file: Path | None = None
    history_file: Path | None = None
    artifacts: list[Path] = field(default_factory=list)
    manifest_file: Path | None = None
    extra_params: dict[str, Any] = field(default_factory=dict)
    network: Any = None               # a trained torch module to log as an MLflow model (the derived nets)
    network_input_size: int = 224     # side of its example input (the model signature)


def tracking_uri(params: Params) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI", params.tracking.uri)


def log_stage(params: Params, record: StageRecord) -> str | None:
    """Log ``record`` as one MLflow run; return its run id (None when tracking is disabled or not rank 0)."""
    if not params.tracking.enabled or int(os.environ.get("RANK", "0")) != 0:
        return None
    uri = tracking_uri(params)
    os.environ.update({k: v for k, v in _HTTP_FAIL_FAST.items() if k not in os.environ})
    import mlflow  # outside the lock: the import takes seconds, and parallel writers need not wait for each other's

    with _store_lock(uri):
        mlflow.set_tracking_uri(uri)
        try:
            mlflow.set_experiment(f"densenas-{record.space or 'data'}")
            return _log_run(mlflow, params, record)
        except Exception as exc:
            if isinstance(exc, DensenasError):
                raise
            raise DensenasError(
                f"tracking: MLflow at '{uri}' failed ({exc.__class__.__name__}: {str(exc)[:160]}); fix the URI "
                "(tracking.uri or MLFLOW_TRACKING_URI) or set tracking.enabled: false"
            ) from None


def check_tracking(params: Params, timeout_s: float = 5.0) -> None:
    """Pre-flight for a stage: refuse within ``timeout_s``, naming the URI, a store that :func:`log_stage` could
    not write after the stage's work is done (a server that does not answer, a sqlite or file store in a folder
    that cannot be written). Nothing to check when tracking is off or on ranks other than 0."""
    if not params.tracking.enabled or int(os.environ.get("RANK", "0")) != 0:
        return
    uri = tracking_uri(params)
    scheme = urlparse(uri).scheme
    if scheme in ("http", "https"):
        import requests  # mlflow's own HTTP client

        try:
            requests.get(f"{uri.rstrip('/')}/health", timeout=timeout_s)  # any answer means the server is there
        except requests.RequestException as exc:
            raise DensenasError(f"tracking: MLflow at '{uri}' is unreachable ({exc.__class__.__name__}); start the "
                                f"server, fix the URI (tracking.uri or MLFLOW_TRACKING_URI) or set "
                                f"tracking.enabled: false") from None
    elif scheme in ("sqlite", "file", ""):
        store = _sqlite_path(uri) if scheme == "sqlite" else Path(urlparse(uri).path)
        folder = store.parent if scheme == "sqlite" else store
        existing = next(p for p in (folder.absolute(), *folder.absolute().parents) if p.exists())
        if not (existing.is_dir() and os.access(existing, os.W_OK | os.X_OK)):
            raise DensenasError(f"tracking: MLflow store '{uri}': {existing} is not a writable folder; fix the URI "
                                "(tracking.uri or MLFLOW_TRACKING_URI) or set tracking.enabled: false")


def _log_run(mlflow: Any, params: Params, record: StageRecord) -> str:
    name = "/".join(p for p in (record.stage, record.space, record.model or record.variant) if p)
    with mlflow.start_run(run_name=name, tags=_tags(params, record)) as run:
        flat = {**_flatten(params.raw), **{f"stage.{k}": v for k, v in record.extra_params.items()}}
        mlflow.log_params({k: str(v)[:6000] for k, v in flat.items()})
        if record.metrics_file and record.metrics_file.is_file():
            mlflow.log_metrics(_numeric(_flatten(json.loads(record.metrics_file.read_text()))))
            mlflow.log_artifact(str(record.metrics_file))
        if record.history_file and record.history_file.is_file():
            _log_history(mlflow, record.history_file)
            mlflow.log_artifact(str(record.history_file))
        for artifact in record.artifacts:
            if artifact.is_file():
                mlflow.log_artifact(str(artifact))
        if record.network is not None:
            _log_network(mlflow, record.network, record.network_input_size)
        return run.info.run_id


def _log_network(mlflow: Any, network: Any, input_size: int) -> None:
    """The network as an MLflow model of the run, for `mlflow.pytorch.load_model("runs:/<id>/model")`. MLflow's
    pytorch flavour pickles it (its pt2 format fixes the batch size); densenas never loads one itself."""
    import mlflow.pytorch
    import numpy as np
    import torch
    import torchvision

    example = np.zeros((1, 3, input_size, input_size), dtype=np.float32)
    requirements = [f"torch=={torch.__version__}", f"torchvision=={torchvision.__version__}"]
    mlflow.pytorch.log_model(network.eval(), name="model", serialization_format="pickle", input_example=example,
                             pip_requirements=requirements)


def _log_history(mlflow: Any, history: Path) -> None:
    with history.open() as handle:
        for row in csv.DictReader(handle):
            step = int(float(row.get("epoch", 0)))
            mlflow.log_metrics(_numeric({f"epoch/{k}": v for k, v in row.items() if k != "epoch"}), step=step)


def _tags(params: Params, record: StageRecord) -> dict[str, str]:
    tags = {"stage": record.stage, "params_hash": params.digest, "git_commit": _git_commit(),
            "preset": str(params.preset)}
    for key in ("space", "model", "variant"):
        if getattr(record, key):
            tags[key] = str(getattr(record, key))
    if record.manifest_file and record.manifest_file.is_file():
        from densenas.atomic import sha256_file

        tags["data_manifest_hash"] = sha256_file(record.manifest_file)[:12]
    return tags


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def _store_lock(uri: str) -> FileLock:
    """A lock file beside a sqlite store (or in the working directory for servers)."""
    path = _sqlite_path(uri) if uri.startswith("sqlite:///") else Path(".mlflow-client")
    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(path) + ".lock", timeout=600)


def _sqlite_path(uri: str) -> Path:
    """``sqlite:///mlflow.db`` -> mlflow.db (relative), ``sqlite:////abs/m.db`` -> /abs/m.db."""
    return Path(uri.removeprefix("sqlite:///"))


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): data}


def _numeric(data: dict[str, Any]) -> dict[str, float]:
    out = {}
    for key, value in data.items():
        if isinstance(value, bool):
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        if math.isfinite(number):
            out[key.replace("@", "_")] = number
    return out
