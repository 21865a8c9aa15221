"""Shared set-up of the search tests: a tiny prepared Fashion-MNIST, the official MBV2 latency table as a LUT, the
smoke-size search overrides, and a CLI runner with one intra-op thread per process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
IMAGES_PER_CLASS = 8  # 80 search-train and 80 search-val images: 5 steps of 16 per pass

SMOKE: dict[str, Any] = {
    "data.max_images_per_class": IMAGES_PER_CLASS,
    "data.max_search_images_per_class": IMAGES_PER_CLASS,
    "tracking.enabled": False,
    "search.spaces.mbv2.epochs": 2,
    "search.spaces.mbv2.warmup_epochs": 1,
    "search.spaces.mbv2.val_start_epoch": 1,
    "search.spaces.mbv2.batch_size": 16,
    "search.spaces.mbv2.width_mult": 0.25,  # the smoke preset's proxy supernet: 1/13 of the checkpoint to write
}


def set_args(overrides: dict[str, Any]) -> list[str]:
    """Dotted keys and values as ``--set key=value`` arguments; a string value is YAML text, passed as it is
    (e.g. ``"{alpha_lr: 0.05, ...}"`` for a whole mapping)."""
    def text(value: Any) -> str:
        return value if isinstance(value, str) else json.dumps(value)

    return [arg for key, value in overrides.items() for arg in ("--set", f"{key}={text(value)}")]


def env() -> dict[str, str]:
    """One thread per process: oversubscribed OpenMP threads slow a shared 2-core machine down by orders."""
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "densenas.cli", *args], cwd=REPO, capture_output=True, text=True,
                            timeout=timeout, env=env())
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def prepare_tiny(folder: Path) -> tuple[Path, Path]:
    """(prepared dataset, LUT JSON of the official MBV2 table) under ``folder``."""
    prepared, lut = folder / "prepared", folder / "lut_mbv2_official.json"
    run_cli(*set_args({"data.max_images_per_class": IMAGES_PER_CLASS,
                       "data.max_search_images_per_class": IMAGES_PER_CLASS}), "prepare", "--out", str(prepared))
    run_cli("lut", "--space", "mbv2", "--from-official", "lat_list_densenas_mbv2_xp32", "--out", str(lut))
    return prepared, lut


def search_args(prepared: Path, lut: Path | None, out: Path, *extra: str, overrides: dict[str, Any] | None = None,
                variant: str | None = "lat_c") -> list[str]:
    which = ["--variant", variant] if variant else ["--warmup"]
    lut_args = ["--lut", str(lut)] if lut is not None else []
    return [*set_args({**SMOKE, **(overrides or {})}), "search", *which, *lut_args, "--data", str(prepared),
            "--out", str(out), "--device", "cpu", *extra]
