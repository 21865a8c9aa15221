"""The parts of benchmarks/gpu_suite.py: each one measures or checks one GPU concern through the project's own code
(SearchRun and its steps, the trainer's step, `densenas lut`, the loaders, the other benchmarks' functions).

A part runs in its own process (the suite's driver enforces its time limit) and writes what it has found so far to
its record after every step, so a part that is killed still leaves its figures behind.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from densenas.atomic import write_json

REPO = Path(__file__).resolve().parents[1]
OFFICIAL_TABLE = "lat_list_densenas_mbv2_xp32"
PAPER_MEASURED_MS = {"densenas_a": 13.6, "densenas_b": 15.4, "densenas_c": 17.9}  # paper Table 1, TITAN-XP


@dataclass(frozen=True)
class Sizes:
    """Every size the suite runs at; ``FULL`` for a GPU run, ``QUICK`` for the CPU rehearsal."""

    fixture_images: int      # ImageNet-like JPEGs (train; val gets a tenth)
    fixture_classes: int
    pack_short_side: int
    input_size: int          # the prepared data's crop (search correctness, DDP, loader)
    eval_resize: int
    workers: int             # loader and prepare processes
    amp_batch: int           # correctness: fp32 against bf16 + channels_last on the same batches
    amp_steps: int
    amp_rtol: float          # relative difference allowed between the first steps' losses (same weights, batch)
    ddp_batch: int
    ddp_steps: int
    lut_input: int           # the `densenas lut` run (official table: 224 px, batch 32)
    lut_batch: int
    lut_warmup: int
    lut_repeats: int
    lat_archs: int           # latency prediction: random architectures besides DenseNAS-A/B/C
    lat_input: int
    lat_batch: int
    lat_warmup: int
    lat_repeats: int
    lat_rounds: int
    step_batch: int          # search step (paper: 352 over 4 GPUs = 88)
    step_input: int
    step_steps: int
    step_warmup: int
    step_rounds: int
    train_batch: int         # retraining throughput
    train_input: int
    train_classes: int
    train_steps: int
    train_warmup: int
    train_rounds: int
    load_batch: int          # data loading
    load_passes: int


FULL = Sizes(fixture_images=256, fixture_classes=8, pack_short_side=256, input_size=224, eval_resize=256,
             workers=min(8, os.cpu_count() or 1), amp_batch=32, amp_steps=3, amp_rtol=0.05, ddp_batch=16, ddp_steps=2,
             lut_input=224, lut_batch=32, lut_warmup=20, lut_repeats=100,
             lat_archs=30, lat_input=224, lat_batch=32, lat_warmup=10, lat_repeats=50, lat_rounds=3,
             step_batch=88, step_input=224, step_steps=5, step_warmup=1, step_rounds=2,
             train_batch=256, train_input=224, train_classes=1000, train_steps=20, train_warmup=3, train_rounds=2,
             load_batch=64, load_passes=8)
QUICK = Sizes(fixture_images=40, fixture_classes=4, pack_short_side=40, input_size=32, eval_resize=32, workers=0,
              # BN over 4 images of 1x1 maps makes bf16 noisy: the rehearsal checks the path, a GPU run the numerics
              amp_batch=4, amp_steps=1, amp_rtol=0.25, ddp_batch=4, ddp_steps=1,
              lut_input=32, lut_batch=2, lut_warmup=0, lut_repeats=1,
              lat_archs=4, lat_input=32, lat_batch=1, lat_warmup=0, lat_repeats=2, lat_rounds=1,
              step_batch=2, step_input=32, step_steps=1, step_warmup=0, step_rounds=1,
              train_batch=2, train_input=32, train_classes=10, train_steps=1, train_warmup=0, train_rounds=1,
              load_batch=4, load_passes=1)


class SkipPart(Exception):
    """The part cannot run here (e.g. its input is missing); recorded as skipped with this reason."""


class PartRecord:
    """The part's JSON record, rewritten atomically after every change."""

    def __init__(self, path: Path) -> None:
        self.path, self.data = path, {"checks": {}, "figures": {}, "lines": [], "skipped": []}

    def update(self, **values: Any) -> None:
        self.data.update(values)
        write_json(self.path, self.data)

    def figure(self, key: str, value: Any, line: str | None = None) -> None:
        self.data["figures"][key] = value
        self.line(line)

    def line(self, text: str | None) -> None:
        """One line of the Markdown summary (None: none, the record is still rewritten)."""
        if text:
            self.data["lines"].append(text)
        write_json(self.path, self.data)

    def check(self, name: str, passed: bool, detail: str) -> None:
        self.data["checks"][name] = {"passed": bool(passed), "detail": detail}
        self.data["lines"].append(f"{'PASS' if passed else 'FAIL'} {name}: {detail}")
        write_json(self.path, self.data)

    def skip(self, what: str, reason: str) -> None:
        self.data["skipped"].append(f"{what}: {reason}")
        self.data["lines"].append(f"skipped {what}: {reason}")
        write_json(self.path, self.data)


@dataclass(frozen=True)
class PartContext:
    device: str
    sizes: Sizes
    work: Path               # shared between parts: the prepared fixture lives here
    rec: PartRecord
    deadline: float          # time.monotonic() by which the part should be done (the driver kills it later)

    @property
    def prepared(self) -> Path:
        return self.work / "prepared"

    def time_left(self) -> float:
        return self.deadline - time.monotonic()

    def sync(self) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()


def suite_params(ctx: PartContext) -> Any:
    """The paper preset at the suite's sizes: the faithful search and retraining settings, tracking off."""
    from densenas.config import load_params

    s = ctx.sizes
    # The preset's ghost-BN groups (88 = 352 images over 4 GPUs) must divide the step's batch; a smaller batch uses
    # its own statistics instead.
    group = load_params(REPO / "params.yaml", preset="paper").search.spaces["mbv2"].bn_group_size
    keeps_groups = group is None or s.ddp_batch % group == 0
    overrides = {
        "tracking": {"enabled": False},
        "lut": {"calibration_archs": max(s.lat_archs, 3), "calibration_rounds": 1},
        "data": {"num_search_classes": s.fixture_classes, "max_images_per_class": None,
                 "max_search_images_per_class": None, "input_size": s.input_size, "eval_resize": s.eval_resize,
                 "pack_short_side": s.pack_short_side, "workers": s.workers, "pin_memory": ctx.device == "cuda"},
        "search": {"spaces": {"mbv2": {"batch_size": s.ddp_batch,
                                       **({} if keeps_groups else {"bn_group_size": None})}}},
    }
    return load_params(REPO / "params.yaml", preset="paper", overrides=overrides)


def grads_finite(params: list[torch.Tensor]) -> bool:
    grads = [p.grad.detach().float().abs().amax() for p in params if p.grad is not None and p.grad.numel()]
    return bool(torch.stack(grads).isfinite().all()) if grads else True


def max_rel_diff(reference: list[float], other: list[float]) -> float:
    return max(abs(a - b) / max(abs(a), 1e-12) for a, b in zip(reference, other, strict=True))


def preload() -> None:
    """Import what the parts use, once, in the driver (none of it touches CUDA): each forked part then starts in a
    fraction of a second instead of re-importing torch, pandas and the pipeline."""
    import data_loading  # noqa: F401
    import latency_prediction  # noqa: F401
    import search_step  # noqa: F401
    import train_throughput  # noqa: F401

    import densenas.cli
    import densenas.search.job
    import densenas.search.loop  # noqa: F401


# -- parts --------------------------------------------------------------------------------------------------------
def part_fixture(ctx: PartContext) -> None:
    """ImageNet-like JPEGs prepared by `densenas prepare`'s code path: the data of the search, DDP and loader parts."""
    from data_loading import write_fixture

    from densenas.data import prepare

    s = ctx.sizes
    start = time.perf_counter()
    write_fixture(ctx.work / "raw", s.fixture_images, classes=s.fixture_classes)
    generated = time.perf_counter() - start
    manifest = prepare([str(ctx.work / "raw")], ctx.prepared, suite_params(ctx).data)
    counts = {split: entry["count"] for split, entry in manifest["splits"].items()}
    ctx.rec.figure("split_images", counts,
                   f"fixture: {s.fixture_images} JPEGs in {generated:.1f} s, prepared in "
                   f"{time.perf_counter() - start - generated:.1f} s; splits {counts}")


def _official_lut(ctx: PartContext) -> Path:
    from densenas.lut import write_lut
    from densenas.official_lut import official_lut_document

    path = ctx.work / "lut_official_mbv2.json"
    if not path.is_file():
        write_lut(path, official_lut_document(OFFICIAL_TABLE, "mbv2")[0])
    return path


def _search_job(ctx: PartContext, dist_ctx: Any) -> Any:
    from densenas.search.job import make_job

    if not (ctx.prepared / "manifest.json").is_file():
        raise SkipPart("no prepared fixture (see the fixture part)")
    return make_job(suite_params(ctx), dist_ctx, space_name="mbv2", variant="lat_c", lut=_official_lut(ctx),
                    prepared_dir=ctx.prepared, out_dir=ctx.work / "search_unused", warmup_from=None)


def _search_losses(run: Any, batches: list[tuple[torch.Tensor, torch.Tensor]],
                   channels_last: bool) -> tuple[list[float], bool]:
    """Arch + weight steps of a SearchRun on fixed batches; (losses of every step, every gradient finite)."""
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    losses, finite = [], True
    for images, labels in batches:
        images = images.to(memory_format=memory_format)
        losses.append(run.run_arch_step(images, labels).loss)
        finite &= grads_finite(run.model.arch_parameters())
        losses.append(run.run_weight_step(images, labels).loss)
        finite &= grads_finite(run.model.weight_parameters())
    return losses, finite


def _train_losses(net: torch.nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]], recipe: Any, amp: bool,
                  channels_last: bool) -> tuple[list[float], bool]:
    from densenas.train import make_criterion, train_step

    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    net.to(memory_format=memory_format).train()
    optimizer = torch.optim.SGD(net.parameters(), lr=recipe.effective_lr, momentum=recipe.momentum,
                                weight_decay=recipe.weight_decay)
    criterion = make_criterion(recipe)
    losses, finite = [], True
    for images, labels in batches:
        loss, _ = train_step(net, optimizer, criterion, images.to(memory_format=memory_format), labels, amp=amp)
        losses.append(float(loss.detach()))
        finite &= grads_finite(list(net.parameters()))
    return losses, finite


def _record_amp(ctx: PartContext, what: str, fp32: tuple[list[float], bool], bf16: tuple[list[float], bool]) -> None:
    (ref, ref_finite), (low, low_finite) = fp32, bf16
    ctx.rec.figure(f"{what}_losses", {"fp32": ref, "bf16_channels_last": low})
    values = [*ref, *low]
    ctx.rec.check(f"{what}: losses finite", all(math.isfinite(v) for v in values), f"{len(values)} losses")
    ctx.rec.check(f"{what}: gradients finite", ref_finite and low_finite, f"fp32 {ref_finite}, bf16 {low_finite}")
    # Only the first step starts from the same weights; afterwards the two runs take different updates.
    first, every = max_rel_diff(ref[:1], low[:1]), max_rel_diff(ref, low)
    rtol = ctx.sizes.amp_rtol
    ctx.rec.check(f"{what}: bf16 + channels_last loss close to fp32", first <= rtol,
                  f"first step relative difference {first:.4f} (allowed {rtol}), largest over {len(ref)} steps "
                  f"{every:.4f}; fp32 {[round(v, 4) for v in ref]}, bf16 {[round(v, 4) for v in low]}")


def part_correctness(ctx: PartContext) -> None:
    """fp32 against bf16 autocast + channels_last from the same weights on the same batches: a SearchRun's arch and
    weight steps (the MBV2 supernet) and the trainer's step (DenseNAS-C)."""
    from densenas.checkpoint import seed_everything
    from densenas.distributed import DistContext
    from densenas.registry import create_model
    from densenas.search.loop import SearchRun

    s = ctx.sizes
    dist_ctx = DistContext(rank=0, world_size=1, local_rank=0, device=torch.device(ctx.device))
    job = _search_job(ctx, dist_ctx)
    generator = torch.Generator().manual_seed(0)

    def batches(classes: int, size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [(torch.randn(s.amp_batch, 3, size, size, generator=generator).to(ctx.device),
                 torch.randint(0, classes, (s.amp_batch,), generator=generator).to(ctx.device))
                for _ in range(s.amp_steps)]

    search_batches = batches(job.num_classes, s.input_size)
    results = [_search_losses(SearchRun(dataclasses.replace(job, amp=amp, channels_last=amp), dist_ctx),
                              search_batches, channels_last=amp) for amp in (False, True)]
    _record_amp(ctx, "MBV2 supernet search steps (arch + weight)", *results)

    recipe = suite_params(ctx).train
    seed_everything(0)
    net = create_model("densenas_c", num_classes=s.train_classes).to(ctx.device)
    train_batches = batches(s.train_classes, s.input_size)
    results = [_train_losses(copy.deepcopy(net), train_batches, recipe, amp=amp, channels_last=amp)
               for amp in (False, True)]
    _record_amp(ctx, "DenseNAS-C training steps", *results)


def part_ddp(ctx: PartContext) -> None:
    """Under torchrun (one process): the search's own DDP set-up, NCCL on CUDA and gloo on CPU, loader batches."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from densenas.distributed import init_distributed, shutdown
    from densenas.search.loop import SearchRun

    dist_ctx = init_distributed(ctx.device)
    try:
        run = SearchRun(_search_job(ctx, dist_ctx), dist_ctx)
        backend = dist.get_backend() if dist.is_initialized() else None
        ctx.rec.check("process group", backend == ("nccl" if ctx.device == "cuda" else "gloo"),
                      f"backend {backend}, world size {dist_ctx.world_size}")
        ctx.rec.check("supernet wrapped in DDP", isinstance(run.trainer, DistributedDataParallel),
                      type(run.trainer).__name__)
        before = torch.cat([p.detach().flatten() for p in run.model.arch_parameters()]).clone()
        train, val = run.batches(run.train_loader, 0, 0), run.batches(run.val_loader, 0, 0)
        losses, start = [], time.perf_counter()
        for _, (images, labels), (val_images, val_labels) in zip(range(ctx.sizes.ddp_steps), train, val,
                                                                  strict=False):
            losses.append(run.run_arch_step(val_images, val_labels).loss)
            losses.append(run.run_weight_step(images, labels).loss)
        ctx.sync()
        after = torch.cat([p.detach().flatten() for p in run.model.arch_parameters()])
        ctx.rec.figure("losses", losses, f"{len(losses)} DDP steps in {time.perf_counter() - start:.2f} s")
        ctx.rec.check("DDP steps ran with finite losses", bool(losses) and all(map(math.isfinite, losses)),
                      f"losses {[round(v, 4) for v in losses]}")
        ctx.rec.check("architecture step moved α/β", not torch.equal(before, after), "α/β changed")
    finally:
        shutdown(dist_ctx)


def part_lut(ctx: PartContext) -> None:
    """`densenas lut` on this device at the official setting, and DenseNAS-A/B/C's path sums from it."""
    from latency_prediction import predict, published

    from densenas.cli import main as cli
    from densenas.lut import load_cost_table, read_lut
    from densenas.official_lut import import_official_lut
    from densenas.spaces import build_topology, load_space

    s, path = ctx.sizes, ctx.work / "lut_mbv2.json"
    start = time.perf_counter()
    code = cli(["--params", str(REPO / "params.yaml"), "--preset", "paper", "--set", "tracking.enabled=false",
                "--set", f"lut.warmup={s.lut_warmup}", "--set", f"lut.repeats={s.lut_repeats}",
                "--set", f"lut.calibration_archs={max(s.lat_archs, 3)}", "--set", "lut.calibration_rounds=1",
                "lut", "--space", "mbv2", "--device", ctx.device, "--batch", str(s.lut_batch), "--input-size",
                str(s.lut_input), "--out", str(path)])
    if code:
        raise RuntimeError(f"densenas lut exited with {code}")
    doc = read_lut(path)
    ctx.rec.figure("lut", {"entries": len(doc["entries"]), "seconds": round(time.perf_counter() - start, 1),
                           "device": doc["device"], "input_size": s.lut_input, "batch": s.lut_batch},
                   f"`densenas lut --device {ctx.device}`: {len(doc['entries'])} ops at {s.lut_input} px, batch "
                   f"{s.lut_batch}, in {time.perf_counter() - start:.1f} s on {doc['device']['name']}")
    space = load_space("mbv2")
    topology = build_topology(space)
    ours = load_cost_table(path, space, topology, input_size=s.lut_input, batch=s.lut_batch)
    official, _ = import_official_lut(OFFICIAL_TABLE, space)
    sums = {}
    for name, arch in published(space, topology).items():
        sums[name] = {"this_device_ms": predict(ours, space, topology, arch),
                      "official_titan_xp_ms": predict(official, space, topology, arch),
                      "paper_measured_ms": PAPER_MEASURED_MS[name]}
        ctx.rec.figure("path_sums", sums,
                       f"{name}: path sum {sums[name]['this_device_ms']:.2f} ms here; official TITAN-XP table "
                       f"{sums[name]['official_titan_xp_ms']:.2f} ms; paper measured {PAPER_MEASURED_MS[name]} ms")
    # a calibrated table prices a skip layer at 0 (a derived network has none); every other op takes time
    means = [entry["mean"] for key, entry in doc["entries"].items() if not key.startswith("skip_connect|")]
    ctx.rec.check("every LUT entry of an op a positive finite time", all(math.isfinite(v) and v > 0 for v in means),
                  f"{len(means)} op entries, {min(means):.4f} to {max(means):.4f} ms")
    ordered = [sums[n]["this_device_ms"] for n in ("densenas_a", "densenas_b", "densenas_c")]
    ctx.rec.figure("path_sums_ordered", ordered == sorted(ordered),  # as in the paper; noise at the rehearsal's sizes
                   f"path sums ordered A < B < C as in the paper: {'yes' if ordered == sorted(ordered) else 'no'}")


def part_latency(ctx: PartContext) -> None:
    """benchmarks/latency_prediction.py on this device: LUT-predicted against measured end-to-end latency."""
    from latency_prediction import predict_and_measure

    s = ctx.sizes
    summary = predict_and_measure(suite_params(ctx), device=ctx.device, archs=s.lat_archs, input_size=s.lat_input,
                                  batch=s.lat_batch, threads=1, warmup=s.lat_warmup, repeats=s.lat_repeats,
                                  rounds=s.lat_rounds, out=ctx.work / "latency" / "table_latency.csv",
                                  deadline=ctx.deadline - 0.1 * ctx.time_left())
    figures = {name: summary[name] for name in ("isolated", "calibrated", "mult_adds") if name in summary}
    ctx.rec.figure("summary", summary,
                   f"{summary['archs']} networks at {s.lat_input} px, batch {s.lat_batch}, {summary['rounds']} "
                   f"rounds, LUT {summary['lut_method']}: " + "; ".join(
                       f"{name}: MAPE {row['mape_pct']:.1f} %, within ±10 % {row['within_10pct']:.0%}, Spearman ρ "
                       f"{row['spearman_rho']:.2f}" for name, row in figures.items()))
    for name, row in summary["published"].items():
        predicted = row[f"predicted_{summary['lut_method']}_ms"]
        ctx.rec.line(f"{name}: predicted {predicted:.2f} ms, measured {row['measured_ms']:.2f} ms")
    ctx.rec.check("networks measured", summary["archs"] == s.lat_archs + 3, f"{summary['archs']} networks")


def _timed_settings(ctx: PartContext, what: str, settings: list[tuple[str, bool]],
                    measure: Callable[[str, bool], None]) -> None:
    """Run ``measure`` for each (name, flag) setting while the longest one so far still fits in the part's time
    left; record the ones skipped."""
    longest = 0.0
    for name, flag in settings:
        if longest and ctx.time_left() < 1.2 * longest:
            ctx.rec.skip(f"{what}, {name}", f"{ctx.time_left():.0f} s left of the part's budget, one setting took "
                                            f"{longest:.0f} s")
            continue
        start = time.monotonic()
        measure(name, flag)
        longest = max(longest, time.monotonic() - start)


SETTINGS = [("fp32", False), ("bf16 + channels_last", True)]


def part_search_step(ctx: PartContext) -> None:
    """benchmarks/search_step.py at the paper's per-GPU batch, and the paper's MBV2 search projected in GPU-hours."""
    from search_step import BASELINE, PAPER_GPU_HOURS, SEARCH_STEP, project_paper_search, step_seconds

    s = ctx.sizes

    def measure(name: str, amp: bool) -> None:
        seconds = step_seconds(ctx.device, batch=s.step_batch, input_size=s.step_input, amp=amp, channels_last=amp,
                               steps=s.step_steps, rounds=s.step_rounds, warmup=s.step_warmup)
        hours = project_paper_search(seconds, s.step_batch)
        ctx.rec.figure(name, {"ms_per_step": {k: v * 1e3 for k, v in seconds.items()},
                              "paper_search_device_hours": hours},
                       f"{name}: search step {seconds[SEARCH_STEP] * 1e3:.1f} ms "
                       f"({seconds[SEARCH_STEP] / seconds[BASELINE]:.2f}x a DenseNAS-C step) at batch {s.step_batch}, "
                       f"{s.step_input} px; paper MBV2 search projected {hours:.1f} device-hours "
                       f"(paper: {PAPER_GPU_HOURS} V100 GPU-hours)")

    _timed_settings(ctx, "search step", SETTINGS, measure)


def part_train_throughput(ctx: PartContext) -> None:
    """benchmarks/train_throughput.py for DenseNAS-C, fp32 and bf16 + channels_last; 240 ImageNet epochs projected."""
    from train_throughput import BF16_CHANNELS_LAST, FP32, best_rates, paper_retraining_hours

    s = ctx.sizes
    torch.backends.cudnn.benchmark = ctx.device == "cuda"  # as the trainer sets it

    def measure(name: str, amp: bool) -> None:
        setting = BF16_CHANNELS_LAST if amp else FP32
        rate = best_rates(["densenas_c"], [setting], batch=s.train_batch, input_size=s.train_input,
                          num_classes=s.train_classes, device=ctx.device, steps=s.train_steps,
                          warmup=s.train_warmup, rounds=s.train_rounds)["densenas_c", setting.name]
        hours = paper_retraining_hours(rate)
        ctx.rec.figure(name, {"images_per_s": rate, "paper_retraining_device_hours": hours},
                       f"{name}: DenseNAS-C {rate:.0f} images/s at batch {s.train_batch}, {s.train_input} px; 240 "
                       f"ImageNet epochs projected {hours:.1f} device-hours (compute only)")

    _timed_settings(ctx, "retraining throughput", SETTINGS, measure)


def part_data_loading(ctx: PartContext) -> None:
    """The packed-split training loader feeding this device, pinned memory (CUDA) against unpinned."""
    from data_loading import images_per_second

    from densenas.data import build_loader

    if not (ctx.prepared / "manifest.json").is_file():
        raise SkipPart("no prepared fixture (see the fixture part)")
    s, data = ctx.sizes, suite_params(ctx).data

    def measure(name: str, pin: bool) -> None:
        loader = build_loader(ctx.prepared, "train", dataclasses.replace(data, pin_memory=pin), train=True,
                              batch_size=s.load_batch, seed=0)
        rate = images_per_second(loader, s.load_passes, set_epoch=True, device=ctx.device)
        ctx.rec.figure(f"images_per_s_{name}", rate,
                       f"packed loader -> {ctx.device}, {name}: {rate:.0f} images/s ({s.workers} workers, batch "
                       f"{s.load_batch}, {s.input_size} px crops, best of {s.load_passes} passes)")

    pinning = [("pinned", True), ("not pinned", False)] if ctx.device == "cuda" else [("not pinned", False)]
    _timed_settings(ctx, "data loading", pinning, measure)


PARTS: dict[str, Callable[[PartContext], None]] = {
    "fixture": part_fixture, "correctness": part_correctness, "ddp": part_ddp, "lut": part_lut,
    "latency_prediction": part_latency, "search_step": part_search_step,
    "train_throughput": part_train_throughput, "data_loading": part_data_loading,
}
