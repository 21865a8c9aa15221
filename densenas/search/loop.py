"""The search schedule (SPEC.md §6.2): warm-up epochs of weight steps, then per epoch an architecture pass over
search-val followed by a weight pass over search-train (quirk Q8), supernet validation, derivation and logging.

Resumable at phase ends and every ``checkpoint_every_steps`` steps: loader order and augmentation are functions of
(seed, epoch, index), op samples come from a checkpointed generator, so a resumed run equals an uninterrupted one.
Under torchrun every rank runs the same sampled ops; rank 0 alone writes files.
"""

from __future__ import annotations

import dataclasses
import itertools
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from densenas.checkpoint import (
    load_checkpoint,
    load_resume_checkpoint,
    rng_state,
    save_checkpoint,
    seed_everything,
    set_rng_state,
)
from densenas.config import DataParams, QuirkParams, SpaceSearchParams, VariantParams
from densenas.cost_table import CostTable
from densenas.data import build_loader, set_loader_epoch
from densenas.distributed import DistContext, broadcast_object, per_rank_batch
from densenas.errors import DensenasError
from densenas.pointwise import use_gemm_pointwise
from densenas.preemption import Preempted, StopRequest, stop_on_signals
from densenas.search.arch_step import StepResult, arch_step
from densenas.search.outputs import SearchOutputs
from densenas.search.records import INITIAL_EPOCH
from densenas.search.schedule import total_weight_steps, weight_lr
from densenas.search.sync import broadcast_tensors
from densenas.search.weight_step import ValResult, validate_supernet, weight_step
from densenas.spaces.space import SearchSpace
from densenas.supernet import SampledOps, Supernet
from densenas.supernet.ghost_bn import use_ghost_batch_norm

WARMUP = "warmup"  # the variant name of the shared warm-up run


@dataclass(frozen=True)
class SearchJob:
    """Everything one search run needs, resolved by the CLI. ``objective`` and ``cost_table`` are None for the
    shared warm-up run (``variant`` = ``WARMUP``), which stops after the warm-up epochs."""

    space: SearchSpace
    settings: SpaceSearchParams
    variant: str
    objective: VariantParams | None
    cost_table: CostTable | None
    prepared_dir: Path
    data: DataParams
    quirks: QuirkParams
    seed: int
    out_dir: Path
    identity: dict[str, str]
    warmup_identity: dict[str, str]
    num_classes: int
    net_num_classes: int
    warmup_from: Path | None = None
    amp: bool = False
    channels_last: bool = False
    checkpoint_every_steps: int = 0
    info: dict[str, Any] = field(default_factory=dict)
    device_label: str = "1 x cpu"
    world_size: int = 1
    retrain_epoch: str = "last"   # which epoch's architecture net_config.json holds (params search.retrain_epoch)

    @property
    def end_epoch(self) -> int:
        return self.settings.warmup_epochs if self.variant == WARMUP else self.settings.epochs


@dataclass
class Progress:
    """Where the run stands: the epoch in progress, its next phase, batches of that phase already done, the LR
    scheduler position, and running sums of the epoch's figures."""

    epoch: int = 0
    phase: str = "arch"
    phase_step: int = 0
    weight_steps: int = 0
    arch_steps: int = 0
    sums: dict[str, float] = field(default_factory=dict)
    epoch_seconds: float = 0.0


class SearchRun:
    """One search process: the supernet, its two optimisers, loaders, the sampling generator and the outputs."""

    def __init__(self, job: SearchJob, ctx: DistContext) -> None:
        self.job, self.ctx = job, ctx
        settings = job.settings
        seed_everything(job.seed)
        self.model = Supernet(job.space, num_classes=job.num_classes, quirks=job.quirks,
                              width_mult=settings.width_mult).to(ctx.device)
        if settings.bn_group_size is not None:  # checked against the per-process batch by make_job
            use_ghost_batch_norm(self.model, settings.bn_group_size)
        batch = per_rank_batch(settings.batch_size, ctx)
        if job.channels_last:
            self.model.to(memory_format=torch.channels_last)
        use_gemm_pointwise(self.model)  # exact; 1.7x faster CPU steps on channels-last inputs (densenas.pointwise)
        self.weight_params, self.arch_params = self.model.weight_parameters(), self.model.arch_parameters()
        self.weight_optimizer = torch.optim.SGD(self.weight_params, lr=settings.weight.lr,
                                                momentum=settings.weight.momentum,
                                                weight_decay=settings.weight.weight_decay)
        # One Adam, α and β as its two groups; weight_decay is Adam's coupled L2 (C7).
        self.arch_optimizer = torch.optim.Adam(
            [{"params": self.model.alpha_parameters(), "lr": settings.arch.alpha_lr},
             {"params": self.model.beta_parameters(), "lr": settings.arch.beta_lr}],
            betas=tuple(settings.arch.betas), weight_decay=settings.arch.weight_decay)
        if settings.weight.update_unsampled:  # zero, never None: every weight sees decay and momentum each step
            for param in self.model.parameters():
                param.grad = torch.zeros_like(param)
        self.trainer = self._wrap_ddp()
        self.cost_table = None if job.cost_table is None else _table_on(job.cost_table, ctx.device)
        self.generator = torch.Generator().manual_seed(job.seed)
        self.train_loader = build_loader(job.prepared_dir, "search_train", job.data, train=True, batch_size=batch,
                                         seed=job.seed, distributed=ctx if ctx.distributed else None)
        self.val_loader = build_loader(job.prepared_dir, "search_val", job.data, train=False, batch_size=batch,
                                       seed=job.seed, distributed=ctx if ctx.distributed else None, drop_last=True)
        # Architecture steps draw search-val batches in a shuffled order (SPEC §6.1), with eval transforms;
        # build_loader ties shuffling to augmentation, so switch it on for this loader's sampler.
        self.val_loader.sampler.shuffle = True  # type: ignore[attr-defined]
        for name, loader in (("search_train", self.train_loader), ("search_val", self.val_loader)):
            if len(loader) == 0:
                raise DensenasError(f"{job.prepared_dir}/{name}: fewer images per process than the batch "
                                    f"({batch}); lower search.spaces.{job.space.name}.batch_size")
        self.total_steps = total_weight_steps(settings.epochs, len(self.train_loader.dataset),
                                              settings.batch_size)
        self.progress = Progress()
        self.outputs = SearchOutputs(job, self.model)
        self.stop: StopRequest | None = None  # set while run_search catches the stop signals

    def _wrap_ddp(self) -> torch.nn.Module:
        """DDP averages the weight gradients of weight steps; α and β are left to :mod:`densenas.search.sync`."""
        if not self.ctx.distributed:
            return self.model
        arch_names = [f"arch.{name}" for name, _ in self.model.arch.named_parameters()]
        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(self.model, arch_names)
        device_ids = [self.ctx.device.index] if self.ctx.device.type == "cuda" else None
        broadcast_tensors(self.model.arch_parameters(), self.ctx)
        # Only the sampled ops run, so most weights go without gradient in any one step.
        return DistributedDataParallel(self.model, device_ids=device_ids, find_unused_parameters=True)

    # -- resume -----------------------------------------------------------------------------------------------
    def restore(self) -> str:
        """Continue from this run's own checkpoint, else from the shared warm-up checkpoint; say which."""
        own = self.job.out_dir / "checkpoint.pt"
        payload = load_resume_checkpoint(own, self.job.identity, settings_key="digest")
        if payload is not None:
            self._load(payload)
            progress = self.progress
            return f"resumed from {own} (epoch {progress.epoch}, {progress.phase} phase, step {progress.phase_step})"
        if self.job.warmup_from is not None:
            payload = load_checkpoint(self.job.warmup_from, self.job.warmup_identity)
            done = Progress(**payload["progress"])
            if done.epoch != self.job.settings.warmup_epochs or done.phase != "arch" or done.phase_step:
                raise DensenasError(f"{self.job.warmup_from}: the warm-up has not finished (epoch {done.epoch} of "
                                    f"{self.job.settings.warmup_epochs}); run `densenas search --warmup` again")
            self._load(payload, arch_optimizer=False)
            return f"starting the architecture phase from the warm-up checkpoint {self.job.warmup_from}"
        return "starting a new search"

    def _load(self, payload: dict[str, Any], *, arch_optimizer: bool = True) -> None:
        """Restore a checkpoint; from a warm-up (no architecture step taken) Adam starts afresh with this run's
        settings, which the warm-up's digest leaves out."""
        self.model.load_state_dict(payload["model"])
        self.weight_optimizer.load_state_dict(payload["weight_optimizer"])
        if arch_optimizer:
            self.arch_optimizer.load_state_dict(payload["arch_optimizer"])
        self.progress = Progress(**payload["progress"])
        self.outputs.history = list(payload["history"])
        self.outputs.snapshots = list(payload["snapshots"])
        self.generator.set_state(payload["sampler_rng"])
        states = payload["rng"]
        set_rng_state(states[self.ctx.rank] if len(states) == self.ctx.world_size else states[0])

    def save(self) -> None:
        """Checkpoint the whole state (all ranks' RNG states gathered); rank 0 writes it atomically."""
        states: list[Any] = [rng_state()]
        if self.ctx.distributed:
            states = [None] * self.ctx.world_size
            dist.all_gather_object(states, rng_state())
        if not self.ctx.is_main:
            return
        save_checkpoint(self.job.out_dir / "checkpoint.pt", {
            "identity": self.job.identity,
            "model": self.model.state_dict(),
            "weight_optimizer": self.weight_optimizer.state_dict(),
            "arch_optimizer": self.arch_optimizer.state_dict(),
            "scheduler": {"weight_steps": self.progress.weight_steps, "total_steps": self.total_steps},
            "progress": dataclasses.asdict(self.progress),
            "history": self.outputs.history,
            "snapshots": self.outputs.snapshots,
            "sampler_rng": self.generator.get_state(),
            "rng": states,
        })
        progress = self.progress
        tqdm.write(f"checkpoint: epoch {progress.epoch}, {progress.phase} phase, step {progress.phase_step}",
                   file=sys.stderr)

    # -- the schedule -----------------------------------------------------------------------------------------
    def run(self) -> None:
        job = self.job
        if self.ctx.is_main and not self.outputs.snapshots:
            self.outputs.record_snapshot(INITIAL_EPOCH)  # the architecture of the initial α, β (SPEC §6.2)
        while self.progress.epoch < job.end_epoch:
            epoch = self.progress.epoch
            started = time.perf_counter()
            searching = epoch >= job.settings.warmup_epochs
            if self.progress.phase == "arch":
                if searching:
                    self._pass("arch", self.val_loader, self.run_arch_step)
                self._next_phase("weight", started)
                started = time.perf_counter()
            if self.progress.phase == "weight":
                self._pass("weight", self.train_loader, self.run_weight_step)
                self.progress.phase = "end"
            # Also validated after the last warm-up epoch: how well the shared supernet learnt before the search.
            last_warmup = epoch == job.settings.warmup_epochs - 1
            val = self._validate() if epoch >= job.settings.val_start_epoch or last_warmup else None
            self.progress.epoch_seconds += time.perf_counter() - started
            if self.ctx.is_main:
                self.outputs.end_epoch(epoch, "search" if searching else "warmup", self.progress, val,
                                       lr=weight_lr(self.progress.weight_steps, self.total_steps,
                                                    job.settings.weight.lr, job.settings.weight.min_lr))
            self.progress = dataclasses.replace(self.progress, epoch=epoch + 1, phase="arch", phase_step=0, sums={},
                                                epoch_seconds=0.0)
            self.save()
            if self.ctx.is_main:
                self.outputs.write_epoch_files()
        if self.ctx.is_main:
            self.outputs.finish(self.total_steps)

    def _next_phase(self, phase: str, started: float) -> None:
        self.progress.phase, self.progress.phase_step = phase, 0
        self.progress.epoch_seconds += time.perf_counter() - started
        if self.progress.epoch >= self.job.settings.warmup_epochs:  # nothing ran in a warm-up epoch's arch phase
            self.save()

    def _pass(self, phase: str, loader: Any, step: Callable[[torch.Tensor, torch.Tensor], StepResult]) -> None:
        """One pass over ``loader``, skipping the batches a resumed phase already did; checkpoints every N steps."""
        progress, every = self.progress, self.job.checkpoint_every_steps
        bar = tqdm(total=len(loader), initial=progress.phase_step, desc=f"epoch {progress.epoch} {phase}",
                   unit="step", file=sys.stderr, disable=not self.ctx.is_main, dynamic_ncols=True)
        with bar:
            for images, labels in self.batches(loader, progress.epoch, progress.phase_step):
                result = step(images, labels)
                _accumulate(progress.sums, phase, result)
                progress.phase_step += 1
                bar.update(1)
                bar.set_postfix(loss=f"{result.loss:.3f}", top1=f"{result.top1:.3f}",
                                **({"cost": f"{result.cost:.4g}"} if phase == "arch" else {}))
                if self.stop is not None and self.stop.requested(self.ctx):
                    self.save()
                    raise Preempted(f"search {self.job.space.name}/{self.job.variant}: stopped by "
                                    f"{self.stop.describe()} at epoch {progress.epoch}, {phase} phase, step "
                                    f"{progress.phase_step}, saved in {self.job.out_dir / 'checkpoint.pt'}; "
                                    "the same command resumes it")
                if every and progress.phase_step % every == 0 and progress.phase_step < len(loader):
                    self.save()

    def batches(self, loader: Any, epoch: int, skip: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        set_loader_epoch(loader, epoch)
        memory_format = torch.channels_last if self.job.channels_last else torch.contiguous_format
        for images, labels in itertools.islice(loader, skip, None):
            yield (images.to(self.ctx.device, non_blocking=True, memory_format=memory_format),
                   labels.to(self.ctx.device, non_blocking=True))

    def _sample(self, policy: str, k: int) -> SampledOps:
        """Drawn on rank 0 from the checkpointed generator and broadcast, so every rank runs the same ops."""
        sampled = self.model.sample_ops(policy, k, self.generator) if self.ctx.is_main else None
        return broadcast_object(sampled, self.ctx)  # type: ignore[return-value]

    def run_arch_step(self, images: torch.Tensor, labels: torch.Tensor) -> StepResult:
        job = self.job
        assert job.objective is not None and self.cost_table is not None, "the warm-up run has no arch steps"
        self._train(arch=True)
        sampled = self._sample(job.settings.arch_policy, job.settings.arch_sample_num)
        result = arch_step(self.model, self.arch_optimizer, images, labels, sampled, self.cost_table,
                           lambda_=job.objective.lambda_, tau=job.objective.tau, ctx=self.ctx, amp=job.amp)
        self.progress.arch_steps += 1
        return result

    def run_weight_step(self, images: torch.Tensor, labels: torch.Tensor) -> StepResult:
        settings = self.job.settings
        self._train(arch=False)
        policy = settings.sample_policy if self.progress.epoch >= settings.warmup_epochs else settings.warmup_policy
        sampled = self._sample(policy, settings.weight_sample_num)
        self.progress.weight_steps += 1  # advanced before the step: the first weight step uses t = 1 (Q19)
        lr = weight_lr(self.progress.weight_steps, self.total_steps, settings.weight.lr, settings.weight.min_lr)
        return weight_step(self.trainer, self.weight_optimizer, images, labels, sampled, lr=lr, ctx=self.ctx,
                           amp=self.job.amp, update_unsampled=settings.weight.update_unsampled)

    def _train(self, *, arch: bool) -> None:
        """Training mode, with only the group being optimised requiring gradients (``set_param_grad_state``)."""
        self.model.train()
        for param in self.arch_params:
            param.requires_grad_(arch)
        for param in self.weight_params:
            param.requires_grad_(not arch)

    def _validate(self) -> ValResult:
        batches = self.batches(self.val_loader, self.progress.epoch, 0)
        bar = tqdm(batches, total=len(self.val_loader), desc=f"epoch {self.progress.epoch} val", unit="step",
                   file=sys.stderr, disable=not self.ctx.is_main, dynamic_ncols=True)
        return validate_supernet(self.model, bar, self.model.sample_ops("all"), ctx=self.ctx, amp=self.job.amp)


def _table_on(table: CostTable, device: torch.device) -> CostTable:
    """The cost table as float32 tensors on the search device, converted once instead of in every step."""
    def move(t: torch.Tensor) -> torch.Tensor:
        return t.to(device=device, dtype=torch.float32)

    return dataclasses.replace(table, heads=tuple(map(move, table.heads)), stacks=tuple(map(move, table.stacks)),
                               final=move(table.final))


def _accumulate(sums: dict[str, float], phase: str, result: StepResult) -> None:
    for key, value in dataclasses.asdict(result).items():
        sums[f"{phase}_{key}"] = sums.get(f"{phase}_{key}", 0.0) + value
    sums[f"{phase}_n"] = sums.get(f"{phase}_n", 0.0) + 1


def run_search(job: SearchJob, ctx: DistContext) -> str:
    """Run (or resume) ``job`` to its end epoch; return how it started (for the CLI's message)."""
    search = SearchRun(job, ctx)
    how = search.restore()
    if ctx.is_main:
        tqdm.write(f"search {job.space.name}/{job.variant}: {how}", file=sys.stderr)
    with stop_on_signals() as search.stop:
        search.run()
    return how
