"""The embedded default: `densenas prepare` on Fashion-MNIST (Debian's dataset-fashion-mnist, installed by
install.sh) at a small cap, then a batch of the preset's shape; and the error when the files are missing."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from densenas.config import load_params
from densenas.data import build_loader, prepare, read_manifest
from densenas.data.packed import PackReader, decode_rgb
from densenas.errors import DensenasError

REPO = Path(__file__).resolve().parents[1]
CAP = 12


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    params = load_params(REPO / "params.yaml")
    raw = Path(params.data.raw_dir)
    assert (raw / "train-images-idx3-ubyte.gz").is_file(), \
        f"{raw}: Fashion-MNIST missing; run ./install.sh or 'sudo apt-get install dataset-fashion-mnist'"
    out = tmp_path_factory.mktemp("prepared") / "fashion_mnist"
    command = [sys.executable, "-m", "densenas.cli", "--set", f"data.max_images_per_class={CAP}",
               "--set", f"data.max_search_images_per_class={CAP}", "prepare",
               "--out", str(out)]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert f"search_train {10 * CAP} (10 classes, 0 skipped)" in result.stderr
    return out


def test_prepared_splits_counts_and_sizes(prepared: Path) -> None:
    manifest = read_manifest(prepared)
    assert manifest["source"]["kind"] == "fashion_mnist"
    assert [c["id"] for c in manifest["classes"]][:3] == ["tshirt_top", "trouser", "pullover"], "label order"
    for split in ("search_train", "search_val", "train", "val"):
        assert manifest["splits"][split]["per_class"] == [CAP] * 10, split
    names = (prepared / "search_val" / "names.txt").read_text().split()
    assert all(n.startswith("train/") for n in names), "search-val comes from the 60k train set"
    val_names = (prepared / "val" / "names.txt").read_text().split()
    assert all(n.startswith("val/") for n in val_names), "val is the t10k set"
    image = decode_rgb(PackReader(prepared / "train").read(0))
    assert image.shape == (3, 37, 37), "stored at pack_short_side, 3-channel"


def test_loader_batch_has_the_preset_shape(prepared: Path) -> None:
    data = load_params(REPO / "params.yaml", overrides={"data": {"max_images_per_class": CAP,
                                                                      "max_search_images_per_class": CAP}}).data
    for split, train in (("search_train", True), ("val", False)):
        images, labels = next(iter(build_loader(prepared, split, data, train=train, batch_size=16, seed=2)))
        assert images.shape == (16, 3, 32, 32) and images.dtype == torch.float32, split
        assert 0 <= int(labels.min()) and int(labels.max()) < 10


def test_missing_files_say_how_to_get_them(tmp_path: Path) -> None:
    data = replace(load_params(REPO / "params.yaml").data, raw_dir=str(tmp_path))
    with pytest.raises(DensenasError, match=r"apt-get install dataset-fashion-mnist.*data\.raw_dir"):
        prepare([str(tmp_path)], tmp_path / "out", data)
