"""Shared by the train and evaluate tests: a small prepared Fashion-MNIST, a tiny MBV2 net_config, quick params."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from densenas.config import Params, load_params, set_items
from densenas.data import prepare

REPO = Path(__file__).resolve().parents[1]
IMAGES_PER_CLASS = 20
# A few MBConv blocks: trains in well under a second per epoch on 200 images of 32x32.
TINY_NET = {
    "net_type": "mbv2", "last_dim": 64, "num_classes": 10,
    "blocks": [
        {"in_ch": 16, "out_ch": 16, "head_op": "mbconv_k3_t1", "stack_ops": [], "stride": 1},
        {"in_ch": 16, "out_ch": 24, "head_op": "mbconv_k3_t3", "stack_ops": [], "stride": 2},
        {"in_ch": 24, "out_ch": 32, "head_op": "mbconv_k3_t3", "stack_ops": ["mbconv_k3_t3"], "stride": 2},
        {"in_ch": 32, "out_ch": 64, "op": "conv1_1"},
    ],
}


def quick_overrides(**train: Any) -> dict[str, Any]:
    """The repository's params at the test cap, with a short, stable recipe (lr suited to batch 20)."""
    return {"data": {"max_images_per_class": IMAGES_PER_CLASS, "max_search_images_per_class": IMAGES_PER_CLASS},
            "train": {"epochs": 3, "batch_size": 20, "lr": 0.1, "val_start_epoch": 0, **train},
            "evaluate": {"latency_warmup": 1, "latency_repeats": 3},
            "tracking": {"enabled": False}}


def quick_params(**train: Any) -> Params:
    return load_params(REPO / "params.yaml", overrides=quick_overrides(**train))


def set_args(overrides: dict[str, Any]) -> list[str]:
    """``overrides`` as ``--set key=value`` command-line arguments (as the workflow passes them)."""
    return [arg for item in set_items(overrides) for arg in ("--set", item)]


def prepare_small(out: Path) -> Path:
    prepare([quick_params().data.raw_dir], out, quick_params().data)
    return out


def write_tiny_net(folder: Path) -> Path:
    path = folder / "tiny.json"
    path.write_text(json.dumps(TINY_NET))
    return path
