"""DataLoaders over the prepared splits, for the search and the retraining stages.

Training: RandomResizedCrop(input_size, scale (min_scale, 1)) + horizontal flip; evaluation: Resize(eval_resize) +
CenterCrop(input_size); ImageNet mean/std (SPEC §6.1, §8). The augmentation of a sample is a function of
(seed, epoch, index) only, so it does not depend on the number of workers or processes.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from torchvision.transforms.v2 import functional as F

from densenas.config import DataParams
from densenas.data.packed import PackReader, decode_rgb, verify_split
from densenas.data.prepare import FORMAT, MANIFEST, PREPARE_KEYS, SPLITS
from densenas.distributed import DistContext
from densenas.errors import DensenasError
from densenas.input_files import load_json_file

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
ASPECT_RATIOS = (3 / 4, 4 / 3)  # RandomResizedCrop's default range

SPLIT_KEYS = {"num_classes": int, "count": int, "per_class": list, "files": dict}  # read from each split entry
_verified: set[tuple[str, int, int]] = set()  # (shard path, size, mtime_ns) already checked in this process


def read_manifest(prepared_dir: str | Path) -> dict[str, Any]:
    """The manifest of a prepared dataset; ``manifest["splits"][split]["num_classes"]`` sizes a classifier."""
    path = Path(prepared_dir) / MANIFEST
    if not path.exists():
        raise DensenasError(f"{path}: not found; run `densenas prepare` first")
    try:
        manifest = load_json_file(path, "manifest")
    except DensenasError as exc:
        raise DensenasError(f"{exc}; run `densenas prepare` again") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise DensenasError(f"{path}: format {found!r}, expected {FORMAT!r}; run `densenas prepare` again")
    _check_layout(manifest, path)
    return manifest


def _check_layout(manifest: dict[str, Any], path: Path) -> None:
    """The keys the stages read, so a hand-edited manifest fails here by name instead of deep inside a stage."""
    if not isinstance(manifest.get("params"), dict):
        raise DensenasError(f"{path}: 'params' missing; run `densenas prepare` again")
    splits = manifest.get("splits")
    for split in SPLITS:
        entry = splits.get(split) if isinstance(splits, dict) else None
        if not isinstance(entry, dict):
            raise DensenasError(f"{path}: splits.{split} missing (expected {', '.join(SPLITS)}); "
                                "run `densenas prepare` again")
        for key, kind in SPLIT_KEYS.items():
            if not isinstance(entry.get(key), kind) or isinstance(entry.get(key), bool):
                raise DensenasError(f"{path}: splits.{split}.{key}: expected {kind.__name__}, got "
                                    f"{entry.get(key)!r}; run `densenas prepare` again")


def build_loader(prepared_dir: str | Path, split: str, data_params: DataParams, *, train: bool, batch_size: int,
                 seed: int, distributed: DistContext | None = None, drop_last: bool | None = None,
                 shuffle: bool | None = None) -> DataLoader:
    """A DataLoader of (normalised float32 images NCHW, int64 labels) for one prepared split.

    ``batch_size`` is per process (use ``densenas.distributed.per_rank_batch`` for a global batch). Under DDP each
    rank reads its own part of every epoch (DistributedSampler; without drop_last it pads the ranks to equal length
    with repeated samples, so exact evaluation counts need one process). ``drop_last`` and ``shuffle`` default to
    ``train``; the search's architecture steps shuffle search-val under eval transforms (SPEC §6.1). Call
    ``set_loader_epoch(loader, epoch)`` before each epoch: shuffling and augmentation follow (seed, epoch).
    The split's files are checked against the manifest's checksums (once per process).
    """
    if split not in SPLITS:
        raise DensenasError(f"split {split!r}: expected one of {', '.join(SPLITS)}")
    folder = Path(prepared_dir) / split
    manifest = read_manifest(prepared_dir)
    _check_params(manifest, data_params, Path(prepared_dir) / MANIFEST)
    _verify_once(folder, manifest["splits"][split]["files"])
    transform: SampleTransform = (
        TrainTransform(data_params.input_size, data_params.min_scale) if train
        else EvalTransform(data_params.eval_resize, data_params.input_size))
    dataset = PackedDataset(folder, transform, seed)
    _check_counts(dataset.reader.labels, manifest["splits"][split], Path(prepared_dir) / MANIFEST, split)
    drop = train if drop_last is None else drop_last
    order = train if shuffle is None else shuffle
    ctx = distributed or DistContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    if drop and len(dataset) < batch_size * ctx.world_size:
        raise DensenasError(f"{folder}: {len(dataset)} images, fewer than one batch of {batch_size} x "
                            f"{ctx.world_size} process(es); every epoch would be empty (lower the batch size or "
                            "prepare more images)")
    sampler = EpochSampler(dataset, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=order, seed=seed,
                           drop_last=drop)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=data_params.workers,
                      pin_memory=data_params.pin_memory, drop_last=drop, collate_fn=normalise_batch,
                      persistent_workers=data_params.workers > 0)


def set_loader_epoch(loader: DataLoader, epoch: int) -> None:
    """Select the shuffle order and augmentation of ``epoch``; call it before iterating each epoch."""
    sampler = loader.sampler
    if not isinstance(sampler, EpochSampler):
        raise TypeError("set_loader_epoch expects a loader from build_loader")
    sampler.set_epoch(epoch)


class EpochSampler(DistributedSampler):
    """DistributedSampler whose indices carry their epoch, so workers can seed the augmentation of each sample."""

    def __iter__(self) -> Iterator[tuple[int, int]]:  # type: ignore[override]
        epoch = self.epoch
        return ((epoch, index) for index in super().__iter__())


class PackedDataset(Dataset):
    """Records of a packed split, decoded with libjpeg-turbo/libpng into uint8 CHW RGB and transformed."""

    def __init__(self, folder: Path, transform: SampleTransform, seed: int) -> None:
        self.reader = PackReader(folder)
        self.transform = transform
        self.seed = seed

    def __len__(self) -> int:
        return len(self.reader)

    def __getitem__(self, key: tuple[int, int] | int) -> tuple[torch.Tensor, int]:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        image = decode_rgb(self.reader.read(index))
        rng = np.random.default_rng((self.seed, epoch, index))
        return self.transform(image, rng), int(self.reader.labels[index])


class SampleTransform(Protocol):
    """A uint8 CHW image and a per-sample generator in, a uint8 (3, size, size) image out."""

    def __call__(self, image: torch.Tensor, rng: np.random.Generator) -> torch.Tensor: ...


@dataclass(frozen=True)
class TrainTransform:
    size: int
    min_scale: float

    def __call__(self, image: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        top, left, height, width = random_resized_crop_box(image.shape[-2], image.shape[-1], self.min_scale, rng)
        crop = F.resized_crop(image, top, left, height, width, [self.size, self.size], antialias=True)
        return F.horizontal_flip(crop) if rng.random() < 0.5 else crop


@dataclass(frozen=True)
class EvalTransform:
    resize: int
    size: int

    def __call__(self, image: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        return F.center_crop(F.resize(image, [self.resize], antialias=True), [self.size, self.size])


def random_resized_crop_box(height: int, width: int, min_scale: float,
                            rng: np.random.Generator) -> tuple[int, int, int, int]:
    """(top, left, h, w) as torchvision's RandomResizedCrop.get_params draws it, from the given generator."""
    area = height * width
    log_lo, log_hi = math.log(ASPECT_RATIOS[0]), math.log(ASPECT_RATIOS[1])
    for _ in range(10):
        target_area = area * rng.uniform(min_scale, 1.0)
        aspect = math.exp(rng.uniform(log_lo, log_hi))
        w = round(math.sqrt(target_area * aspect))
        h = round(math.sqrt(target_area / aspect))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
    # Fallback, as torchvision: the central crop with the ratio clamped to the allowed range.
    ratio = width / height
    if ratio < ASPECT_RATIOS[0]:
        w, h = width, round(width / ASPECT_RATIOS[0])
    elif ratio > ASPECT_RATIOS[1]:
        h, w = height, round(height * ASPECT_RATIOS[1])
    else:
        h, w = height, width
    return (height - h) // 2, (width - w) // 2, h, w


def normalise_batch(batch: Sequence[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack uint8 images and normalise them with the ImageNet mean/std in one vectorised step."""
    images = torch.stack([image for image, _ in batch]).float()
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255
    return images.sub_(mean).div_(std), torch.tensor([label for _, label in batch], dtype=torch.int64)


def _check_params(manifest: dict[str, Any], data: DataParams, path: Path) -> None:
    """Refuse prepared data made with other split-defining params than the run's (stale data)."""
    for key in PREPARE_KEYS:
        if manifest["params"].get(key) != getattr(data, key):
            raise DensenasError(f"{path}: prepared with data.{key}={manifest['params'].get(key)!r}, but the params "
                                f"say {getattr(data, key)!r}; run `densenas prepare` again")


def _check_counts(labels: np.ndarray, entry: dict[str, Any], path: Path, split: str) -> None:
    """The manifest's counts against the (checksum-verified) index: an edited count or class number is refused
    before it sizes a classifier wrongly or lets a label fall outside it."""
    where = f"{path}: splits.{split}"
    num_classes = entry["num_classes"]
    if len(entry["per_class"]) != num_classes or (len(labels) and int(labels.max()) >= num_classes):
        raise DensenasError(f"{where}.num_classes is {num_classes}, but per_class lists {len(entry['per_class'])} "
                            f"classes and the index labels {int(labels.max()) + 1 if len(labels) else 0}; "
                            "run `densenas prepare` again")
    for key, expected in (("count", len(labels)), ("per_class", np.bincount(labels, minlength=num_classes).tolist())):
        if entry[key] != expected:
            raise DensenasError(f"{where}.{key} is {entry[key]!r}, the index holds {expected!r}; "
                                "run `densenas prepare` again")


def _verify_once(folder: Path, files: dict[str, dict[str, Any]]) -> None:
    stats = [(folder / name).stat() for name in files if (folder / name).is_file()]
    key = (str(folder.resolve()), sum(s.st_size for s in stats), max((s.st_mtime_ns for s in stats), default=0))
    if key in _verified:
        return
    verify_split(folder, files)
    _verified.add(key)
