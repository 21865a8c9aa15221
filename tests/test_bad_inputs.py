"""The bad-input catalogue (issue 8): every case runs `densenas` in a subprocess on one broken input (params,
presets, net_configs, LUT files, official tables, dataset trees, manifests, checkpoints) and must exit with code 2
and print exactly one line on stderr that names the file, key or value and what was expected, no traceback, while
its folder stays exactly as it was: no output written, no input changed.

All cases run from one module fixture through tests/cli_forkserver.py: torch and the CLI are imported once, then
each case runs in its own forked process (one per core at a time), as `python -m densenas.cli` would run it;
one case is cross-checked against a fresh interpreter. tests/test_cli.py holds 15 more params/net_config cases.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from conftest import REPO
from data_fixtures import data_params, write_image_folder

from densenas.checkpoint import save_checkpoint
from densenas.config import deep_merge
from densenas.data import prepare
from densenas.errors import DensenasError
from densenas.lut import build_lut, supernet_sites, with_content_sha256, write_lut
from densenas.official_lut import official_table_path
from densenas.registry import create_model
from densenas.spaces import build_topology, load_space
from densenas.train.trainer import architecture_digest

WORKERS = max(2, os.cpu_count() or 2)
CLI_ENV = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
TINY = {  # the tiny ImageNet of data_fixtures, and batches it can fill
    "data": {"source": "imagenet", "num_search_classes": 2, "max_images_per_class": None,
             "max_search_images_per_class": None, "input_size": 24, "eval_resize": 28, "pack_short_side": 32,
             "on_corrupt": "skip", "workers": 0},
    "search": {"spaces": {"mbv2": {"batch_size": 2}, "resnet": {"batch_size": 2}}},
    "train": {"batch_size": 4},
    "tracking": {"enabled": False},
}


@dataclass(frozen=True)
class World:
    """Valid inputs every case starts from; cases copy what they break into their own folder."""

    root: Path
    params: Path
    raw: Path
    prepared: Path
    lut: Path          # mbv2 latency LUT (synthetic values) for `search --variant lat_c`
    lut_resnet: Path
    lut_flops: Path


class Exploit:
    """Unpickling this would create the file ``marker``: a stand-in for any code a foreign pickle could run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))


# -- helpers that write one broken input into the case folder ``here`` and return its path -------------------

def _text(here: Path, name: str, text: str) -> str:
    path = here / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


def _yaml(here: Path, name: str, data: Any) -> str:
    return _text(here, name, yaml.safe_dump(data))


def _params(w: World, here: Path, mutate: Callable[[dict], Any]) -> str:
    raw = yaml.safe_load(w.params.read_text())
    mutate(raw)
    return _yaml(here, "params.yaml", raw)


def _json_edit(source: Path, here: Path, name: str, mutate: Callable[[dict], Any], restamp: bool = False) -> str:
    doc = json.loads(source.read_text())
    mutate(doc)
    return _text(here, name, json.dumps(with_content_sha256(doc) if restamp else doc))


def _tree(w: World, here: Path, mutate: Callable[[Path], Any]) -> str:
    tree = here / "raw"
    shutil.copytree(w.raw, tree)
    mutate(tree)
    return str(tree)


def _prepared(w: World, here: Path, mutate: Callable[[Path], Any]) -> str:
    copy = here / "prepared"
    shutil.copytree(w.prepared, copy)
    mutate(copy)
    return str(copy)


def _manifest(mutate: Callable[[dict], Any]) -> Callable[[Path], None]:
    def edit(prepared: Path) -> None:
        path = prepared / "manifest.json"
        manifest = json.loads(path.read_text())
        mutate(manifest)
        path.write_text(json.dumps(manifest))
    return edit


def _flip_byte(path: Path, pattern: bytes) -> None:
    data = bytearray(path.read_bytes())
    data[data.index(pattern) + 1] ^= 0x01
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


BLOCKS = [{"in_ch": 16, "out_ch": 16, "head_op": "mbconv_k3_t1", "stack_ops": [], "stride": 1},
          {"in_ch": 16, "out_ch": 24, "head_op": "mbconv_k3_t6", "stack_ops": [], "stride": 2}]
OFFICIAL_ENTRY = "[[16, 16], 'mbconv_k3_t1', [], 0, 1]"
UNKNOWN_CLASS_LIST = "n00000001\nn12345678\n"


def _random_arch(net_config: str, here: Path) -> list[str]:
    return ["random-arch", "--space", "mbv2", "--match", net_config, "--out", str(here / "net_config.json")]


def _search_lut(w: World, here: Path, lut: str, space: str = "mbv2", variant: str = "lat_c") -> list[str]:
    return ["search", "--space", space, "--variant", variant, "--lut", lut, "--data", str(w.prepared),
            "--out", str(here / "out")]


def _prepare(here: Path, source: str) -> list[str]:
    return ["prepare", "--source", source, "--out", str(here / "prepared")]


def _train(here: Path, data: str, model: str = "densenas_a") -> list[str]:
    return ["train", "--model", model, "--data", data, "--out", str(here / "out")]


def _official(here: Path, table: str, space: str = "mbv2") -> list[str]:
    return ["lut", "--space", space, "--from-official", table, "--out", str(here / "lut.json")]


def _resume_train(w: World, here: Path, write: Callable[[Path], Any]) -> list[str]:
    """`train` into a folder whose checkpoint.pt ``write`` made."""
    write(_empty(here / "out") / "checkpoint.pt")
    return _train(here, str(w.prepared))


def _resume_search(w: World, here: Path, identity: dict[str, Any]) -> list[str]:
    save_checkpoint(here / "out" / "checkpoint.pt", {"identity": identity})
    return ["search", "--space", "resnet", "--variant", "flops_r1", "--data", str(w.prepared),
            "--out", str(here / "out")]


def _evaluate(w: World, here: Path, identity: dict[str, Any]) -> list[str]:
    save_checkpoint(here / "best.pt", {"identity": identity})
    return ["evaluate", "--model", "densenas_a", "--data", str(w.prepared), "--checkpoint", str(here / "best.pt"),
            "--out", str(here / "metrics.json")]


def _official_edit(here: Path, mutate: Callable[[list], Any]) -> str:
    """The shipped official MBV2 table with one change."""
    table = json.loads(official_table_path("lat_list_densenas_mbv2_xp32").read_text())
    mutate(table)
    return _text(here, "t.json", json.dumps(table))


def _train_identity(model: str, arch_of: str) -> dict[str, Any]:
    return {"kind": "train", "model": model, "arch": architecture_digest(create_model(arch_of, num_classes=3)),
            "recipe": "0" * 12}


# Each case: (make(world, here) -> CLI args after the global options, substrings the one stderr line must hold).
# "{here}" in a substring stands for the case folder; a case that brings its own --params puts it in its args.
Make = Callable[[World, Path], list[str]]
CASES: dict[str, tuple[Make, tuple[str, ...]]] = {
    # params.yaml (the CLI validates before any stage work)
    "params: nested required key missing": (
        lambda w, h: ["--params", _params(w, h, lambda r: r["train"].pop("lr")), "params"],
        ("{here}/params.yaml", "train: 'lr' is required but missing")),
    "params: value outside the enum": (
        lambda w, h: ["--params", _params(w, h, lambda r: r["data"].update(source="cifar")), "params"],
        ("{here}/params.yaml", "data.source", "expected one of ['fashion_mnist', 'imagenet'], got 'cifar'")),
    "params: typo in a variant key": (
        lambda w, h: ["--params", _params(w, h, lambda r: r["search"]["spaces"]["mbv2"]["variants"]["lat_a"].update(
            lamda=0.1)), "params"],
        ("search.spaces.mbv2.variants.lat_a", "unknown key 'lamda'", "lambda")),
    "params: boolean expected": (
        lambda w, h: ["--params", _params(w, h, lambda r: r["tracking"].update(enabled=1)), "params"],
        ("tracking.enabled", "expected boolean, got int 1")),
    "params: float seed": (
        lambda w, h: ["--params", _params(w, h, lambda r: r.update(seed=2.5)), "params"],
        ("seed", "expected integer, got float 2.5")),
    "params: a list, not a mapping": (
        lambda w, h: ["--params", _yaml(h, "params.yaml", [1, 2]), "params"],
        ("{here}/params.yaml", "expected a mapping of params, got list")),
    "params: empty file": (
        lambda w, h: ["--params", _text(h, "params.yaml", ""), "params"],
        ("{here}/params.yaml", "expected a mapping of params, got NoneType")),
    "params: --set of an unknown key": (
        lambda w, h: ["--set", "train.epoch=3", "params"], ("train", "unknown key 'epoch'", "epochs")),
    "params: --set outside the enum": (
        lambda w, h: ["--set", "lut.device=gpu", "params"], ("lut.device", "expected one of ['cpu', 'cuda']")),
    # presets
    "preset: file sets 'preset' itself": (
        lambda w, h: ["--preset", _yaml(h, "p.yaml", {"preset": "paper"}), "params"],
        ("{here}/p.yaml", "key 'preset' is not allowed inside a preset")),
    "preset: file is a list": (
        lambda w, h: ["--preset", _yaml(h, "p.yaml", ["train"]), "params"],
        ("{here}/p.yaml", "expected a mapping of params, got list")),
    "preset: file is not YAML": (
        lambda w, h: ["--preset", _text(h, "p.yaml", "train: {epochs: [1"), "params"],
        ("{here}/p.yaml", "not valid YAML")),
    "preset: file sets a bad value": (
        lambda w, h: ["--preset", _yaml(h, "p.yaml", {"train": {"epochs": 0}}), "params"],
        ("with preset '{here}/p.yaml'", "train.epochs", "minimum 1, got 0")),
    # net_configs (JSON and the official string)
    "net_config: unknown top-level key": (
        lambda w, h: _random_arch(_text(h, "n.json", json.dumps(
            {"net_type": "mbv2", "last_dim": 64, "blocks": BLOCKS, "colour": "red"})), h),
        ("{here}/n.json", "(top level)", "'colour' was unexpected")),
    "net_config: blocks missing": (
        lambda w, h: _random_arch(_text(h, "n.json", json.dumps({"net_type": "mbv2", "last_dim": 64})), h),
        ("{here}/n.json", "'blocks' is a required property")),
    "net_config: unknown net_type": (
        lambda w, h: _random_arch(_text(h, "n.json", json.dumps({"net_type": "vgg", "blocks": BLOCKS})), h),
        ("{here}/n.json", "net_type", "'vgg' is not one of ['mbv2', 'res']")),
    "net_config: official string with code": (
        lambda w, h: _random_arch(_text(h, "n.txt", f"__import__('os').system('touch {h}/pwned')|{OFFICIAL_ENTRY}\n"
                                                    "net_type: mbv2\n"), h),
        ("{here}/n.txt: entry 0", "unexpected characters")),
    "net_config: official string, unbalanced brackets": (
        lambda w, h: _random_arch(_text(h, "n.txt", "[[16, 16], 'mbconv_k3_t1', [], 0, 1\nnet_type: mbv2\n"), h),
        ("{here}/n.txt: entry 0", "not a bracketed list")),
    "net_config: train --model with a bad stride": (
        lambda w, h: _train(h, str(w.prepared), _text(h, "n.json", json.dumps(
            {"net_type": "mbv2", "last_dim": 64, "blocks": [{**BLOCKS[0], "stride": 3}]}))),
        ("{here}/n.json", "blocks/0")),
    # LUT files, as `search --lut` reads them
    "lut: truncated JSON": (
        lambda w, h: _search_lut(w, h, _text(h, "lut.json", w.lut.read_text()[:5000])),
        ("{here}/lut.json", "not valid JSON")),
    "lut: schema (device missing)": (
        lambda w, h: _search_lut(w, h, _json_edit(w.lut, h, "lut.json", lambda d: d.pop("device"))),
        ("{here}/lut.json", "not a valid LUT file", "'device' is a required property")),
    "lut: entry edited after writing": (
        lambda w, h: _search_lut(w, h, _json_edit(
            w.lut, h, "lut.json", lambda d: next(iter(d["entries"].values())).update(mean=0.5))),
        ("{here}/lut.json", "content differs from its content_sha256")),
    "lut: measured for another space": (
        lambda w, h: _search_lut(w, h, str(w.lut_resnet)), ("lut_resnet.json", "space 'resnet', expected 'mbv2'")),
    "lut: FLOPs table for a latency variant": (
        lambda w, h: _search_lut(w, h, str(w.lut_flops)), ("lut_flops.json", "metric 'flops', expected 'latency'")),
    "lut: header says another input size": (
        lambda w, h: _search_lut(w, h, _json_edit(w.lut, h, "lut.json", lambda d: d.update(input_size=32), True)),
        ("{here}/lut.json", "lacks the mean of", "stem_mbv2|in=3x32x32")),
    "lut: header says another batch": (
        lambda w, h: _search_lut(w, h, _json_edit(w.lut, h, "lut.json", lambda d: d.update(batch=32), True)),
        ("{here}/lut.json", "lacks the mean of", "|b=32|")),
    # official nested-list tables, as `lut --from-official` converts them
    "official table: three parts, not four": (
        lambda w, h: _official(h, _text(h, "t.json", "[1.0, [], 2.0]")),
        ("{here}/t.json", "expected [stem, blocks, final, classifier], got a list of 3")),
    "official table: another space's table": (
        lambda w, h: _official(h, "lat_list_resv2_32"), ("lat_list_resv2_32", "[1] must list", "space 'mbv2'")),
    "official table: negative latency": (
        lambda w, h: _official(h, _official_edit(h, lambda t: t.__setitem__(0, -1.0))),
        ("{here}/t.json", "[0] (stem)", "expected a non-negative number, got -1.0")),
    "official table: NaN": (
        lambda w, h: _official(h, _official_edit(h, lambda t: t[1][2][0][0].__setitem__(1, float("nan")))),
        ("{here}/t.json", "[1][2] (node 3) heads: row 0", "expected a non-negative number, got nan")),
    "official table: a row of the wrong length": (
        lambda w, h: _official(h, _official_edit(h, lambda t: t[1][4][1][0].pop())),
        ("{here}/t.json", "[1][4] (node 5) stacked layers: row 0 must hold", "numbers, got")),
    "official table: Python code, not JSON": (
        lambda w, h: _official(h, _text(h, "t.json", "[__import__('os').getpid()]")),
        ("{here}/t.json", "not an official LUT (expected a JSON nested list")),
    # dataset trees, as `prepare` reads them
    "data tree: neither train/ nor archives": (
        lambda w, h: _prepare(h, _tree(w, h, lambda t: shutil.rmtree(t / "train"))),
        ("{here}/raw", "expected an ImageFolder tree (train/<wnid>/, val/<wnid>/)")),
    "data tree: val/ missing": (
        lambda w, h: _prepare(h, _tree(w, h, lambda t: shutil.rmtree(t / "val"))),
        ("{here}/raw/val: missing", "train/<wnid>/ and val/<wnid>/")),
    "data tree: a class missing from val/": (
        lambda w, h: _prepare(h, _tree(w, h, lambda t: shutil.rmtree(t / "val" / "n00000002"))),
        ("{here}/raw/val", "classes differ from train's (missing ['n00000002']")),
    "data tree: an empty class folder": (
        lambda w, h: _prepare(h, _tree(w, h, lambda t: (t / "train" / "n00000009").mkdir())),
        ("{here}/raw/train/n00000009: no images", ".jpg")),
    "data tree: no class folders": (
        lambda w, h: _prepare(h, _tree(w, h, lambda t: [shutil.rmtree(d) for d in (t / "train").iterdir()])),
        ("{here}/raw/train: no class folders found",)),
    "data tree: class list names an unknown class": (
        lambda w, h: ["--set", f"data.class_list={_text(h, 'classes.txt', UNKNOWN_CLASS_LIST)}",
                      *_prepare(h, str(w.raw))],
        ("{here}/classes.txt:2", "unknown class 'n12345678'")),
    "data tree: Fashion-MNIST files missing": (
        lambda w, h: ["--set", "data.source=fashion_mnist", *_prepare(h, str(_empty(h / "fm")))],
        ("{here}/fm", "Fashion-MNIST files missing", "apt-get install dataset-fashion-mnist")),
    "data tree: Fashion-MNIST file not gzip": (
        lambda w, h: ["--set", "data.source=fashion_mnist", *_prepare(h, _fake_fashion_mnist(h / "fm"))],
        ("{here}/fm/train-images-idx3-ubyte.gz", "not a readable .gz file")),
    "data params: packed side below the crop": (
        lambda w, h: ["--set", "data.pack_short_side=16", *_prepare(h, str(w.raw))],
        ("data.pack_short_side", "16 is below data.input_size 24")),
    # prepared datasets and their manifests, as `train` reads them
    "manifest: missing": (
        lambda w, h: _train(h, _prepared(w, h, lambda p: (p / "manifest.json").unlink())),
        ("{here}/prepared/manifest.json: not found", "run `densenas prepare` first")),
    "manifest: not JSON": (
        lambda w, h: _train(h, _prepared(w, h, lambda p: (p / "manifest.json").write_text('{"format": '))),
        ("{here}/prepared/manifest.json: not valid JSON",)),
    "manifest: another format": (
        lambda w, h: _train(h, _prepared(w, h, _manifest(lambda m: m.update(format="densenas-packed/0")))),
        ("{here}/prepared/manifest.json", "format 'densenas-packed/0', expected 'densenas-packed/1'")),
    "manifest: a split missing": (
        lambda w, h: _train(h, _prepared(w, h, _manifest(lambda m: m["splits"].pop("val")))),
        ("{here}/prepared/manifest.json", "splits.val missing")),
    "manifest: count edited": (
        lambda w, h: _train(h, _prepared(w, h, _manifest(lambda m: m["splits"]["train"].update(count=99)))),
        ("{here}/prepared/manifest.json", "splits.train.count is 99, the index holds 29")),
    "manifest: num_classes edited": (
        lambda w, h: _train(h, _prepared(w, h, _manifest(lambda m: m["splits"]["train"].update(num_classes=7)))),
        ("{here}/prepared/manifest.json", "splits.train.num_classes is 7", "per_class lists 3 classes")),
    "manifest: checksum edited": (
        lambda w, h: _train(h, _prepared(w, h, _manifest(
            lambda m: m["splits"]["train"]["files"]["images.bin"].update(sha256="0" * 64)))),
        ("{here}/prepared/train/images.bin", "sha256 differs from the manifest's")),
    "prepared data: shard truncated": (
        lambda w, h: _train(h, _prepared(w, h, lambda p: _truncate(p / "val" / "images.bin"))),
        ("{here}/prepared/val/images.bin", "bytes, the manifest says")),
    "prepared data: made with other params": (
        lambda w, h: ["--set", "data.max_images_per_class=5", *_train(h, str(w.prepared))],
        ("manifest.json", "prepared with data.max_images_per_class=None, but the params say 5")),
    # checkpoints, as `train`, `search` and `evaluate` resume or load them
    "checkpoint: another model's checkpoint.pt": (
        lambda w, h: _resume_train(w, h, lambda path: save_checkpoint(
            path, {"identity": _train_identity("densenas_b", "densenas_b")})),
        ("{here}/out/checkpoint.pt", "model='densenas_b', expected model='densenas_a'")),
    "checkpoint: another architecture under the same name": (
        lambda w, h: _resume_train(w, h, lambda path: save_checkpoint(
            path, {"identity": _train_identity("densenas_a", "densenas_c")})),
        ("{here}/out/checkpoint.pt", "checkpoint was made for arch=", "expected arch=")),
    "checkpoint: truncated": (
        lambda w, h: _resume_train(w, h, lambda path: (
            save_checkpoint(path, {"identity": {"kind": "train"}, "weights": torch.ones(4096)}), _truncate(path))),
        ("{here}/out/checkpoint.pt", "not a readable checkpoint")),
    "checkpoint: a plain state dict": (
        lambda w, h: _resume_train(w, h, lambda path: torch.save({"weight": torch.ones(3)}, path)),
        ("{here}/out/checkpoint.pt", "not a densenas checkpoint (no identity record)")),
    "checkpoint: a pickle that runs code": (
        lambda w, h: _resume_train(w, h, lambda path: torch.save(
            {"identity": {"kind": "train"}, "x": Exploit(h / "pwned")}, path)),
        ("{here}/out/checkpoint.pt", "not a readable checkpoint (UnpicklingError)")),
    "checkpoint: a flipped bit": (
        lambda w, h: _resume_train(w, h, lambda path: (
            save_checkpoint(path, {"identity": {"kind": "train"}, "weights": torch.full((64,), 1.2345)}),
            _flip_byte(path, torch.full((1,), 1.2345).numpy().tobytes()))),
        ("{here}/out/checkpoint.pt", "content differs from its recorded content_sha256")),
    "checkpoint: search resumed for another space": (
        lambda w, h: _resume_search(w, h, {"kind": "search", "space": "mbv2", "variant": "lat_c", "digest": "0"}),
        ("{here}/out/checkpoint.pt", "space='mbv2', expected space='resnet'")),
    "checkpoint: evaluate with another architecture's weights": (
        lambda w, h: _evaluate(w, h, _train_identity("densenas_b", "densenas_b")),
        ("{here}/best.pt", "checkpoint was made for arch=", "expected arch=")),
}


# Issue 17: the classes an independent probe found (tracebacks, wrong successes, hangs, unclear messages)
ALIAS_BOMB = "\n".join(["report:", "  x0: &x0 [a, a, a, a, a, a, a, a, a, a]",
                        *(f"  x{i}: &x{i} [{', '.join([f'*x{i - 1}'] * 10)}]" for i in range(1, 7))])
PYTHON_TAG = "x: !!python/object/apply:os.getpid []\n"
NO_STRIDE = [{k: v for k, v in BLOCKS[0].items() if k != "stride"}]
HUGE_WIDTH = [{"in_ch": 16, "out_ch": 60000, "head_op": "mbconv_k3_t6", "stack_ops": ["mbconv_k3_t6"] * 4,
               "stride": 1}]

CASES.update({
    "issue 17: --set value not YAML": (
        lambda w, h: ["--set", "train.epochs=[1", "params"], ("--set train.epochs", "not valid YAML", "line 1")),
    "issue 17: --set undefined alias": (
        lambda w, h: ["--set", "train.epochs=*x", "params"], ("--set train.epochs", "undefined alias 'x'")),
    "issue 17: --set under a value set before": (
        lambda w, h: ["--set", "train=3", "--set", "train.epochs=2", "params"],
        ("--set 'train.epochs=2'", "an earlier --set gave train a value")),
    "issue 17: params with a python tag": (
        lambda w, h: ["--params", _text(h, "params.yaml", w.params.read_text() + PYTHON_TAG), "params"],
        ("{here}/params.yaml", "python/object/apply:os.getpid")),
    "issue 17: params nested 3000 deep": (
        lambda w, h: ["--params", _text(h, "params.yaml", "seed: " + "[" * 3000 + "]" * 3000 + "\n"), "params"],
        ("{here}/params.yaml", "nested deeper than 64 levels")),
    "issue 17: params not UTF-8": (
        lambda w, h: ["--params", _bytes(h, "params.yaml", w.params.read_bytes() + b"# caf\xe9\n"), "params"],
        ("{here}/params.yaml", "not UTF-8 text (byte 0xe9")),
    "issue 17: net_config not UTF-8": (
        lambda w, h: _random_arch(_bytes(h, "n.json", b'{"net_type": "mbv2\xff"}'), h),
        ("{here}/n.json", "not UTF-8")),
    "issue 17: seed of 2**32": (
        lambda w, h: ["--set", "seed=4294967296", "params"], ("seed", "maximum 4294967295, got 4294967296")),
    "issue 17: net_config with 60000 channels": (
        lambda w, h: ["info", _text(h, "n.json", json.dumps(
            {"net_type": "mbv2", "last_dim": 64, "blocks": HUGE_WIDTH}))],
        ("{here}/n.json", "M weights, above the limit of 1,000 M", "DENSENAS_MAX_MODEL_PARAMS_M")),
    "issue 17: info --input-size in the millions": (
        lambda w, h: ["info", "densenas_a", "--input-size", "1000000"],
        ("densenas info: error: argument --input-size: expected 16 to 4096, got 1000000",)),
    "issue 17: evaluate --out is a folder": (
        lambda w, h: ["evaluate", "--model", "densenas_a", "--data", str(w.prepared), "--checkpoint",
                      str(h / "none.pt"), "--out", str(_empty(h / "metrics.json"))],
        ("{here}/metrics.json: is a folder, expected the path of an output file",)),
    "issue 17: prepare --out under a file": (
        lambda w, h: ["prepare", "--source", str(w.raw), "--out", f"{_text(h, 'file.txt', 'x')}/prepared"],
        ("{here}/file.txt: is a file, so the output folder", "cannot be made")),
    "issue 17: IDX file header only": (
        lambda w, h: ["--set", "data.source=fashion_mnist",
                      *_prepare(h, _fashion_mnist(h / "fm", train_images=_idx((5, 28, 28), b"")))],
        ("{here}/fm/train-images-idx3-ubyte.gz", "the header promises 5x28x28 values, the file holds 0")),
    "issue 17: IDX file truncated in its header": (
        lambda w, h: ["--set", "data.source=fashion_mnist",
                      *_prepare(h, _fashion_mnist(h / "fm", train_labels=_idx((5,), b"")[:6]))],
        ("{here}/fm/train-labels-idx1-ubyte.gz", "6 bytes, shorter than the 8-byte header")),
    "issue 17: IDX label out of range": (
        lambda w, h: ["--set", "data.source=fashion_mnist",
                      *_prepare(h, _fashion_mnist(h / "fm", val_labels=_idx((5,), bytes([0, 1, 12, 3, 4]))))],
        ("{here}/fm/t10k-labels-idx1-ubyte.gz", "label 12 at index 2 is out of range (expected 0 to 9)")),
    "issue 17: a class with one train image (empty search split)": (
        lambda w, h: _prepare(h, _tree(w, h, lambda t: [
            p.unlink() for p in sorted((t / "train" / "n00000001").iterdir())[1:]])),
        ("{here}/raw", "split search_train would hold no images of class(es) n00000001")),
    "issue 17: IDX file a decompression bomb": (
        lambda w, h: ["--set", "data.source=fashion_mnist",
                      *_prepare(h, _gzip_bomb(h / "fm", "t10k-images-idx3-ubyte.gz", 300))],
        ("{here}/fm/t10k-images-idx3-ubyte.gz", "decompresses to more than 256 MiB")),
    "issue 17: search split smaller than one batch": (
        lambda w, h: ["--set", "search.spaces.resnet.batch_size=1000", "search", "--space", "resnet", "--variant",
                      "flops_r1", "--data", str(w.prepared), "--out", str(h / "out")],
        ("prepared/search_train", "fewer than one batch of 1000")),
    "issue 17: train split smaller than one batch": (
        lambda w, h: ["--set", "train.batch_size=1000", *_train(h, str(w.prepared))],
        ("prepared/train", "images, fewer than one batch of 1000")),
    "issue 17: NaN in params": (
        lambda w, h: ["--params", _params(w, h, lambda r: r["train"].update(lr=float("nan"))), "params"],
        ("{here}/params.yaml", "'.nan'", "expected a finite number")),
    "issue 17: infinity through --set": (
        lambda w, h: ["--set", "train.weight_decay=-.inf", "params"], ("--set train.weight_decay", "finite number")),
    "issue 17: NaN in a LUT": (
        lambda w, h: _search_lut(w, h, _json_edit(
            w.lut, h, "lut.json", lambda d: next(iter(d["entries"].values())).update(mean=float("nan")), True)),
        ("{here}/lut.json", "NaN: expected a finite number")),
    "issue 17: duplicate key in params": (
        lambda w, h: ["--params", _text(h, "params.yaml", w.params.read_text() + "seed: 7\n"), "params"],
        ("{here}/params.yaml", "duplicate key 'seed'")),
    "issue 17: duplicate key in a net_config": (
        lambda w, h: ["info", _text(h, "n.json", '{"net_type": "mbv2", "net_type": "res", "blocks": []}')],
        ("{here}/n.json", "duplicate key 'net_type'")),
    "issue 17: alias bomb in params": (
        lambda w, h: ["--preset", _text(h, "p.yaml", ALIAS_BOMB), "params"],
        ("{here}/p.yaml", "expands to more than 1000000 values")),
    "issue 17: 80 MB net_config": (
        lambda w, h: _train(h, str(w.prepared), _sparse(h / "n.json", 80 * 2**20)),
        ("{here}/n.json", "80.0 MiB, above the 32 MiB limit", "DENSENAS_MAX_INPUT_MB")),
    "issue 17: net_config negative width": (
        lambda w, h: ["info", _text(h, "n.json", json.dumps(
            {"net_type": "mbv2", "last_dim": 64, "blocks": [{**BLOCKS[0], "out_ch": -16}]}))],
        ("{here}/n.json", "blocks/0/out_ch: -16 is less than the minimum of 1")),
    "issue 17: net_config block without its stride": (
        lambda w, h: ["info", _text(h, "n.json", json.dumps(
            {"net_type": "mbv2", "last_dim": 64, "blocks": NO_STRIDE}))],
        ("{here}/n.json", "blocks/0: 'stride' is a required property")),
    "issue 17: a folder as params file": (
        lambda w, h: ["--params", str(_empty(h / "params.yaml")), "params"],
        ("{here}/params.yaml: is a folder, expected a params file",)),
    "issue 17: a folder as LUT file": (
        lambda w, h: _search_lut(w, h, str(_empty(h / "lut.json"))),
        ("{here}/lut.json: is a folder, expected a LUT file",)),
})


def _bytes(here: Path, name: str, data: bytes) -> str:
    path = here / name
    path.write_bytes(data)
    return str(path)


def _sparse(path: Path, size: int) -> str:
    """A file of ``size`` bytes that takes no disk space (a hole): the size check must refuse it unread."""
    with path.open("wb") as handle:
        handle.truncate(size)
    return str(path)


def _idx(shape: tuple[int, ...], values: bytes) -> bytes:
    """An IDX file of unsigned bytes (uncompressed) with ``shape`` in its header and ``values`` after it."""
    return (0x0800 + len(shape)).to_bytes(4, "big") + b"".join(n.to_bytes(4, "big") for n in shape) + values


def _fashion_mnist(folder: Path, **replace: bytes) -> str:
    """Five valid 28x28 images per split, gzip-compressed, with the named files replaced (train_images, ...)."""
    images, labels = _idx((5, 28, 28), bytes(5 * 28 * 28)), _idx((5,), bytes(range(5)))
    files = {"train_images": ("train-images-idx3-ubyte.gz", images),
             "train_labels": ("train-labels-idx1-ubyte.gz", labels),
             "val_images": ("t10k-images-idx3-ubyte.gz", images), "val_labels": ("t10k-labels-idx1-ubyte.gz", labels)}
    folder.mkdir(parents=True, exist_ok=True)
    for key, (name, data) in files.items():
        (folder / name).write_bytes(gzip.compress(replace.get(key, data), mtime=0))
    return str(folder)


def _gzip_bomb(folder: Path, name: str, mib: int) -> str:
    """Valid Fashion-MNIST files, but ``name`` inflates to ``mib`` MiB (written in pieces: the test stays small)."""
    _fashion_mnist(folder)
    deflate = zlib.compressobj(wbits=31)
    with (folder / name).open("wb") as handle:
        handle.write(deflate.compress(_idx((mib * 2**20 // 784, 28, 28), b"")))
        for _ in range(mib):
            handle.write(deflate.compress(bytes(2**20)))
        handle.write(deflate.flush())
    return str(folder)


def _empty(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _fake_fashion_mnist(folder: Path) -> str:
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
                 "t10k-labels-idx1-ubyte.gz"):
        _text(folder, name, "not gzip")
    return str(folder)


def _snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (hidden ones included) with its sha256."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    root = tmp_path_factory.mktemp("world")
    raw = deep_merge(yaml.safe_load((REPO / "params.yaml").read_text()), TINY)
    params = Path(_yaml(root, "params.yaml", raw))
    tree = write_image_folder(root / "raw")
    prepared = root / "prepared"
    prepare([str(tree)], prepared, data_params(on_corrupt="skip"))
    luts = {}
    for name, space, metric in (("lut", "mbv2", "latency"), ("lut_resnet", "resnet", "latency"),
                                ("lut_flops", "mbv2", "flops")):
        doc = build_lut(load_space(space), metric="flops", input_size=24, batch=1, dtype="float32", num_classes=2,
                        device="cpu", warmup=0, repeats=1, threads=1, progress=False)
        if metric == "latency":  # FLOPs stand in for timings: the cases need a valid file, not real numbers
            doc.update(metric="latency", units="ms", device={"type": "cpu", "name": "synthetic (tests)"})
        luts[name] = root / f"{name}.json"
        write_lut(luts[name], doc)
    return World(root, params, tree, prepared, luts["lut"], luts["lut_resnet"], luts["lut_flops"])


@dataclass
class Outcome:
    returncode: int
    stderr: str
    here: Path
    before: dict[str, str]
    after: dict[str, str]


def _command(world: World, args: list[str]) -> list[str]:
    return ([] if "--params" in args else ["--params", str(world.params)]) + args


@pytest.fixture(scope="module")
def outcomes(world: World, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outcome]:
    """Every case, run by tests/cli_forkserver.py: each in its own forked process, the imports paid once."""
    shared_before = _snapshot(world.root)
    requests, folders, before = [], {}, {}
    for index, (name, (make, _)) in enumerate(CASES.items()):
        here = folders[name] = tmp_path_factory.mktemp("case")
        logs = tmp_path_factory.mktemp("log")
        argv = _command(world, make(world, here))
        before[name] = _snapshot(here)
        requests.append({"id": index, "argv": argv, "cwd": str(here), "stdout": str(logs / "stdout"),
                         "stderr": str(logs / "stderr")})
    server = subprocess.run(
        [sys.executable, str(REPO / "tests" / "cli_forkserver.py"), str(WORKERS)], cwd=REPO, capture_output=True,
        text=True, timeout=600, input="".join(json.dumps(r) + "\n" for r in requests), env=CLI_ENV)
    assert server.returncode == 0, server.stderr
    codes = {json.loads(line)["id"]: json.loads(line)["returncode"] for line in server.stdout.splitlines()}
    assert sorted(codes) == list(range(len(CASES))), f"the fork server answered {len(codes)} of {len(CASES)} cases"
    assert _snapshot(world.root) == shared_before, "a case changed the shared inputs"
    return {name: Outcome(codes[r["id"]], Path(r["stderr"]).read_text(), folders[name], before[name],
                          _snapshot(folders[name]))
            for name, r in zip(CASES, requests, strict=True)}


def test_catalogue_is_large_enough() -> None:
    assert len(CASES) >= 30, f"expected at least 30 bad inputs, got {len(CASES)}"


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_refused_in_one_line(outcomes: dict[str, Outcome], case: str) -> None:
    outcome = outcomes[case]
    stderr = outcome.stderr
    assert outcome.returncode == 2, f"{case}: expected exit 2, got {outcome.returncode}\n{stderr}"
    assert "Traceback" not in stderr, f"{case}: traceback on stderr\n{stderr}"
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, f"{case}: expected one line on stderr, got {len(lines)}:\n{stderr}"
    for expected in CASES[case][1]:
        expected = expected.format(here=outcome.here)
        assert expected in lines[0], f"{case}: expected {expected!r} in {lines[0]!r}"
    assert outcome.after == outcome.before, (
        f"{case}: files written or changed: {sorted(set(outcome.after.items()) ^ set(outcome.before.items()))}")


def test_fork_server_matches_a_plain_subprocess(world: World, outcomes: dict[str, Outcome]) -> None:
    """The same case as `python -m densenas.cli` in a fresh interpreter gives the same status and line."""
    case = "checkpoint: a pickle that runs code"
    outcome = outcomes[case]
    argv = _command(world, CASES[case][0](world, _empty(outcome.here / "again")))
    result = subprocess.run([sys.executable, "-m", "densenas.cli", *argv], cwd=outcome.here / "again",
                            capture_output=True, text=True, timeout=300, env=CLI_ENV)
    assert result.returncode == outcome.returncode == 2, result.stderr
    assert result.stderr.replace("/again", "") == outcome.stderr, (result.stderr, outcome.stderr)
    assert not (outcome.here / "again" / "pwned").exists()


# Search-space files: the CLI's --space takes only the shipped names (argparse choices), so a space file reaches
# densenas through load_space(path) in library use; these cases run what `densenas lut` does with a space.
def _space_dict() -> dict[str, Any]:
    return yaml.safe_load((REPO / "densenas" / "spaces" / "mbv2.yaml").read_text())


SPACE_CASES: dict[str, tuple[Callable[[dict], Any] | str, tuple[str, ...]]] = {
    "not YAML": ("widths: [16, 24", ("not valid YAML",)),
    "a list": ("[16, 24]", ("expected a mapping of space keys, got list",)),
    "unknown key": (lambda d: d.update(widthz=[1]), ("unknown key 'widthz'", "expected one of")),
    "missing key": (lambda d: d.pop("temperature"), ("missing key 'temperature'",)),
    "lengths disagree": (lambda d: d["resolutions"].pop(), ("key 'resolutions' must have 17 entries", "got 16")),
    "unknown op": (lambda d: d["stack_ops"].append("conv9x9"), ("key 'stack_ops': unknown op 'conv9x9'",)),
    "skip as head op": (lambda d: d["head_ops"].append("skip_connect"), ("key 'head_ops': skip_connect",)),
    "temperature 0": (lambda d: d.update(temperature=0), ("key 'temperature' must be > 0, got 0",)),
    "bn without eps": (lambda d: d.update(bn={"momentum": 0.1}), ("key 'bn' must be a mapping with",)),
    "negative width": (lambda d: d["widths"].__setitem__(3, -40), ("key 'widths' must hold integers >= 1, got -40",)),
    "resolution not halving": (lambda d: d["resolutions"].__setitem__(2, 30),
                               ("key 'resolutions': 30 is not 112 (node 0) divided by a power of two",)),
}


@pytest.mark.parametrize("case", list(SPACE_CASES))
def test_bad_space_file_is_refused_in_one_line(tmp_path: Path, case: str) -> None:
    change, expected = SPACE_CASES[case]
    path = tmp_path / "space.yaml"
    if isinstance(change, str):
        path.write_text(change)
    else:
        data = _space_dict()
        change(data)
        path.write_text(yaml.safe_dump(data))
    with pytest.raises(DensenasError) as caught:
        space = load_space(path)
        supernet_sites(space, build_topology(space), input_size=32, num_classes=10)
    message = str(caught.value)
    assert "\n" not in message, f"{case}: expected one line, got {message!r}"
    for part in expected:
        assert part in message, f"{case}: expected {part!r} in {message!r}"
    assert message.startswith(f"{path}: "), f"{case}: expected the message to start with the file, got {message!r}"
