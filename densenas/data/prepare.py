"""The `prepare` stage: raw dataset -> data/prepared/{dataset}/ with search_train, search_val, train, val + manifest.

Search splits: a class subset (first N sorted classes or a class-list file) and, per class, an 80/20 split of the
sorted TRAIN file names (SPEC §6.1, §12 B5/B6). Every image is decoded once here, so corrupt files surface now.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import re
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision
from torchvision.io import encode_jpeg, encode_png
from torchvision.transforms.v2 import functional as F
from tqdm import tqdm

from densenas.atomic import check_writable_dir, sha256_file, write_error, write_json
from densenas.config import DataParams
from densenas.data.packed import PackWriter, decode_rgb
from densenas.data.sources import RawDataset, Sample, read_raw
from densenas.errors import DensenasError
from densenas.input_files import read_input_text

FORMAT = "densenas-packed/1"
SPLITS = ("search_train", "search_val", "train", "val")
MANIFEST = "manifest.json"
JPEG_QUALITY = 90  # re-encoding resized JPEGs: decodes ~1.4x faster than 95 (docs/benchmarks.md)
# Data params that decide the prepared bytes: recorded in the manifest and checked by the loaders.
PREPARE_KEYS = ("source", "num_search_classes", "class_list", "search_train_fraction", "max_images_per_class",
                "max_search_images_per_class", "pack_short_side")


@dataclass(frozen=True)
class SplitPlan:
    """The samples of one prepared split, in writing order; ``classes[label]`` is the class of a label."""

    name: str
    classes: tuple[str, ...]
    samples: list[tuple[Sample, int]]


def prepare(inputs: list[str], out: Path, data: DataParams) -> dict[str, Any]:
    """Read the raw dataset, write the four packed splits and manifest.json into ``out`` (replaced as a whole).

    Images are decoded and re-encoded in ``data.workers`` processes (0: in this one).
    """
    if data.pack_short_side is not None and data.pack_short_side < data.input_size:
        raise DensenasError(f"data.pack_short_side: {data.pack_short_side} is below data.input_size "
                            f"{data.input_size}; stored images must be at least as large as the training crop")
    check_writable_dir(out.parent)  # before the raw data is read: that can take minutes
    raw = read_raw(data.source, inputs)
    search_classes = select_search_classes(raw.classes, data.num_search_classes, data.class_list)
    search_cap = data.max_search_images_per_class or data.max_images_per_class
    plans = plan_splits(raw, search_classes, data.search_train_fraction, data.max_images_per_class, search_cap)
    _check_no_empty_class(plans, raw)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.with_name(f".{out.name}.staging-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        splits = {}
        for plan in plans:
            splits[plan.name] = write_split(plan, staging / plan.name, data.pack_short_side, data.on_corrupt,
                                            data.workers)
        manifest = _manifest(raw, search_classes, data, splits)
        write_json(staging / MANIFEST, manifest)
        _replace_dir(staging, out)
    except OSError as exc:  # a full disk while packing: the staging folder goes, an earlier dataset stays
        raise write_error(out, exc) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest


def select_search_classes(classes: tuple[str, ...], num: int, class_list: str | None) -> tuple[str, ...]:
    """The first ``num`` classes in canonical order, or the classes of a list file (one id a line, in its order)."""
    if class_list is None:
        if num > len(classes):
            raise DensenasError(f"data.num_search_classes: {num} exceeds the {len(classes)} classes of the dataset")
        return classes[:num]
    path = Path(class_list)
    if not path.exists():
        raise DensenasError(f"data.class_list: {path}: file not found")
    known = set(classes)
    chosen: list[str] = []
    for number, line in enumerate(read_input_text(path, "class list").splitlines(), start=1):
        name = line.split("#", 1)[0].strip()
        if not name:
            continue
        if name not in known:
            raise DensenasError(f"{path}:{number}: unknown class {name!r} (expected ids such as {classes[0]!r})")
        if name in chosen:
            raise DensenasError(f"{path}:{number}: class {name!r} listed twice")
        chosen.append(name)
    if not chosen:
        raise DensenasError(f"{path}: no class ids in the file")
    return tuple(chosen)


def _check_no_empty_class(plans: list[SplitPlan], raw: RawDataset) -> None:
    """A split, or a class within one, without images would train or validate on nothing: refuse it by name."""
    for plan in plans:
        counts = np.bincount([label for _, label in plan.samples], minlength=len(plan.classes))
        empty = [cls for cls, count in zip(plan.classes, counts.tolist(), strict=True) if count == 0]
        if empty:
            raise DensenasError(
                f"{' '.join(raw.inputs)}: split {plan.name} would hold no images of class(es) "
                f"{', '.join(empty[:5])}{' ...' if len(empty) > 5 else ''} ({len(empty)} of {len(plan.classes)}); "
                "every class needs images in train, val and both search splits (see data.search_train_fraction)")


def plan_splits(raw: RawDataset, search_classes: tuple[str, ...], fraction: float,
                cap: int | None, search_cap: int | None) -> list[SplitPlan]:
    """Per class, the first ``fraction`` of the sorted train files -> search_train, the rest -> search_val (B5).

    ``cap`` limits the images per class of train/val, ``search_cap`` those of the two search splits.
    """
    search_train: list[tuple[Sample, int]] = []
    search_val: list[tuple[Sample, int]] = []
    for label, cls in enumerate(search_classes):
        files = raw.train[cls]
        cut = math.floor(len(files) * fraction + 1e-9)  # the epsilon keeps 0.8 * 10 at 8 despite rounding
        search_train += [(s, label) for s in files[:cut][:search_cap]]
        search_val += [(s, label) for s in files[cut:][:search_cap]]
    full = [SplitPlan(split, raw.classes, [(s, label) for label, cls in enumerate(raw.classes)
                                           for s in samples[cls][:cap]])
            for split, samples in (("train", raw.train), ("val", raw.val))]
    return [SplitPlan("search_train", search_classes, search_train),
            SplitPlan("search_val", search_classes, search_val), *full]


def write_split(plan: SplitPlan, folder: Path, short_side: int | None, on_corrupt: str,
                workers: int) -> dict[str, Any]:
    """Pack one split; returns its manifest entry. Unreadable images fail or are skipped and listed (on_corrupt)."""
    skipped: list[dict[str, str]] = []
    per_class = [0] * len(plan.classes)
    with PackWriter(folder) as writer:
        packed = _pack_all([s for s, _ in plan.samples], short_side, workers)
        progress = tqdm(zip(plan.samples, packed, strict=True), total=len(plan.samples), desc=plan.name,
                        unit="img", file=sys.stderr, dynamic_ncols=True)
        for (sample, label), (data, error) in progress:
            if data is None:
                if on_corrupt == "fail":
                    raise DensenasError(f"{sample.origin}: unreadable image ({error}); set data.on_corrupt: skip "
                                        f"to leave unreadable images out")
                tqdm.write(f"densenas prepare: skipped unreadable image {sample.origin}: {error}", file=sys.stderr)
                skipped.append({"path": sample.origin, "error": error})
                continue
            writer.append(data, label, sample.name)
            per_class[label] += 1
        files = writer.close()
    left_out = [cls for cls, count in zip(plan.classes, per_class, strict=True) if count == 0]
    if left_out:
        raise DensenasError(f"split {plan.name}: every image of class {left_out[0]} was unreadable and skipped "
                            f"({len(left_out)} such classes); fix or remove those images")
    return {"num_classes": len(plan.classes), "count": sum(per_class), "per_class": per_class,
            "skipped": skipped, "files": files}


def _pack_all(samples: list[Sample], short_side: int | None, workers: int) -> Iterator[tuple[bytes | None, str]]:
    """``pack_image`` over the samples in order, in ``workers`` processes (0: in this one)."""
    if workers == 0:
        yield from (pack_image(s, short_side) for s in samples)
        return
    with multiprocessing.get_context().Pool(workers, initializer=torch.set_num_threads, initargs=(1,)) as pool:
        yield from pool.imap(_PackJob(short_side), samples, chunksize=64)


@dataclass(frozen=True)
class _PackJob:
    short_side: int | None

    def __call__(self, sample: Sample) -> tuple[bytes | None, str]:
        return pack_image(sample, self.short_side)


def pack_image(sample: Sample, short_side: int | None) -> tuple[bytes | None, str]:
    """The bytes to store for ``sample`` (or None and the reason it is unreadable).

    Encoded sources keep their original bytes when no resize is due; resized ones are re-encoded as JPEG.
    Pixel-array sources (Fashion-MNIST) are stored as lossless PNG.
    """
    if isinstance(sample.data, np.ndarray):
        pixels = torch.from_numpy(np.array(sample.data))[None]  # a copy: the IDX pixels are a read-only buffer
        return encode_png(_resize_short_side(pixels, short_side)).numpy().tobytes(), ""
    try:
        original = sample.data.read()
        image = decode_rgb(original)
    except (RuntimeError, OSError, ValueError) as exc:
        return None, _reason(exc)
    if short_side is None or min(image.shape[-2:]) == short_side:
        return original, ""
    return encode_jpeg(_resize_short_side(image, short_side), quality=JPEG_QUALITY).numpy().tobytes(), ""


def _reason(exc: Exception) -> str:
    """The decoder's message without the C++ source location torchvision puts in front of it."""
    text = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
    return re.sub(r"^\w+, \S+:\d+, ", "", text)


def _resize_short_side(image: torch.Tensor, short_side: int | None) -> torch.Tensor:
    if short_side is None or min(image.shape[-2:]) == short_side:
        return image
    return F.resize(image, [short_side], antialias=True)


def _manifest(raw: RawDataset, search_classes: tuple[str, ...], data: DataParams,
              splits: dict[str, dict[str, Any]]) -> dict[str, Any]:
    params = {key: getattr(data, key) for key in PREPARE_KEYS}
    if data.class_list is not None:
        params["class_list_sha256"] = sha256_file(data.class_list)
    return {
        "format": FORMAT,
        "source": {"kind": raw.kind, "layout": raw.layout, "inputs": list(raw.inputs)},
        "params": {**params, "on_corrupt": data.on_corrupt, "jpeg_quality": JPEG_QUALITY},
        "software": {"torch": torch.__version__, "torchvision": torchvision.__version__},
        "classes": [{"id": c, "name": raw.class_names[c]} for c in raw.classes],
        "search_classes": list(search_classes),
        "splits": splits,
    }


def _replace_dir(staging: Path, target: Path) -> None:
    """Swap the finished ``staging`` folder in for ``target``, so a killed run never leaves half a dataset."""
    retired = None
    if target.exists():
        retired = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, retired)
    os.replace(staging, target)
    if retired is not None:
        shutil.rmtree(retired)
