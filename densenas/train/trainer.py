"""The retraining loop (SPEC.md §8.2): SGD, per-iteration cosine lr, label-smoothed cross-entropy, val per epoch.

Resumable from ``checkpoint.pt`` (written atomically after every epoch); ``best.pt`` keeps the best val top-1
epoch (quirk Q11). Runs under torchrun with DDP; only rank 0 writes files.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import io
import json
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from densenas.atomic import write_json, write_text
from densenas.checkpoint import load_resume_checkpoint, rng_state, save_checkpoint, seed_everything, set_rng_state
from densenas.complexity import count_params
from densenas.config import TrainParams
from densenas.distributed import DistContext, barrier, broadcast_object
from densenas.errors import DensenasError
from densenas.pointwise import use_gemm_pointwise
from densenas.preemption import Preempted, StopRequest, stop_on_signals
from densenas.train.accuracy import Accuracy, evaluate_accuracy
from densenas.train.schedule import cosine_lr, set_lr

HISTORY_FIELDS = ("epoch", "lr", "train_loss", "train_top1", "val_top1", "val_top5", "time")


class Batches(Protocol):
    """What the loop needs from a loader: (images, labels) batches and a fixed number of them per epoch."""

    def __iter__(self) -> Any: ...

    def __len__(self) -> int: ...


@dataclass(frozen=True)
class TrainSetup:
    """Everything the loop needs besides the network and the data."""

    name: str                   # model name; results go to results/train/{name}/
    recipe: TrainParams
    seed: int
    out_dir: Path
    recipe_digest: str          # digest of the params that shape the run; a checkpoint of another is refused
    info: dict[str, Any] = field(default_factory=dict)  # recorded as is in metrics.json (dataset, input size, ...)


@dataclass
class TrainState:
    """Progress that a checkpoint carries from one process to the next."""

    epoch: int = 0              # completed epochs
    step: int = 0               # completed iterations (the schedule's t)
    best_top1: float = -1.0
    best_top5: float = -1.0
    best_epoch: int = 0
    wall_s: float = 0.0         # training time summed over all sessions
    history: list[dict[str, float]] = field(default_factory=list)


def architecture_digest(net: nn.Module) -> str:
    """Class and parameter/buffer shapes: a checkpoint only loads into the network it was made from."""
    shapes = [(name, tuple(t.shape)) for name, t in net.state_dict().items()]
    text = json.dumps([type(net).__name__, shapes])
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def checkpoint_identity(setup: TrainSetup, net: nn.Module) -> dict[str, Any]:
    return {"kind": "train", "model": setup.name, "arch": architecture_digest(net), "recipe": setup.recipe_digest}


def make_criterion(recipe: TrainParams) -> nn.Module:
    """Label-smoothed cross-entropy, target (1 − ε)·onehot + ε/K: the official (ProxylessNAS) form (SPEC §8.2)."""
    return nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)


def parameters_digest(net: nn.Module) -> str:
    """Hash of the parameter values: DDP replicas must agree on it after every step."""
    digest = hashlib.sha256()
    for tensor in net.parameters():
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def fit(net: nn.Module, train_loader: Batches, val_loader: Batches, setup: TrainSetup, ctx: DistContext) -> dict:
    """Train ``net`` (resuming from ``setup.out_dir/checkpoint.pt`` if present); return the metrics record."""
    recipe, device = setup.recipe, ctx.device
    net.to(device)
    if recipe.channels_last:
        net.to(memory_format=torch.channels_last)
    use_gemm_pointwise(net)  # exact; 1.9x faster CPU steps on channels-last inputs (densenas.pointwise)
    # Q15: one parameter group, so weight decay reaches BN γ/β and biases too; no Nesterov (SPEC §8.2).
    optimizer = torch.optim.SGD(net.parameters(), lr=recipe.effective_lr, momentum=recipe.momentum,
                                weight_decay=recipe.weight_decay, nesterov=False)
    criterion = make_criterion(recipe)
    identity = checkpoint_identity(setup, net)
    ckpt_path = setup.out_dir / "checkpoint.pt"
    payload = load_resume_checkpoint(ckpt_path, identity, settings_key="recipe")
    best: dict[str, Any] | None = None  # the best.pt record, also kept in checkpoint.pt
    if payload is not None:
        state, best = _resume(ckpt_path, payload, net, optimizer, ctx)
    else:
        state = TrainState()
        seed_everything(setup.seed + ctx.rank)  # ranks draw differently; DDP makes the weights equal
    model: nn.Module = DistributedDataParallel(net) if ctx.distributed else net
    if recipe.compile:
        model = torch.compile(model)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # SPEC §8.2

    steps_per_epoch = len(train_loader)
    if steps_per_epoch == 0:
        raise DensenasError(f"train split has fewer images than one batch of {recipe.batch_size}")
    total_steps = recipe.epochs * steps_per_epoch
    progress = tqdm(total=total_steps, initial=state.step, unit="it", desc=f"train {setup.name}", file=sys.stderr,
                    disable=not ctx.is_main, dynamic_ncols=True)
    with stop_on_signals() as stop:
        for epoch in range(state.epoch, recipe.epochs):
            start = time.perf_counter()
            sampler = getattr(train_loader, "sampler", None)
            if hasattr(sampler, "set_epoch"):
                sampler.set_epoch(epoch)
            first_lr = cosine_lr(state.step, total_steps, recipe.effective_lr, recipe.min_lr)
            train_loss, train_top1 = _train_epoch(model, train_loader, optimizer, criterion, state, total_steps,
                                                  recipe, ctx, progress, epoch, stop)
            validated = epoch >= recipe.val_start_epoch or epoch + 1 == recipe.epochs
            val = _validate(net, val_loader, recipe, ctx) if validated else None
            elapsed = time.perf_counter() - start
            state.epoch, state.wall_s = epoch + 1, state.wall_s + elapsed
            state.history.append({"epoch": epoch + 1, "lr": first_lr, "train_loss": train_loss,
                                  "train_top1": train_top1, "val_top1": val.top1 if val else None,
                                  "val_top5": val.top5 if val else None, "time": elapsed})
            best = _end_epoch(setup, identity, net, optimizer, state, val, best, ctx)
            if ctx.is_main:
                shown = f"val top-1 {val.top1:.2f} top-5 {val.top5:.2f}" if val else "not validated"
                progress.write(f"epoch {epoch + 1}/{recipe.epochs}: train loss {train_loss:.4f} top-1 "
                               f"{train_top1:.2f}, {shown} ({elapsed:.1f} s)")
    progress.close()
    metrics = _metrics(state, setup, net, steps_per_epoch, ctx)
    best_path = setup.out_dir / "best.pt"
    if ctx.is_main and best is not None and not best_path.exists():  # removed while resuming (Snakemake does)
        save_checkpoint(best_path, best)
    if ctx.is_main:  # history again: a kill right after the last checkpoint may have missed its last row
        write_text(setup.out_dir / "history.csv", _history_csv(state.history))
        write_json(setup.out_dir / "metrics.json", metrics)
    barrier(ctx)
    return metrics


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, criterion: nn.Module, images: torch.Tensor,
               labels: torch.Tensor, *, amp: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """One SGD step (bf16 autocast when ``amp``; the loss in fp32); returns (loss, logits). The images must already
    be on the device in the recipe's memory format. Public so the benchmarks time this very step."""
    autocast = torch.autocast(images.device.type, dtype=torch.bfloat16) if amp else nullcontext()
    with autocast:
        logits = model(images)
        loss = criterion(logits.float(), labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss, logits


STOP_CHECK_STEPS = 20  # how often training asks whether to stop (a collective under DDP, so not every step)


def _train_epoch(model: nn.Module, loader: Batches, optimizer: torch.optim.Optimizer, criterion: nn.Module,
                 state: TrainState, total_steps: int, recipe: TrainParams, ctx: DistContext, progress: tqdm,
                 epoch: int, stop: StopRequest) -> tuple[float, float]:
    """One pass over ``loader``; returns the mean loss and top-1 (%) over every rank's images. Asked to stop, it
    ends the run: the checkpoint of the last finished epoch is where a resume starts (an epoch's data order and
    augmentation draws are not checkpointed mid-epoch, so a partial epoch is repeated)."""
    model.train()
    device = ctx.device
    memory_format = torch.channels_last if recipe.channels_last else torch.contiguous_format
    totals = torch.zeros(3, dtype=torch.float64, device=device)  # loss sum, correct, images
    start = time.perf_counter()
    for index, (images, labels) in enumerate(loader):
        set_lr(optimizer, cosine_lr(state.step, total_steps, recipe.effective_lr, recipe.min_lr))  # Q19: t from 0
        images = images.to(device, non_blocking=True, memory_format=memory_format)
        labels = labels.to(device, non_blocking=True)
        loss, logits = train_step(model, optimizer, criterion, images, labels, amp=recipe.amp)
        state.step += 1
        with torch.no_grad():
            totals += torch.stack([loss.detach().double() * labels.numel(),
                                   (logits.argmax(1) == labels).sum().double(),
                                   torch.tensor(labels.numel(), dtype=torch.float64, device=device)])
        progress.update()
        if index % STOP_CHECK_STEPS == 0 and stop.requested(ctx):  # all ranks ask at the same step
            raise Preempted(f"training stopped by {stop.describe()} in epoch {epoch + 1}, step {index + 1}; the same "
                            f"command resumes after epoch {state.epoch} (the checkpoint of the last finished epoch)")
        if ctx.is_main and (index % 20 == 0 or index + 1 == len(loader)):
            rate = totals[2].item() * ctx.world_size / (time.perf_counter() - start)
            progress.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.3f}", img_s=f"{rate:.0f}", refresh=False)
    if ctx.distributed:
        dist.all_reduce(totals)
    loss_sum, correct, count = totals.tolist()
    return loss_sum / count, 100.0 * correct / count


def _validate(net: nn.Module, loader: Batches, recipe: TrainParams, ctx: DistContext) -> Accuracy:
    """Rank 0 evaluates the whole split (exact counts, no padded shards); the other ranks receive its result."""
    accuracy = None
    if ctx.is_main:
        accuracy = evaluate_accuracy(net, loader, device=ctx.device, channels_last=recipe.channels_last,
                                     amp=recipe.amp)
    return broadcast_object(accuracy, ctx)


def _end_epoch(setup: TrainSetup, identity: dict[str, Any], net: nn.Module, optimizer: torch.optim.Optimizer,
               state: TrainState, val: Accuracy | None, best: dict[str, Any] | None,
               ctx: DistContext) -> dict[str, Any] | None:
    """best.pt when val top-1 improved (the first of equal maxima stays, Q11; ``val`` None: not validated), then
    checkpoint.pt (which carries the best record too) and history.csv. A kill between the writes only repeats this
    epoch on resume, which rewrites the same files. Returns the best record."""
    if val is not None and val.top1 > state.best_top1:
        state.best_top1, state.best_top5, state.best_epoch = val.top1, val.top5, state.epoch
        best = {"identity": identity, "model": copy.deepcopy(net.state_dict()),  # keeps the modules' versions
                "epoch": state.epoch, "top1": val.top1, "top5": val.top5}
        if ctx.is_main:
            save_checkpoint(setup.out_dir / "best.pt", best)
    _save(setup.out_dir / "checkpoint.pt", identity, net, optimizer, state, best, ctx)
    if ctx.is_main:
        write_text(setup.out_dir / "history.csv", _history_csv(state.history))
    return best


def _resume(path: Path, payload: dict[str, Any], net: nn.Module, optimizer: torch.optim.Optimizer,
            ctx: DistContext) -> tuple[TrainState, dict[str, Any] | None]:
    net.load_state_dict(payload["model"])
    optimizer.load_state_dict(payload["optimizer"])
    states = payload["rng"]
    set_rng_state(states[ctx.rank % len(states)])
    state = TrainState(**payload["state"])
    if ctx.is_main:
        print(f"densenas: resuming {path} after epoch {state.epoch} (step {state.step})", file=sys.stderr)
    return state, payload["best"]


def _save(path: Path, identity: dict[str, Any], net: nn.Module, optimizer: torch.optim.Optimizer,
          state: TrainState, best: dict[str, Any] | None, ctx: DistContext) -> None:
    """Every rank's RNG state goes into the one file, so each rank resumes its own random stream; the replicas'
    parameter digests are compared, so a DDP divergence stops the run instead of going unnoticed."""
    mine = {"rng": rng_state(), "digest": parameters_digest(net)}
    ranks: list[Any] = [mine]
    if ctx.distributed:
        ranks = [None] * ctx.world_size
        dist.all_gather_object(ranks, mine)
    digests = [rank["digest"] for rank in ranks]
    if len(set(digests)) > 1:
        raise RuntimeError(f"DDP replicas diverged after epoch {state.epoch}: parameter digests {digests}")
    if ctx.is_main:
        save_checkpoint(path, {"identity": identity, "model": net.state_dict(), "optimizer": optimizer.state_dict(),
                               "rng": [rank["rng"] for rank in ranks], "replica_digests": digests,
                               "state": asdict(state), "best": best})
    barrier(ctx)


def _history_csv(history: list[dict[str, float]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=HISTORY_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    return buffer.getvalue()


def _metrics(state: TrainState, setup: TrainSetup, net: nn.Module, steps_per_epoch: int, ctx: DistContext) -> dict:
    recipe = setup.recipe
    last = state.history[-1]
    return {
        "model": setup.name,
        "best": {"top1": state.best_top1, "top5": state.best_top5, "epoch": state.best_epoch},  # Q11: best.pt
        "last": {"top1": last["val_top1"], "top5": last["val_top5"], "epoch": state.epoch},
        "epochs": recipe.epochs,
        "steps": state.step,
        "steps_per_epoch": steps_per_epoch,
        "batch_size": recipe.batch_size,
        "lr": recipe.effective_lr,
        "min_lr": recipe.min_lr,
        "weight_decay": recipe.weight_decay,
        "label_smoothing": recipe.label_smoothing,
        "amp": recipe.amp,
        "channels_last": recipe.channels_last,
        "compile": recipe.compile,
        "params": count_params(net),
        "device": ctx.device.type,
        "world_size": ctx.world_size,
        "wall_s": state.wall_s,
        "seed": setup.seed,
        "recipe_digest": setup.recipe_digest,
        **setup.info,
    }
