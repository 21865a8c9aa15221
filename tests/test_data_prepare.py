"""`prepare` on a tiny ImageNet: class order, 80/20 search split of TRAIN files, caps, manifest, determinism,
corrupt files (both on_corrupt modes), and the same output from the ImageFolder tree and the official archives."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from data_fixtures import CORRUPT, EXACT, PACK_SHORT_SIDE, TRAIN_PER_CLASS, WNIDS, data_params, tiny_imagenet_files
from data_fixtures import write_archives as _write_archives
from data_fixtures import write_image_folder as _write_image_folder
from torchvision.io import decode_image

from densenas.atomic import sha256_file
from densenas.data import packed as packed_module
from densenas.data import prepare
from densenas.data.packed import PackReader
from densenas.errors import DensenasError

SORTED = tuple(sorted(WNIDS))
# torchvision 0.29 deprecates its image codecs (TorchCodec replaces them); we use them knowingly (pinned).


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_image_folder(tmp_path_factory.mktemp("imagenet"))


@pytest.fixture(scope="module")
def archives(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return _write_archives(tmp_path_factory.mktemp("archives"))


@pytest.fixture(scope="module")
def prepared(folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("prepared") / "tiny"
    prepare([str(folder)], out, data_params(on_corrupt="skip"))
    return out


def _manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


def _names(out: Path, split: str) -> list[str]:
    return (out / split / "names.txt").read_text().splitlines()


def test_classes_in_sorted_wnid_order_and_labels(prepared: Path) -> None:
    manifest = _manifest(prepared)
    assert [c["id"] for c in manifest["classes"]] == list(SORTED)
    assert manifest["search_classes"] == list(SORTED[:2]), "search subset: the first N sorted wnids"
    for split, classes in (("search_train", SORTED[:2]), ("search_val", SORTED[:2]), ("train", SORTED),
                           ("val", SORTED)):
        reader = PackReader(prepared / split)
        wnids = [name.split("/")[1] for name in _names(prepared, split)]
        assert [classes[label] for label in reader.labels] == wnids, f"{split}: labels index its class list"
        assert manifest["splits"][split]["num_classes"] == len(classes)


def test_search_split_is_80_20_of_sorted_train_files(prepared: Path) -> None:
    manifest = _manifest(prepared)
    assert manifest["splits"]["search_train"]["per_class"] == [8, 7], "8 of 10 per class; one corrupt skipped"
    assert manifest["splits"]["search_val"]["per_class"] == [2, 2]
    files = sorted(r for r in tiny_imagenet_files() if r.startswith(f"train/{SORTED[0]}/"))
    assert _names(prepared, "search_train")[:8] == files[:8]
    assert _names(prepared, "search_val")[:2] == files[8:], "search-val: the last 20 % of the TRAIN files (B5)"
    assert all(n.startswith("train/") for n in _names(prepared, "search_val"))


def test_manifest_counts_checksums_and_params(prepared: Path) -> None:
    manifest = _manifest(prepared)
    assert manifest["source"]["kind"] == "imagenet" and manifest["source"]["layout"] == "image_folder"
    assert manifest["params"]["num_search_classes"] == 2 and manifest["params"]["pack_short_side"] == PACK_SHORT_SIDE
    expected = {"search_train": 15, "search_val": 4, "train": 3 * TRAIN_PER_CLASS - 1, "val": 9}
    assert {s: v["count"] for s, v in manifest["splits"].items()} == expected
    for split, entry in manifest["splits"].items():
        assert len(PackReader(prepared / split)) == entry["count"] == sum(entry["per_class"])
        for name, meta in entry["files"].items():
            assert sha256_file(prepared / split / name) == meta["sha256"], f"{split}/{name}: checksum"
            assert (prepared / split / name).stat().st_size == meta["bytes"]


def test_images_resized_to_pack_short_side_or_kept(prepared: Path) -> None:
    reader = PackReader(prepared / "train")
    names = _names(prepared, "train")
    for i, name in enumerate(names):
        data = reader.read(i)
        image = decode_image(torch.frombuffer(data, dtype=torch.uint8))
        assert min(image.shape[-2:]) == PACK_SHORT_SIDE, f"{name}: shorter side {min(image.shape[-2:])}"
        if name == EXACT:
            assert bytes(data) == tiny_imagenet_files()[EXACT], "an image already at the size keeps its bytes"


def test_corrupt_file_skipped_and_listed(folder: Path, prepared: Path) -> None:
    skipped = _manifest(prepared)["splits"]["train"]["skipped"]
    assert [s["path"] for s in skipped] == [str(folder / CORRUPT)]
    assert "truncated" in skipped[0]["error"], skipped[0]["error"]
    assert CORRUPT not in _names(prepared, "train")


def test_corrupt_file_fails_by_path(folder: Path, tmp_path: Path) -> None:
    with pytest.raises(DensenasError, match=re.escape(f"{folder / CORRUPT}: unreadable image")):
        prepare([str(folder)], tmp_path / "out", data_params(on_corrupt="fail"))
    assert not (tmp_path / "out").exists(), "a failed prepare leaves no output folder"
    assert list(tmp_path.iterdir()) == [], "nor a staging folder"


def test_deterministic_and_layout_independent(folder: Path, archives: list[Path], prepared: Path,
                                              tmp_path: Path) -> None:
    params = data_params(on_corrupt="skip")
    again = prepare([str(folder)], tmp_path / "again", params)
    from_tars = prepare([str(p) for p in archives], tmp_path / "tars", params)
    first = _manifest(prepared)
    assert again == first, "same input, same manifest (with every file's checksum)"
    assert from_tars["source"]["layout"] == "archives"
    for split in first["splits"]:
        assert from_tars["splits"][split]["files"] == first["splits"][split]["files"], f"{split}: tars vs tree"
    assert from_tars["splits"]["train"]["skipped"][0]["path"].endswith(f"{SORTED[1]}.tar/{Path(CORRUPT).name}")
    assert [c["name"] for c in from_tars["classes"]] == [f"thing {w[-1]}, item" for w in SORTED], "devkit words"


def test_parallel_workers_write_the_same_bytes(folder: Path, prepared: Path, tmp_path: Path) -> None:
    manifest = prepare([str(folder)], tmp_path / "par", data_params(on_corrupt="skip", workers=2))
    assert manifest["splits"] == _manifest(prepared)["splits"]


def test_cap_takes_the_first_sorted_files(folder: Path, tmp_path: Path) -> None:
    manifest = prepare([str(folder)], tmp_path / "cap", data_params(on_corrupt="skip", max_images_per_class=3))
    assert manifest["splits"]["search_train"]["per_class"] == [3, 3]
    assert manifest["splits"]["search_val"]["per_class"] == [2, 2]
    assert manifest["splits"]["val"]["per_class"] == [3, 3, 3]
    files = sorted(r for r in tiny_imagenet_files() if r.startswith(f"train/{SORTED[0]}/"))
    assert _names(tmp_path / "cap", "train")[:3] == files[:3]
    assert _names(tmp_path / "cap", "search_val")[:2] == files[8:10]


def test_search_cap_limits_only_the_search_splits(folder: Path, tmp_path: Path) -> None:
    manifest = prepare([str(folder)], tmp_path / "cap", data_params(on_corrupt="skip", max_images_per_class=3,
                                                                   max_search_images_per_class=1))
    assert manifest["splits"]["search_train"]["per_class"] == [1, 1]
    assert manifest["splits"]["search_val"]["per_class"] == [1, 1]
    assert manifest["splits"]["train"]["per_class"] == [3, 3, 3]
    assert manifest["params"]["max_search_images_per_class"] == 1


def test_class_list_file_sets_subset_and_label_order(folder: Path, tmp_path: Path) -> None:
    listing = tmp_path / "classes.txt"
    listing.write_text(f"# my subset\n{SORTED[2]}\n\n{SORTED[0]}  # second\n")
    manifest = prepare([str(folder)], tmp_path / "listed", data_params(class_list=str(listing), on_corrupt="skip"))
    assert manifest["search_classes"] == [SORTED[2], SORTED[0]]
    labels = PackReader(tmp_path / "listed" / "search_train").labels
    assert np.array_equal(labels, [0] * 8 + [1] * 8)
    listing.write_text("n12345678\n")
    with pytest.raises(DensenasError, match=r"classes.txt:1: unknown class 'n12345678'"):
        prepare([str(folder)], tmp_path / "bad", data_params(class_list=str(listing)))


def test_refuses_bad_inputs(folder: Path, tmp_path: Path) -> None:
    with pytest.raises(DensenasError, match="num_search_classes: 5 exceeds the 3 classes"):
        prepare([str(folder)], tmp_path / "o", data_params(num_search_classes=5))
    with pytest.raises(DensenasError, match=r"pack_short_side: 20 is below data\.input_size 24"):
        prepare([str(folder)], tmp_path / "o", data_params(pack_short_side=20))
    with pytest.raises(DensenasError, match="expected an ImageFolder tree"):
        prepare([str(tmp_path)], tmp_path / "o", data_params())


def test_disk_full_while_packing_keeps_the_previous_dataset(folder: Path, prepared: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 17: the shard of a split is written to /dev/full (ENOSPC from the kernel): one named error, the
    dataset prepared before is untouched, the staging folder is gone, and a re-run with space writes it again."""
    out = tmp_path / "tiny"
    shutil.copytree(prepared, out)
    before = {p.relative_to(out): sha256_file(p) for p in out.rglob("*") if p.is_file()}
    real_open = open

    def full_disk(file: object, mode: str = "r", *args: object, **kwargs: object) -> object:
        return real_open("/dev/full" if "w" in mode else file, mode, *args, **kwargs)

    monkeypatch.setattr(packed_module, "open", full_disk, raising=False)
    with pytest.raises(DensenasError, match=rf"{out}: cannot write the output \(No space left on device"):
        prepare([str(folder)], out, data_params(on_corrupt="skip"))
    assert {p.relative_to(out): sha256_file(p) for p in out.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny"], "a staging folder was left behind"
    monkeypatch.undo()
    prepare([str(folder)], out, data_params(on_corrupt="skip"))
    assert {p.relative_to(out): sha256_file(p) for p in out.rglob("*") if p.is_file()} == before
