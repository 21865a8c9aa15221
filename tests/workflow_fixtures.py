"""What the workflow-level tests share: a clone of the committed repository at the smoke size with a FLOPs-objective
variant (so the searched architecture does not depend on latencies measured during the run), its targets, and
its outputs with wall-clock fields left out (they differ between any two runs)."""

from __future__ import annotations

import csv
import hashlib
import json
import subprocess
from pathlib import Path

import yaml
from conftest import REPO

from densenas.checkpoint import load_checkpoint
from densenas.config import deep_merge, load_params

LUT = "results/luts/mbv2/cpu-b1-r32-float32.json"
WARMUP = "results/search/mbv2/warmup"
SEARCH = "results/search/mbv2/flops_c"
TRAIN = "results/train/mbv2-flops_c"
TARGETS = [LUT, f"{TRAIN}/metrics.json"]
PRESET = {  # merged over the smoke preset: checkpoints inside the short passes, two retraining epochs, no MLflow
    "search": {"checkpoint_every_steps": 2,
               "spaces": {"mbv2": {"variants": {"flops_c": {"objective": "flops", "lambda": 0.2, "tau": 300.0}}}}},
    "report": {"random_search_variant": "flops_c"},
    "train": {"epochs": 2},
    "tracking": {"enabled": False},  # these tests compare files; MLflow adds seconds per stage and is tested elsewhere
}
TIMING_SUFFIXES = ("time", "seconds", "_s", "_hours")  # wall-clock fields: time, epoch_seconds, wall_s, search_hours


def clone(root: Path, preset: Path) -> Path:
    work = root / "work"
    subprocess.run(["git", "clone", "-q", str(REPO), str(work)], check=True)
    params = (work / "params.yaml").read_text()
    (work / "params.yaml").write_text(params.replace("\npreset: null", f"\npreset: {preset}", 1))
    assert load_params(work / "params.yaml").train.epochs == 2
    return work


def write_preset(folder: Path) -> Path:
    """The smoke preset with PRESET merged over it, as a file (one path: it is part of the params digest)."""
    preset = folder / "kill.yaml"
    smoke = yaml.safe_load((REPO / "densenas/presets/smoke.yaml").read_text())
    preset.write_text(yaml.safe_dump(deep_merge(smoke, PRESET)))
    return preset


def _without_timing(value: object) -> object:
    if isinstance(value, dict):
        return {k: _without_timing(v) for k, v in value.items() if not k.endswith(TIMING_SUFFIXES)}
    if isinstance(value, list):
        return [_without_timing(v) for v in value]
    return value


def _comparable(path: Path) -> object:
    """A file's content with wall-clock figures left out (they differ between any two runs)."""
    if path.suffix == ".json":
        return _without_timing(json.loads(path.read_text()))
    if path.suffix == ".csv":
        return [_without_timing(row) for row in csv.DictReader(path.open())]
    if path.suffix == ".pt":  # the weights (the rest holds timings); as digests, the supernet is large
        weights = load_checkpoint(path, {})["model"]
        return {k: hashlib.sha256(v.numpy().tobytes()).hexdigest() for k, v in weights.items()}
    return path.read_bytes()


def outputs(work: Path) -> dict[str, object]:
    files = [*work.glob("data/prepared/fashion_mnist/**/*"), *work.glob(f"{WARMUP}/*"), *work.glob(f"{SEARCH}/*"),
             *work.glob(f"{TRAIN}/*")]
    return {str(p.relative_to(work)): _comparable(p) for p in sorted(files) if p.is_file()}


