"""Readers of the raw datasets: an ImageNet ImageFolder tree, the official ILSVRC2012 archives, Fashion-MNIST IDX.

Each reader lists the train and val samples per class in a canonical order (sorted wnids and sorted file names,
SPEC §12 B6) without decoding anything; `densenas.data.prepare` validates, resizes and packs them.
"""

from __future__ import annotations

import io
import math
import os
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from densenas.errors import DensenasError

# Names of the official archives (the same as torchvision.datasets.ImageNet expects).
TRAIN_ARCHIVE = "ILSVRC2012_img_train.tar"
VAL_ARCHIVE = "ILSVRC2012_img_val.tar"
DEVKIT_ARCHIVE = "ILSVRC2012_devkit_t12.tar.gz"
DEVKIT_META = "ILSVRC2012_devkit_t12/data/meta.mat"
DEVKIT_VAL_TRUTH = "ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt"

# Formats torchvision.io.decode_image reads; other files in a class folder are not images (as in ImageFolder).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")

IDX_MAX_BYTES = 256 * 2**20  # decompressed size of one IDX file (Fashion-MNIST's largest: 45 MiB)
FASHION_MNIST_SHAPE = (28, 28)  # pixels of every Fashion-MNIST image
FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "val": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
# Class ids in label order (the dataset's canonical order); names as published with the dataset.
FASHION_MNIST_CLASSES = (
    ("tshirt_top", "T-shirt/top"), ("trouser", "Trouser"), ("pullover", "Pullover"), ("dress", "Dress"),
    ("coat", "Coat"), ("sandal", "Sandal"), ("shirt", "Shirt"), ("sneaker", "Sneaker"), ("bag", "Bag"),
    ("ankle_boot", "Ankle boot"),
)
FASHION_MNIST_HELP = ("install Debian's package with 'sudo apt-get install dataset-fashion-mnist', or set "
                      "data.raw_dir to a folder holding the four Fashion-MNIST IDX .gz files")


@dataclass(frozen=True, slots=True)
class ByteRange:
    """Encoded image bytes inside a file: a whole image file (size -1), or a member of a (nested) tar archive."""

    path: str
    offset: int = 0
    size: int = -1

    def read(self) -> bytes:
        with open(self.path, "rb") as handle:
            if self.size < 0:
                return handle.read()
            return os.pread(handle.fileno(), self.size, self.offset)


@dataclass(frozen=True, slots=True, eq=False)
class Sample:
    """One image: ``name`` is the same for every layout of a dataset; ``origin`` says where it was read from."""

    name: str
    origin: str
    data: ByteRange | np.ndarray  # encoded bytes, or raw pixels (H, W) uint8 of a pixel-array source


@dataclass(frozen=True)
class RawDataset:
    """Samples per class id for the train and val sets; ``classes`` in the source's canonical order."""

    kind: str
    layout: str
    inputs: tuple[str, ...]
    classes: tuple[str, ...]
    class_names: dict[str, str]
    train: dict[str, list[Sample]]
    val: dict[str, list[Sample]]


def read_raw(kind: str, inputs: list[str]) -> RawDataset:
    """The reader for ``kind`` (``imagenet`` or ``fashion_mnist``) applied to a folder or a list of archives."""
    if kind == "fashion_mnist":
        if len(inputs) != 1 or not Path(inputs[0]).is_dir():
            raise DensenasError(f"{' '.join(inputs)}: not a folder of Fashion-MNIST IDX .gz files; "
                                f"{FASHION_MNIST_HELP}")
        return read_fashion_mnist(Path(inputs[0]))
    if kind != "imagenet":
        raise DensenasError(f"data.source: expected imagenet or fashion_mnist, got {kind!r}")
    if len(inputs) == 1 and Path(inputs[0]).is_dir():
        root = Path(inputs[0])
        if (root / "train").is_dir():
            return read_image_folder(root)
        if (root / TRAIN_ARCHIVE).is_file():
            return read_imagenet_archives(root / TRAIN_ARCHIVE, root / VAL_ARCHIVE, root / DEVKIT_ARCHIVE)
        raise DensenasError(f"{root}: expected an ImageFolder tree (train/<wnid>/, val/<wnid>/) or the official "
                            f"archives ({TRAIN_ARCHIVE}, {VAL_ARCHIVE}, {DEVKIT_ARCHIVE})")
    return read_imagenet_archives(*_archives_by_name([Path(p) for p in inputs]))


def _archives_by_name(paths: list[Path]) -> tuple[Path, Path, Path]:
    found: dict[str, Path] = {}
    for path in paths:
        for name in (TRAIN_ARCHIVE, VAL_ARCHIVE, DEVKIT_ARCHIVE):
            if path.name == name:
                found[name] = path
    missing = [name for name in (TRAIN_ARCHIVE, VAL_ARCHIVE, DEVKIT_ARCHIVE) if name not in found]
    if missing or len(paths) != 3:
        raise DensenasError(f"imagenet archives: expected {TRAIN_ARCHIVE}, {VAL_ARCHIVE} and {DEVKIT_ARCHIVE}, "
                            f"got {[str(p) for p in paths]}")
    return found[TRAIN_ARCHIVE], found[VAL_ARCHIVE], found[DEVKIT_ARCHIVE]


# --- ImageNet as an ImageFolder tree -------------------------------------------------------------------------


def read_image_folder(root: Path) -> RawDataset:
    """``root/train/<wnid>/*`` and ``root/val/<wnid>/*``; classes are the sorted wnids of ``train/``."""
    train = _folder_split(root, "train")
    val = _folder_split(root, "val")
    classes = tuple(sorted(train))
    _check_same_classes(classes, val, root / "val")
    return RawDataset(kind="imagenet", layout="image_folder", inputs=(str(root),), classes=classes,
                      class_names={c: c for c in classes}, train=train, val=val)


def _folder_split(root: Path, split: str) -> dict[str, list[Sample]]:
    folder = root / split
    if not folder.is_dir():
        raise DensenasError(f"{folder}: missing; an ImageFolder tree needs train/<wnid>/ and val/<wnid>/")
    samples: dict[str, list[Sample]] = {}
    for class_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        files = sorted(f.name for f in class_dir.iterdir() if f.name.lower().endswith(IMAGE_EXTENSIONS))
        if not files:  # a class without images would train a classifier output that never sees an example
            raise DensenasError(f"{class_dir}: no images (expected files ending in {', '.join(IMAGE_EXTENSIONS)}, "
                                "any case); add them or remove the class folder")
        samples[class_dir.name] = [
            Sample(name=f"{split}/{class_dir.name}/{f}", origin=str(class_dir / f), data=ByteRange(str(class_dir / f)))
            for f in files
        ]
    if not samples:
        raise DensenasError(f"{folder}: no class folders found (expected {split}/<wnid>/*.JPEG)")
    return samples


def _check_same_classes(classes: tuple[str, ...], val: dict[str, list[Sample]], where: Path) -> None:
    if tuple(sorted(val)) != classes:
        extra = sorted(set(val) - set(classes))
        missing = sorted(set(classes) - set(val))
        raise DensenasError(f"{where}: classes differ from train's (missing {missing[:5]}, extra {extra[:5]})")


# --- ImageNet as the official archives ----------------------------------------------------------------------


def read_imagenet_archives(train_tar: Path, val_tar: Path, devkit: Path) -> RawDataset:
    """Stream the official tars without extracting them: each sample is a byte range of the archive file.

    The train tar holds one tar per wnid; the val tar holds flat files labelled by the devkit's ground truth
    (the same parsing as torchvision.datasets.ImageNet, minus its md5 check and extraction to disk).
    """
    for path in (train_tar, val_tar, devkit):
        if not path.is_file():
            raise DensenasError(f"{path}: archive not found")
    class_names, val_wnids = read_devkit(devkit)
    train = _train_archive(train_tar)
    classes = tuple(sorted(train))
    val = _val_archive(val_tar, val_wnids)
    _check_same_classes(classes, val, val_tar)
    return RawDataset(kind="imagenet", layout="archives", inputs=(str(train_tar), str(val_tar), str(devkit)),
                      classes=classes, class_names={c: class_names.get(c, c) for c in classes}, train=train, val=val)


def _train_archive(path: Path) -> dict[str, list[Sample]]:
    samples: dict[str, list[Sample]] = {}
    with tarfile.open(path) as outer:
        for member in outer:
            if not (member.isreg() and member.name.endswith(".tar")):
                continue
            wnid = Path(member.name).stem
            inner_file = outer.extractfile(member)
            assert inner_file is not None  # a regular member always has a file object
            with tarfile.open(fileobj=inner_file) as inner:
                images = sorted((m for m in inner if m.isreg() and _is_image(m.name)), key=lambda m: m.name)
            if not images:
                raise DensenasError(f"{path}::{member.name}: no images in this class archive")
            samples[wnid] = [
                Sample(name=f"train/{wnid}/{Path(m.name).name}", origin=f"{path}::{member.name}/{m.name}",
                       data=ByteRange(str(path), member.offset_data + m.offset_data, m.size))
                for m in images
            ]
    if not samples:
        raise DensenasError(f"{path}: no per-class tars (<wnid>.tar) found")
    return samples


def _val_archive(path: Path, val_wnids: list[str]) -> dict[str, list[Sample]]:
    with tarfile.open(path) as tar:
        images = sorted((m for m in tar if m.isreg() and _is_image(m.name)), key=lambda m: Path(m.name).name)
    if len(images) != len(val_wnids):
        raise DensenasError(f"{path}: {len(images)} images but the devkit's ground truth labels {len(val_wnids)}")
    samples: dict[str, list[Sample]] = {}
    for member, wnid in zip(images, val_wnids, strict=True):
        name = Path(member.name).name
        samples.setdefault(wnid, []).append(
            Sample(name=f"val/{wnid}/{name}", origin=f"{path}::{member.name}",
                   data=ByteRange(str(path), member.offset_data, member.size)))
    return dict(sorted(samples.items()))


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def read_devkit(path: Path) -> tuple[dict[str, str], list[str]]:
    """wnid -> class words, and the wnid of each val image in file-name order (``ILSVRC2012_val_00000001`` first)."""
    from scipy.io import loadmat  # scipy comes with mlflow; only the archive layout needs it

    with tarfile.open(path) as tar:
        meta, truth = (_tar_member_bytes(tar, name, path) for name in (DEVKIT_META, DEVKIT_VAL_TRUTH))
    synsets = loadmat(io.BytesIO(meta), squeeze_me=True)["synsets"]
    leaves = [s for s in synsets if int(s[4]) == 0]  # fields: ILSVRC2012_ID, WNID, words, gloss, num_children
    id_to_wnid = {int(s[0]): str(s[1]) for s in leaves}
    class_names = {str(s[1]): str(s[2]) for s in leaves}
    try:
        val_wnids = [id_to_wnid[int(line)] for line in truth.decode().split()]
    except (KeyError, ValueError) as exc:
        raise DensenasError(f"{path}: {DEVKIT_VAL_TRUTH}: not a class id of meta.mat: {exc}") from None
    return class_names, val_wnids


def _tar_member_bytes(tar: tarfile.TarFile, name: str, path: Path) -> bytes:
    try:
        handle = tar.extractfile(name)
    except KeyError:
        handle = None
    if handle is None:
        raise DensenasError(f"{path}: missing {name}")
    return handle.read()


# --- Fashion-MNIST (the embedded default) -------------------------------------------------------------------


def read_fashion_mnist(folder: Path) -> RawDataset:
    """The 60k train and 10k t10k images as raw 28x28 pixel samples, classes in label order."""
    missing = [name for pair in FASHION_MNIST_FILES.values() for name in pair if not (folder / name).is_file()]
    if missing:
        raise DensenasError(f"{folder}: Fashion-MNIST files missing ({', '.join(missing)}); {FASHION_MNIST_HELP}")
    ids = tuple(c for c, _ in FASHION_MNIST_CLASSES)
    splits = {}
    for split, (images_name, labels_name) in FASHION_MNIST_FILES.items():
        images = read_idx(folder / images_name, ndim=3)
        labels = read_idx(folder / labels_name, ndim=1)
        if len(images) != len(labels):
            raise DensenasError(f"{folder / labels_name}: {len(labels)} labels for the {len(images)} images of "
                                f"{images_name}")
        if images.shape[1:] != FASHION_MNIST_SHAPE:
            raise DensenasError(f"{folder / images_name}: images of {images.shape[1]}x{images.shape[2]} pixels, "
                                f"expected {FASHION_MNIST_SHAPE[0]}x{FASHION_MNIST_SHAPE[1]}")
        bad = np.flatnonzero(labels >= len(ids))
        if bad.size:
            raise DensenasError(f"{folder / labels_name}: label {int(labels[bad[0]])} at index {int(bad[0])} is out "
                                f"of range (expected 0 to {len(ids) - 1})")
        per_class: dict[str, list[Sample]] = {c: [] for c in ids}
        for index, (image, label) in enumerate(zip(images, labels, strict=True)):
            per_class[ids[label]].append(
                Sample(name=f"{split}/{ids[label]}/{index:05d}", origin=f"{folder / images_name}[{index}]", data=image))
        splits[split] = per_class
    return RawDataset(kind="fashion_mnist", layout="idx", inputs=(str(folder),), classes=ids,
                      class_names=dict(FASHION_MNIST_CLASSES), train=splits["train"], val=splits["val"])


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """An IDX file of unsigned bytes (magic 0x08, ``ndim`` dimensions), gzip-compressed."""
    try:
        inflate = zlib.decompressobj(wbits=31)  # gzip framing
        data = inflate.decompress(path.read_bytes(), IDX_MAX_BYTES + 1)
    except (OSError, EOFError, zlib.error) as exc:
        raise DensenasError(f"{path}: not a readable .gz file ({exc})") from None
    if len(data) > IDX_MAX_BYTES:  # a decompression bomb would fill memory before any check
        raise DensenasError(f"{path}: decompresses to more than {IDX_MAX_BYTES // 2**20} MiB; Fashion-MNIST's largest "
                            "file has 45 MiB")
    if not inflate.eof:
        raise DensenasError(f"{path}: not a readable .gz file (the compressed stream ends early: truncated?)")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DensenasError(f"{path}: {len(data)} bytes, shorter than the {header}-byte header of an IDX file")
    magic = int.from_bytes(data[:4], "big")
    if magic != 0x0800 + ndim:
        raise DensenasError(f"{path}: not an IDX file of {ndim}-d unsigned bytes (magic {magic:#x})")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    values = len(data) - header
    if values != math.prod(shape) or values == 0:
        raise DensenasError(f"{path}: the header promises {'x'.join(map(str, shape))} values, the file holds "
                            f"{values}{' (truncated?)' if values < math.prod(shape) else ''}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)
