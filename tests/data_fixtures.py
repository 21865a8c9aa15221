"""A tiny ImageNet in both user layouts (ImageFolder tree; official tars + devkit) for the data tests.

Three classes of small generated JPEGs, one corrupt train file, one image already at the packed size.
"""

from __future__ import annotations

import io
import tarfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from scipy.io import savemat
from torchvision.io import encode_jpeg

from densenas.config import DataParams, load_params

REPO = Path(__file__).resolve().parents[1]
WNIDS = ("n00000003", "n00000001", "n00000002")  # deliberately unsorted: sorted order must win
TRAIN_PER_CLASS = 10
VAL_PER_CLASS = 3
CORRUPT = "train/n00000002/n00000002_0004.JPEG"
EXACT = "train/n00000001/n00000001_0007.JPEG"  # shorter side already PACK_SHORT_SIDE: stored as is
PACK_SHORT_SIDE = 32


def data_params(**changes: object) -> DataParams:
    """The repository's data params for the tiny ImageNet (3 classes, 2 in the search subset)."""
    base = load_params(REPO / "params.yaml").data
    fields = {"source": "imagenet", "num_search_classes": 2, "max_images_per_class": None,
              "max_search_images_per_class": None, "input_size": 24, "eval_resize": 28,
              "pack_short_side": PACK_SHORT_SIDE, "workers": 0, **changes}
    return replace(base, **fields)


def _jpeg(seed: int, height: int, width: int) -> bytes:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 / width, y * 255 / height, np.full_like(x, rng.integers(0, 255))], 0)
    pixels = np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
    return encode_jpeg(torch.from_numpy(pixels), quality=90).numpy().tobytes()


def tiny_imagenet_files() -> dict[str, bytes]:
    """Relative path (ImageFolder layout) -> file bytes."""
    files: dict[str, bytes] = {}
    for c, wnid in enumerate(WNIDS):
        for i in range(TRAIN_PER_CLASS):
            files[f"train/{wnid}/{wnid}_{i:04d}.JPEG"] = _jpeg(100 * c + i, 36 + i, 48 + 3 * i)
        for i in range(VAL_PER_CLASS):
            files[f"val/{wnid}/ILSVRC2012_val_{c * VAL_PER_CLASS + i + 1:08d}.JPEG"] = _jpeg(1000 + 10 * c + i, 40, 52)
    files[CORRUPT] = b"\xff\xd8\xff\xe0 this is not a complete JPEG"
    files[EXACT] = _jpeg(7, PACK_SHORT_SIDE, 45)
    return files


def write_image_folder(root: Path) -> Path:
    for rel, data in tiny_imagenet_files().items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


def write_archives(root: Path) -> list[Path]:
    """ILSVRC2012_img_train.tar (one tar per wnid), ILSVRC2012_img_val.tar (flat) and the devkit."""
    root.mkdir(parents=True, exist_ok=True)
    files = tiny_imagenet_files()
    with tarfile.open(root / "ILSVRC2012_img_train.tar", "w") as outer:
        for wnid in WNIDS:
            buffer = io.BytesIO()
            with tarfile.open(fileobj=buffer, mode="w") as inner:
                for rel in sorted(r for r in files if r.startswith(f"train/{wnid}/"))[::-1]:
                    _add(inner, Path(rel).name, files[rel])
            _add(outer, f"{wnid}.tar", buffer.getvalue())
    val = sorted((Path(r).name, r.split("/")[1]) for r in files if r.startswith("val/"))
    with tarfile.open(root / "ILSVRC2012_img_val.tar", "w") as tar:
        for name, wnid in val:
            _add(tar, name, files[f"val/{wnid}/{name}"])
    _write_devkit(root / "ILSVRC2012_devkit_t12.tar.gz", [wnid for _, wnid in val])
    return [root / "ILSVRC2012_img_train.tar", root / "ILSVRC2012_img_val.tar", root / "ILSVRC2012_devkit_t12.tar.gz"]


def _write_devkit(path: Path, val_wnids: list[str]) -> None:
    ids = {wnid: i + 1 for i, wnid in enumerate(WNIDS)}  # ILSVRC ids need not follow wnid order
    dtype = [("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O"), ("gloss", "O"), ("num_children", "O")]
    rows = [(ids[w], w, f"thing {w[-1]}, item", "a gloss", 0) for w in WNIDS]
    rows.append((len(WNIDS) + 1, "n09999999", "a parent synset", "not a leaf", 3))
    buffer = io.BytesIO()
    savemat(buffer, {"synsets": np.array(rows, dtype=dtype)})
    truth = "".join(f"{ids[w]}\n" for w in val_wnids).encode()
    with tarfile.open(path, "w:gz") as tar:
        _add(tar, "ILSVRC2012_devkit_t12/data/meta.mat", buffer.getvalue())
        _add(tar, "ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt", truth)


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    tar.addfile(info, io.BytesIO(data))
