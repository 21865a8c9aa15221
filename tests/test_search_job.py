"""`make_job`: which cost table a search uses (`lut.source`) and how that is recorded, without running a search."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from densenas.config import load_params
from densenas.distributed import DistContext
from densenas.errors import DensenasError
from densenas.official_lut import import_official_lut
from densenas.search.job import make_job

REPO = Path(__file__).resolve().parents[1]
CPU = DistContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


@pytest.fixture
def prepared(tmp_path: Path) -> Path:
    """A manifest only: make_job reads the class counts, never the images."""
    split = {"num_classes": 10, "count": 0, "per_class": [], "files": {}}
    manifest = {"format": "densenas-packed/1", "params": {},
                "splits": {name: dict(split) for name in ("search_train", "search_val", "train", "val")}}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    return tmp_path


def _job(prepared: Path, lut: Path | None, preset: str | None = None, **overrides: object):
    params = load_params(REPO / "params.yaml", preset=preset, overrides=_nested(overrides))
    return make_job(params, CPU, space_name="mbv2", variant="lat_c", lut=lut, prepared_dir=prepared,
                    out_dir=prepared / "out", warmup_from=None)


def _nested(flat: dict[str, object]) -> dict[str, object]:
    nested: dict[str, object] = {}
    for key, value in flat.items():
        node = nested
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return nested


def test_resolved_lut_source_paper_official_embedded_measured() -> None:
    assert load_params(REPO / "params.yaml").lut.source == "measured"
    assert load_params(REPO / "params.yaml", preset="paper").lut.source == "official"


def test_official_source_searches_the_shipped_table_row_by_row(prepared: Path) -> None:
    job = _job(prepared, None, preset="paper", dataset="x")
    official, _ = import_official_lut("lat_list_densenas_mbv2_xp32", "mbv2")
    assert job.info["lut_source"] == "official"
    source = job.info["cost_source"]
    assert (source["lut"], source["batch"], source["input_size"]) == ("lat_list_densenas_mbv2_xp32", 32, 224)
    assert "TITAN Xp" in source["device"]
    # every stacked layer keeps its own row (not the per-signature mean of a LUT file)
    for got, want in zip(job.cost_table.stacks, official.stacks, strict=True):
        assert torch.equal(got, want)
    assert job.cost_table.stem == official.stem


def test_measured_source_needs_and_records_the_lut_file(prepared: Path, tmp_path: Path, run_cli) -> None:
    with pytest.raises(DensenasError, match="needs a LUT"):
        _job(prepared, None)
    lut = tmp_path / "lut.json"
    run_cli("lut", "--space", "mbv2", "--from-official", "lat_list_densenas_mbv2_xp32", "--out", str(lut))
    job = _job(prepared, lut)
    assert job.info["lut_source"] == "measured" and job.info["cost_source"]["lut"] == str(lut)


def test_switching_the_source_changes_the_search_identity(prepared: Path, tmp_path: Path, run_cli) -> None:
    lut = tmp_path / "lut.json"
    run_cli("lut", "--space", "mbv2", "--from-official", "lat_list_densenas_mbv2_xp32", "--out", str(lut))
    measured = _job(prepared, lut)
    official = _job(prepared, lut, **{"lut.source": "official"})
    assert official.info["lut_source"] == "official", "lut.source official ignores --lut"
    assert measured.identity["digest"] != official.identity["digest"]


def test_best_supernet_val_needs_a_validated_search_epoch(prepared: Path) -> None:
    """The embedded schedule validates no search epoch (val_start_epoch = epochs): refused before any work."""
    last = load_params(REPO / "params.yaml").search.spaces["mbv2"].val_start_epoch
    with pytest.raises(DensenasError, match=rf"retrain_epoch is best_supernet_val .*mbv2.val_start_epoch \({last}\)"):
        _job(prepared, None, **{"search.retrain_epoch": "best_supernet_val", "lut.source": "official"})
    job = _job(prepared, None, **{"search.retrain_epoch": "best_supernet_val", "lut.source": "official",
                                  "search.spaces.mbv2.val_start_epoch": 3})
    assert job.retrain_epoch == "best_supernet_val"


def test_bn_groups_must_fit_the_per_process_batch(prepared: Path) -> None:
    """Paper preset: groups of 88 in 352 images fit one process (or 4); on 8 processes (44 each) they would span
    two ranks, which is refused by name."""
    params = load_params(REPO / "params.yaml", preset="paper")
    assert params.search.spaces["mbv2"].bn_group_size == 88
    assert params.search.spaces["resnet"].bn_group_size == 128
    assert load_params(REPO / "params.yaml").search.spaces["mbv2"].bn_group_size is None
    for world in (1, 4):
        ctx = DistContext(rank=0, world_size=world, local_rank=0, device=torch.device("cpu"))
        make_job(params, ctx, space_name="mbv2", variant="lat_c", lut=None, prepared_dir=prepared,
                 out_dir=prepared / "out", warmup_from=None)
    eight = DistContext(rank=0, world_size=8, local_rank=0, device=torch.device("cpu"))
    with pytest.raises(DensenasError, match=r"bn_group_size 88 exceeds the per-process batch 44 .* at most 4"):
        make_job(params, eight, space_name="mbv2", variant="lat_c", lut=None, prepared_dir=prepared,
                 out_dir=prepared / "out", warmup_from=None)
    with pytest.raises(DensenasError, match="bn_group_size 5 does not divide the per-process batch 32"):
        _job(prepared, None, **{"lut.source": "official", "search.spaces.mbv2.bn_group_size": 5})


@pytest.mark.parametrize("key, value", [("arch.alpha_lr", 0.05), ("arch_policy", "prob"), ("arch_sample_num", 3),
                                        ("sample_policy", "uniform")])
def test_the_warmup_identity_leaves_out_what_only_the_search_epochs_use(prepared: Path, tmp_path: Path, run_cli,
                                                                         key: str, value: object) -> None:
    """No warm-up step uses Adam on α/β or the after-warm-up sampling, so one warm-up serves any of them; the
    search's identity does not."""
    lut = tmp_path / "lut.json"
    run_cli("lut", "--space", "mbv2", "--from-official", "lat_list_densenas_mbv2_xp32", "--out", str(lut))
    base = _job(prepared, lut)
    changed = _job(prepared, lut, **{f"search.spaces.mbv2.{key}": value})
    assert changed.warmup_identity == base.warmup_identity
    assert changed.identity["digest"] != base.identity["digest"], f"a resumed search must refuse another {key}"
    longer = _job(prepared, lut, **{"search.spaces.mbv2.warmup_epochs": 5})
    assert longer.warmup_identity != base.warmup_identity
