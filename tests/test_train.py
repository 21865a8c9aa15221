"""Retraining: the cosine schedule (Q19), label smoothing, best.pt = the best epoch (Q11), outputs, resume refusal."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from train_fixtures import REPO, prepare_small, quick_overrides, quick_params, write_tiny_net

from densenas import checkpoint as checkpoint_module
from densenas.checkpoint import load_checkpoint, seed_everything
from densenas.config import TrainParams, load_params
from densenas.data import build_loader, set_loader_epoch
from densenas.distributed import DistContext
from densenas.errors import DensenasError
from densenas.registry import create_model
from densenas.train import TrainSetup, cosine_lr, evaluate_accuracy, fit, make_criterion
from densenas.train.residual_init import residual_branch_bn, zero_init_residual_bn
from densenas.train.stage import recipe_digest, run_name, run_training, set_bn_momentum, space_of

CPU = DistContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


@pytest.fixture(scope="session")
def small_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepare_small(tmp_path_factory.mktemp("prepared") / "fashion_mnist")


@pytest.fixture(scope="session")
def trained(small_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny MBV2 network trained for 3 epochs through the stage function; (out dir, net_config)."""
    folder = tmp_path_factory.mktemp("train")
    net_config = write_tiny_net(folder)
    run_training(str(net_config), quick_params(), name="tiny", data_dir=small_data, out_dir=folder / "tiny",
                 device="cpu")
    return folder / "tiny", net_config


def _history(out: Path) -> list[dict[str, float]]:
    with (out / "history.csv").open() as handle:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(handle)]


def test_cosine_lr_follows_the_formula_and_starts_at_the_peak() -> None:
    peak, floor, total = 0.5, 1e-5, 300_480  # the paper's schedule (SPEC §8.2)
    assert cosine_lr(0, total, peak, floor) == peak, "Q19: the first iteration uses t = 0, i.e. the peak lr"
    assert cosine_lr(total // 2, total, peak, floor) == pytest.approx((peak + floor) / 2)
    assert cosine_lr(total, total, peak, floor) == pytest.approx(floor)
    for step in (1, 1252, 100_000, 250_000):
        expected = floor + (peak - floor) * (1 + math.cos(math.pi * step / total)) / 2
        assert cosine_lr(step, total, peak, floor) == pytest.approx(expected, rel=1e-12), f"step {step}"


def test_history_lr_is_the_schedule_at_each_epochs_first_iteration(trained: tuple[Path, Path]) -> None:
    out, _ = trained
    metrics = _load_json(out / "metrics.json")
    steps, total = metrics["steps_per_epoch"], metrics["steps"]
    assert total == 3 * steps, f"expected 3 epochs of {steps} steps, got {total} steps"
    for row in _history(out):
        step = int(row["epoch"] - 1) * steps
        expected = cosine_lr(step, total, metrics["lr"], metrics["min_lr"])
        assert row["lr"] == pytest.approx(expected, rel=1e-9), f"epoch {row['epoch']}: lr {row['lr']} != {expected}"


def test_outputs_and_metrics_record(trained: tuple[Path, Path]) -> None:
    out, _ = trained
    assert sorted(p.name for p in out.iterdir()) == ["best.pt", "checkpoint.pt", "history.csv", "metrics.json"]
    history = _history(out)
    assert [row["epoch"] for row in history] == [1, 2, 3]
    metrics = _load_json(out / "metrics.json")
    assert metrics["last"] == {"top1": history[-1]["val_top1"], "top5": history[-1]["val_top5"], "epoch": 3}
    assert metrics["num_classes"] == 10 and metrics["train_images"] == 200 and metrics["val_images"] == 200
    assert metrics["params"] > 0 and metrics["device"] == "cpu" and metrics["world_size"] == 1


def test_best_checkpoint_holds_the_best_epoch(trained: tuple[Path, Path], small_data: Path) -> None:
    out, net_config = trained
    history = _history(out)
    best_row = max(history, key=lambda row: row["val_top1"])  # the first of equal maxima, as the loop keeps
    metrics = _load_json(out / "metrics.json")
    assert metrics["best"]["epoch"] == best_row["epoch"], f"best epoch {metrics['best']['epoch']} vs history"
    best = torch.load(out / "best.pt", weights_only=True)
    assert best["epoch"] == best_row["epoch"]
    net = create_model(str(net_config), num_classes=10)
    net.load_state_dict(best["model"])
    val = build_loader(small_data, "val", quick_params().data, train=False, batch_size=50, seed=0)
    accuracy = evaluate_accuracy(net, val, device=torch.device("cpu"))
    assert accuracy.top1 == pytest.approx(best_row["val_top1"]), "best.pt does not reproduce its epoch's val top-1"


@pytest.mark.parametrize(("val_start_epoch", "validated"), [(2, [3]), (1, [2, 3]), (5, [3])])
def test_val_start_epoch_validates_from_it_and_always_the_last(val_start_epoch: int, validated: list[int],
                                                               trained: tuple[Path, Path], small_data: Path,
                                                               tmp_path: Path) -> None:
    """Epochs before train.val_start_epoch (0-based) are not validated; best.pt is the best validated epoch (Q11)
    and the training itself is the same run as with validation every epoch (same weights at the end)."""
    _, net_config = trained
    params = quick_params(val_start_epoch=val_start_epoch)
    run_training(str(net_config), params, name="tiny", data_dir=small_data, out_dir=tmp_path, device="cpu")
    with (tmp_path / "history.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [int(row["epoch"]) for row in rows if row["val_top1"]] == validated
    assert all(row["val_top5"] == "" for row in rows if not row["val_top1"])
    best_row = max((row for row in rows if row["val_top1"]), key=lambda row: float(row["val_top1"]))
    metrics = _load_json(tmp_path / "metrics.json")
    assert metrics["best"]["epoch"] == int(best_row["epoch"]) == torch.load(tmp_path / "best.pt",
                                                                            weights_only=True)["epoch"]
    every_epoch = torch.load(trained[0] / "checkpoint.pt", weights_only=True)["model"]
    last = torch.load(tmp_path / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(every_epoch[key], last[key]) for key in every_epoch), "validation changed the training"


def test_label_smoothing_is_in_the_training_loss(small_data: Path, tmp_path: Path) -> None:
    """With lr 0 the weights stay put, so the logged train loss must equal the smoothed loss recomputed here."""
    recipe = dataclasses.replace(quick_params().train, epochs=1, lr=0.0, min_lr=0.0, weight_decay=0.0,
                                 label_smoothing=0.1)
    data = quick_params().data
    seed_everything(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))
    loader = build_loader(small_data, "train", data, train=True, batch_size=20, seed=3)
    fit(net, loader, build_loader(small_data, "val", data, train=False, batch_size=50, seed=3),
        TrainSetup("linear", recipe, 3, tmp_path, "test"), CPU)
    logged = _history(tmp_path)[0]["train_loss"]
    set_loader_epoch(loader, 0)
    smoothed, plain, count = 0.0, 0.0, 0
    with torch.no_grad():
        for images, labels in loader:
            logits = net(images)
            smoothed += nn.functional.cross_entropy(logits, labels, label_smoothing=0.1).item() * len(labels)
            plain += nn.functional.cross_entropy(logits, labels).item() * len(labels)
            count += len(labels)
    assert logged == pytest.approx(smoothed / count, rel=1e-5), f"logged {logged}, smoothed {smoothed / count}"
    assert abs(logged - plain / count) > 1e-3, "the logged loss is the unsmoothed cross-entropy"


def test_criterion_is_the_proxylessnas_form() -> None:
    recipe = TrainParams(epochs=1, batch_size=1, lr=0.1, reference_batch=1, scale_lr=False, min_lr=0.0, momentum=0.9,
                         weight_decay=0.0, label_smoothing=0.1, bn_momentum=None, zero_init_residual=False, amp=False,
                         channels_last=False, compile=False, val_start_epoch=0)
    logits, labels = torch.tensor([[2.0, -1.0, 0.5, 0.0]]), torch.tensor([2])
    target = torch.full((1, 4), 0.1 / 4)
    target[0, 2] += 0.9
    expected = -(target * logits.log_softmax(1)).sum()
    assert make_criterion(recipe)(logits, labels).item() == pytest.approx(expected.item(), rel=1e-6)


def test_weight_decay_reaches_every_parameter(small_data: Path, tmp_path: Path) -> None:
    """Q15: one SGD group over all parameters (BN γ/β and biases included) with the recipe's decay, no Nesterov."""
    recipe = quick_params().train
    net = create_model("densenas_c", num_classes=10)
    groups = _optimizer_groups(net, recipe, tmp_path, small_data)
    assert len(groups) == 1, f"expected one parameter group, got {len(groups)}"
    assert groups[0]["weight_decay"] == recipe.weight_decay
    assert groups[0]["params"] == len(list(net.parameters()))
    assert groups[0]["nesterov"] is False and groups[0]["momentum"] == 0.9


def _optimizer_groups(net: nn.Module, recipe: TrainParams, out: Path, data: Path) -> list[dict]:
    fit(net, _one_batch(data), _one_batch(data), TrainSetup("c", dataclasses.replace(recipe, epochs=1), 0, out, "t"),
        CPU)
    state = torch.load(out / "checkpoint.pt", weights_only=True)["optimizer"]
    return [{**group, "params": len(group["params"])} for group in state["param_groups"]]


def _one_batch(data: Path) -> list[tuple[torch.Tensor, torch.Tensor]]:
    images, labels = next(iter(build_loader(data, "val", quick_params().data, train=False, batch_size=20, seed=0)))
    return [(images, labels)]


def test_a_checkpoint_of_another_recipe_starts_training_over(trained: tuple[Path, Path], small_data: Path,
                                                             tmp_path: Path) -> None:
    """A workflow re-runs the stage after a params change with the old checkpoint still there: start over."""
    out, net_config = trained
    (tmp_path / "checkpoint.pt").write_bytes((out / "checkpoint.pt").read_bytes())
    params = quick_params(lr=0.2)
    metrics = run_training(str(net_config), params, name="tiny", data_dir=small_data, out_dir=tmp_path, device="cpu")
    assert _history(tmp_path)[0]["lr"] == pytest.approx(metrics["lr"]) and metrics["lr"] != _load_json(
        out / "metrics.json")["lr"], "the history must be the new recipe's, from epoch 1"
    assert load_checkpoint(tmp_path / "checkpoint.pt", {"recipe": recipe_digest(params)})["state"]["epoch"] == 3


def test_best_pt_is_restored_from_the_checkpoint(trained: tuple[Path, Path], small_data: Path,
                                                 tmp_path: Path) -> None:
    """Snakemake deletes a killed job's declared outputs (best.pt) but not checkpoint.pt: the rerun rewrites it."""
    out, net_config = trained
    (tmp_path / "checkpoint.pt").write_bytes((out / "checkpoint.pt").read_bytes())
    run_training(str(net_config), quick_params(), name="tiny", data_dir=small_data, out_dir=tmp_path, device="cpu")
    restored, original = (load_checkpoint(folder / "best.pt", {"kind": "train"}) for folder in (tmp_path, out))
    assert restored["epoch"] == original["epoch"]
    assert all(torch.equal(restored["model"][k], v) for k, v in original["model"].items())


def test_recipe_digest_ignores_runtime_data_keys() -> None:
    base = recipe_digest(quick_params())
    runtime = load_params(REPO / "params.yaml", overrides={**quick_overrides(),
                                                           "data": {"max_images_per_class": 20, "workers": 3}})
    assert recipe_digest(runtime) == base, "data.workers does not change results: a resume must accept it"
    assert recipe_digest(quick_params(lr=0.2)) != base


def test_completed_run_resumes_to_the_same_metrics(trained: tuple[Path, Path], small_data: Path,
                                                   tmp_path: Path) -> None:
    """Re-running a finished run trains nothing and rewrites the same metrics (what Snakemake/DVC may do)."""
    out, net_config = trained
    for name in ("checkpoint.pt", "best.pt"):
        (tmp_path / name).write_bytes((out / name).read_bytes())
    metrics = run_training(str(net_config), quick_params(), name="tiny", data_dir=small_data, out_dir=tmp_path,
                           device="cpu")
    assert metrics == _load_json(out / "metrics.json")
    assert load_checkpoint(tmp_path / "checkpoint.pt", {"kind": "train"})["state"]["epoch"] == 3


def test_bf16_autocast_and_channels_last_run_on_cpu(small_data: Path, tmp_path: Path) -> None:
    """The GPU options share the CPU code path (autocast on the tensor's device type)."""
    recipe = dataclasses.replace(quick_params().train, epochs=1, amp=True, channels_last=True)
    net = create_model("densenas_c", num_classes=10)
    metrics = fit(net, _one_batch(small_data), _one_batch(small_data), TrainSetup("c", recipe, 0, tmp_path, "t"), CPU)
    assert metrics["amp"] and metrics["channels_last"] and math.isfinite(_history(tmp_path)[0]["train_loss"])
    assert net.stem[0].weight.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize(("source", "name"), [
    ("densenas_c", "densenas_c"),
    ("results/search/mbv2/lat_c/net_config.json", "mbv2-lat_c"),
    ("some/where/my_arch.json", "my_arch"),
])
def test_run_name(source: str, name: str) -> None:
    assert run_name(source) == name


@pytest.mark.parametrize(("source", "space"), [("densenas_c", "mbv2"), ("mobilenet_v2", "mbv2"),
                                                ("resnet50", "resnet"), ("resnet_space_issue19", "resnet")])
def test_space_of_registered_models(source: str, space: str) -> None:
    assert space_of(source) == space


def test_space_of_a_net_config_file(tmp_path: Path) -> None:
    assert space_of(str(write_tiny_net(tmp_path))) == "mbv2"


def _load_json(path: Path) -> dict:
    return json.loads(path.read_text())


def test_recipe_bn_momentum_reaches_every_bn_of_a_baseline() -> None:
    """torchvision's MnasNet ships BN momentum 0.0003; the recipe's 0.1 replaces it (params train.bn_momentum)."""
    net = create_model("mnasnet1_0", num_classes=10)
    norms = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and {m.momentum for m in norms} == {1 - 0.9997}
    set_bn_momentum(net, quick_params().train.bn_momentum)
    assert {m.momentum for m in norms} == {0.1}


def test_disk_full_at_a_checkpoint_keeps_the_last_one_and_the_rerun_resumes(
        trained: tuple[Path, Path], small_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capfd: pytest.CaptureFixture[str]) -> None:
    """Issue 17: the second checkpoint.pt is written to /dev/full, so the kernel itself answers ENOSPC. The stage
    fails with one named error, the epoch-1 checkpoint stays loadable, no temporary file is left, and the re-run
    (space freed) resumes after epoch 1 and ends where an uninterrupted run ends."""
    out, net_config = trained
    real_open, checkpoint_writes = open, []

    def filling_disk(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if "w" in mode and Path(file).name.startswith(".checkpoint.pt."):
            checkpoint_writes.append(file)
            if len(checkpoint_writes) == 2:
                return real_open("/dev/full", mode, *args, **kwargs)
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(checkpoint_module, "open", filling_disk, raising=False)
    with pytest.raises(DensenasError, match=r"checkpoint\.pt: cannot write the output \(No space left on device; "
                                            r"free some space and run the stage again"):
        run_training(str(net_config), quick_params(), name="tiny", data_dir=small_data, out_dir=tmp_path,
                     device="cpu")
    assert load_checkpoint(tmp_path / "checkpoint.pt", {"kind": "train"})["state"]["epoch"] == 1
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    monkeypatch.undo()
    capfd.readouterr()
    metrics = run_training(str(net_config), quick_params(), name="tiny", data_dir=small_data, out_dir=tmp_path,
                           device="cpu")
    assert "after epoch 1" in capfd.readouterr().err, "the re-run did not resume from the epoch-1 checkpoint"
    expected = _load_json(out / "metrics.json")
    assert (metrics["best"], metrics["last"]) == (expected["best"], expected["last"])


@pytest.mark.parametrize("model", ["densenas_c", "mobilenet_v2", "mnasnet1_0", "resnet18"])
def test_zero_init_residual_makes_every_residual_block_start_as_its_shortcut(model: str) -> None:
    """After zero_init_residual_bn each residual block's output equals its shortcut (eval mode, random input)."""
    net = create_model(model, num_classes=10).eval()
    assert zero_init_residual_bn(net) > 0, f"{model}: no residual branch found"
    blocks = [(m, residual_branch_bn(m)) for m in net.modules() if residual_branch_bn(m) is not None]
    x_by_block: dict[int, torch.Tensor] = {}
    hooks = [b.register_forward_hook(lambda mod, inp, out: x_by_block.__setitem__(id(mod), (inp[0], out)))
             for b, _ in blocks]
    with torch.no_grad():
        net(torch.randn(2, 3, 32, 32))
    for h in hooks:
        h.remove()
    checked = 0
    for block, _ in blocks:
        inp, out = x_by_block[id(block)]
        projected = getattr(block, "downsample", None) is not None or isinstance(getattr(block, "shortcut", None),
                                                                                 nn.Sequential)
        if inp.shape == out.shape and not projected:  # identity shortcut: the block must pass its input through
            assert torch.allclose(out, inp, atol=1e-6), f"{model}: {type(block).__name__} is not its shortcut"
            checked += 1
    assert checked > 0, f"{model}: no identity-shortcut block was checked"
