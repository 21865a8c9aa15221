"""Params: the paper preset holds SPEC's values key by key; bad params fail naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from densenas.config import command_line_overrides, load_params, parse_set_items, set_items
from densenas.errors import DensenasError

REPO = Path(__file__).resolve().parents[1]

# SPEC.md §2.2, §2.5, §6.3, §6.4 (Q1: floor 1e-5), §8.2, §6.1
PAPER_VALUES = {
    "dataset": "imagenet",
    "data.num_search_classes": 100,
    "data.search_train_fraction": 0.8,
    "data.input_size": 224,
    "data.eval_resize": 256,
    "data.min_scale": 0.08,
    "search.spaces.mbv2.epochs": 150,
    "search.spaces.mbv2.warmup_epochs": 50,
    "search.spaces.mbv2.val_start_epoch": 120,
    "search.spaces.mbv2.batch_size": 352,
    "search.spaces.resnet.epochs": 70,
    "search.spaces.resnet.warmup_epochs": 10,
    "search.spaces.resnet.val_start_epoch": 50,
    "search.spaces.resnet.batch_size": 512,
    "search.spaces.mbv2.weight_sample_num": 1,
    "search.spaces.mbv2.arch_sample_num": 2,
    "search.spaces.mbv2.arch_policy": "prob",
    "search.spaces.mbv2.sample_policy": "prob",
    "search.spaces.mbv2.variants.lat_c.objective": "latency",
    "search.spaces.mbv2.variants.lat_c.lambda": 0.15,
    "search.spaces.mbv2.variants.lat_c.tau": 15.0,
    "search.spaces.resnet.variants.flops_r1.objective": "flops",
    "search.spaces.resnet.variants.flops_r1.lambda": 0.2,
    "search.spaces.resnet.variants.flops_r1.tau": 1700.0,
    "search.spaces.resnet.variants.flops_r2.lambda": 0.2,
    "search.spaces.resnet.variants.flops_r2.tau": 3500.0,
    "train.epochs": 240,
    "train.batch_size": 1024,
    "train.lr": 0.5,
    "train.min_lr": 1e-5,
    "train.momentum": 0.9,
    "train.weight_decay": 4e-5,
    "train.label_smoothing": 0.1,
    "train.bn_momentum": 0.1,
    "seed": 2,
}
for _space in ("mbv2", "resnet"):
    PAPER_VALUES |= {
        f"search.spaces.{_space}.weight.lr": 0.2,
        f"search.spaces.{_space}.weight.min_lr": 1e-5,
        f"search.spaces.{_space}.weight.momentum": 0.9,
        f"search.spaces.{_space}.weight.weight_decay": 4e-5,
        f"search.spaces.{_space}.arch.alpha_lr": 3e-4,
        f"search.spaces.{_space}.arch.beta_lr": 3e-4,
        f"search.spaces.{_space}.arch.betas": [0.5, 0.999],
        f"search.spaces.{_space}.arch.weight_decay": 1e-3,
    }


@pytest.mark.parametrize("key", sorted(PAPER_VALUES))
def test_paper_preset_holds_spec_values(key: str) -> None:
    node = load_params(REPO / "params.yaml", preset="paper").raw
    for part in key.split("."):
        node = node[part]
    assert node == PAPER_VALUES[key], f"{key}: expected {PAPER_VALUES[key]!r}, got {node!r}"


def test_typed_objects() -> None:
    params = load_params(REPO / "params.yaml", preset="paper")
    assert params.search.spaces["mbv2"].arch.betas == (0.5, 0.999)
    assert params.search.spaces["resnet"].variants["flops_r1"].lambda_ == 0.2
    assert params.train.effective_lr == 0.5
    assert params.preset == "paper"


def _write(tmp_path: Path, mutate) -> Path:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    mutate(raw)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda r: r["train"].update(epochs="many"), "train.epochs: expected integer"),
        (lambda r: r["train"].update(epochs=0), "train.epochs: expected a value with minimum 1"),
        (lambda r: r["search"].update(spacez=1), "search: unknown key 'spacez'"),
        (lambda r: r["data"].update(search_train_fraction=1.5), "data.search_train_fraction"),
        (lambda r: r["search"]["spaces"]["mbv2"]["variants"]["lat_c"].update(objective="energy"),
         "search.spaces.mbv2.variants.lat_c.objective: expected one of"),
        (lambda r: r.pop("seed"), "'seed' is required"),
    ],
)
def test_bad_params_name_the_key(tmp_path: Path, mutate, message: str) -> None:
    with pytest.raises(DensenasError, match=message):
        load_params(_write(tmp_path, mutate))


def test_command_line_config_values_are_typed_and_round_trip_through_set_flags() -> None:
    """Snakemake reads nested `--config` values as strings; they become typed overrides (not `preset`), and the
    `--set` flags the rules pass to the stages parse back to the same mapping."""
    snakemake_config = {"preset": "paper", "workflow": {"gpus_per_job": "8"}, "seed": 3,
                        "data": {"raw_dir": "/shared/imagenet", "input_size": "160", "pin_memory": "true"},
                        "search": {"spaces": {"mbv2": {"variants": {"lat_c": {"lambda": "0.15"}}}}}}
    overrides = command_line_overrides(snakemake_config)
    assert overrides == {"workflow": {"gpus_per_job": 8}, "seed": 3,
                         "data": {"raw_dir": "/shared/imagenet", "input_size": 160, "pin_memory": True},
                         "search": {"spaces": {"mbv2": {"variants": {"lat_c": {"lambda": 0.15}}}}}}
    assert parse_set_items(set_items(overrides)) == overrides


def test_exponent_floats_without_a_dot_are_numbers_and_round_trip_through_set_flags() -> None:
    """json.dumps writes 1e-05 without a dot, which YAML 1.1 reads as a string: the rules' `--set` flags must bring
    such a float back as a float (and a plain `--set train.min_lr=1e-5` must mean the number)."""
    overrides = {"train": {"min_lr": 1e-05, "lr": 2e-4, "weight_decay": 4e-5}, "search": {"lam": -3E+2}}
    assert parse_set_items(set_items(overrides)) == overrides
    assert parse_set_items(["train.min_lr=1e-5", "data.raw_dir=1e5x"]) == {"train": {"min_lr": 1e-5},
                                                                         "data": {"raw_dir": "1e5x"}}


def test_overrides_win_over_the_preset() -> None:
    """The trap of issue #15: a value set on the command line must survive `preset=paper`, which sets it too."""
    preset_value = load_params(REPO / "params.yaml", preset="paper").workflow.gpus_per_job
    mine = preset_value + 7
    params = load_params(REPO / "params.yaml", preset="paper", overrides={"workflow": {"gpus_per_job": mine}})
    assert params.workflow.gpus_per_job == mine and params.preset == "paper"
