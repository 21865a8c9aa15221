"""build_loader over a prepared tiny ImageNet: shapes and normalisation, seeded shuffling and augmentation (per
epoch, independent of workers), DDP sharding, drop_last, checksum and stale-params refusals."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from data_fixtures import data_params, write_image_folder
from torchvision.transforms.v2 import functional as F

from densenas.data import build_loader, prepare, read_manifest, set_loader_epoch
from densenas.data.loaders import IMAGENET_MEAN, IMAGENET_STD, random_resized_crop_box
from densenas.data.packed import PackReader, decode_rgb
from densenas.distributed import DistContext
from densenas.errors import DensenasError

PARAMS = data_params(on_corrupt="skip")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    raw = write_image_folder(tmp_path_factory.mktemp("imagenet"))
    out = tmp_path_factory.mktemp("prepared") / "tiny"
    prepare([str(raw)], out, PARAMS)
    return out


def _batches(loader: torch.utils.data.DataLoader, epoch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    set_loader_epoch(loader, epoch)
    return list(loader)


def test_eval_batch_is_resized_cropped_and_normalised(prepared: Path) -> None:
    loader = build_loader(prepared, "val", PARAMS, train=False, batch_size=4, seed=0)
    images, labels = next(iter(loader))
    assert images.shape == (4, 3, 24, 24) and images.dtype == torch.float32
    assert labels.dtype == torch.int64 and labels.tolist() == [0, 0, 0, 1], "eval keeps the stored order"
    reader = PackReader(prepared / "val")
    expected = F.center_crop(F.resize(decode_rgb(reader.read(0)), [28], antialias=True), [24, 24]).float()
    expected = (expected - torch.tensor(IMAGENET_MEAN).view(3, 1, 1) * 255) / (torch.tensor(IMAGENET_STD).view(3, 1, 1)
                                                                                * 255)
    torch.testing.assert_close(images[0], expected)
    assert len(loader) == 3, "eval keeps the last partial batch: ceil(9 / 4)"


def test_train_batches_follow_seed_and_epoch(prepared: Path) -> None:
    first = build_loader(prepared, "search_train", PARAMS, train=True, batch_size=4, seed=3)
    second = build_loader(prepared, "search_train", PARAMS, train=True, batch_size=4, seed=3)
    other = build_loader(prepared, "search_train", PARAMS, train=True, batch_size=4, seed=4)
    epoch0, again, epoch1 = _batches(first, 0), _batches(second, 0), _batches(first, 1)
    assert len(epoch0) == 3, "training drops the last partial batch: 15 // 4"
    for (x, y), (x2, y2) in zip(epoch0, again, strict=True):
        assert torch.equal(x, x2) and torch.equal(y, y2), "same seed and epoch: same batches"
    assert not torch.equal(epoch0[0][0], epoch1[0][0]), "a new epoch reshuffles and re-augments"
    assert not torch.equal(epoch0[0][0], _batches(other, 0)[0][0]), "another seed, other batches"
    assert epoch0[0][0].shape == (4, 3, 24, 24)


def test_eval_transforms_can_be_shuffled(prepared: Path) -> None:
    plain = build_loader(prepared, "val", PARAMS, train=False, batch_size=9, seed=0)
    mixed = build_loader(prepared, "val", PARAMS, train=False, batch_size=9, seed=0, shuffle=True)
    (x, y), = _batches(plain, 0)
    (xs, ys), = _batches(mixed, 0)
    order = [index for _, index in mixed.sampler]
    assert order != sorted(order), "shuffle=True reorders an eval split"
    assert torch.equal(xs, x[order]) and torch.equal(ys, y[order]), "same eval images, shuffled"


def test_worker_processes_do_not_change_batches(prepared: Path) -> None:
    serial = build_loader(prepared, "search_train", PARAMS, train=True, batch_size=4, seed=1)
    parallel = build_loader(prepared, "search_train", data_params(on_corrupt="skip", workers=2), train=True,
                            batch_size=4, seed=1)
    for (x, y), (x2, y2) in zip(_batches(serial, 2), _batches(parallel, 2), strict=True):
        assert torch.equal(x, x2) and torch.equal(y, y2), "augmentation depends on (seed, epoch, index) only"


def test_ranks_partition_each_epoch(prepared: Path) -> None:
    def indices(rank: int, train: bool) -> list[int]:
        ctx = DistContext(rank=rank, world_size=2, local_rank=rank, device=torch.device("cpu"))
        loader = build_loader(prepared, "train", PARAMS, train=train, batch_size=2, seed=0, distributed=ctx,
                              drop_last=False)
        set_loader_epoch(loader, 5)
        return [index for epoch, index in loader.sampler if epoch == 5]

    for train in (True, False):
        rank0, rank1 = indices(0, train), indices(1, train)
        assert len(rank0) == len(rank1) == 15, "29 samples over 2 ranks, padded to 30"
        assert set(rank0) | set(rank1) == set(range(29)), f"train={train}: the ranks cover the split"


def test_read_manifest_gives_classes_per_split(prepared: Path, tmp_path: Path) -> None:
    splits = read_manifest(prepared)["splits"]
    assert {name: s["num_classes"] for name, s in splits.items()} == {
        "search_train": 2, "search_val": 2, "train": 3, "val": 3}
    with pytest.raises(DensenasError, match=r"manifest\.json: not found; run `densenas prepare` first"):
        read_manifest(tmp_path)


def test_changed_files_are_refused_by_name(prepared: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(prepared, copy)
    shard = copy / "val" / "images.bin"
    data = bytearray(shard.read_bytes())
    data[100] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(DensenasError, match=r"val/images\.bin: sha256 differs from the manifest's"):
        build_loader(copy, "val", PARAMS, train=False, batch_size=4, seed=0)
    (copy / "train" / "index.npy").write_bytes(b"")
    with pytest.raises(DensenasError, match=r"train/index\.npy: 0 bytes, the manifest says"):
        build_loader(copy, "train", PARAMS, train=False, batch_size=4, seed=0)


def test_stale_prepared_data_is_refused(prepared: Path) -> None:
    with pytest.raises(DensenasError, match=r"prepared with data\.max_images_per_class=None, but the params say 5"):
        build_loader(prepared, "train", data_params(on_corrupt="skip", max_images_per_class=5), train=True,
                     batch_size=4, seed=0)
    with pytest.raises(DensenasError, match="split 'test': expected one of"):
        build_loader(prepared, "test", PARAMS, train=True, batch_size=4, seed=0)


def test_random_resized_crop_box_stays_inside_with_scale_bounds() -> None:
    rng = np.random.default_rng(0)
    for _ in range(500):
        top, left, h, w = random_resized_crop_box(40, 60, 0.08, rng)
        assert 0 <= top and top + h <= 40 and 0 <= left and left + w <= 60
        assert 0.05 <= h * w / 2400 <= 1.0, f"area fraction {h * w / 2400:.3f}"
    assert random_resized_crop_box(10, 1000, 0.9, rng) == (0, 493, 10, 13), "fallback: centred, ratio clamped"
