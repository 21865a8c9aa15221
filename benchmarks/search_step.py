"""Cost of one DenseNAS search step against plain training: an architecture step (2 ops per mixed layer, chained
cost, Adam, α re-scaling) plus a weight step (1 op, SGD) of the MBV2 supernet, against a forward + backward + SGD
step of DenseNAS-C at the same batch and resolution, in this process. Also the embedded default's all-op steps
(warm-up weight step, architecture step) and the supernet validation step (all ops).

Synthetic inputs (data loading: benchmarks/data_loading.py). Entries run round-robin for several rounds and the
best round counts, so a burst of load from other jobs hurts every entry alike. At 224 px the script projects the
paper's MBV2 search (SPEC §6.2: 150 epochs, 50 of them warm-up, validation from epoch 120, on ~102k search-train
and ~26k search-val images) in device-hours at the measured per-device rates (the paper: 64 V100 GPU-hours).

Run: python benchmarks/search_step.py                       # CPU: 32 px, batch 16 (run with OMP_NUM_THREADS set)
     python benchmarks/search_step.py --device cuda          # GPU: 224 px, batch 88 (= the paper's 352 over 4 GPUs)
     python benchmarks/search_step.py --device cuda --amp --channels-last
     python benchmarks/search_step.py --width-mult 0.25      # also the proxy supernet (search...width_mult)
     python benchmarks/search_step.py --conv-pointwise       # also every step with 1x1 convs as nn.Conv2d (before
                                                             # densenas.pointwise), interleaved
"""

from __future__ import annotations

import argparse
import datetime as dt
import time
from collections.abc import Callable

import torch

from densenas.distributed import DistContext
from densenas.lut.profile import device_info
from densenas.official_lut import import_official_lut
from densenas.pointwise import use_gemm_pointwise
from densenas.registry import create_model
from densenas.search.arch_step import arch_step
from densenas.search.weight_step import validate_supernet, weight_step
from densenas.spaces import load_space
from densenas.supernet import Supernet
from densenas.train import train_step

PAPER_EPOCHS, PAPER_WARMUP, PAPER_VAL_START = 150, 50, 120
SEARCH_TRAIN_IMAGES, SEARCH_VAL_IMAGES = 102_400, 25_600  # 80/20 of ~1,280 images x 100 classes (SPEC §6.1)
PAPER_GPU_HOURS = 64
NUM_CLASSES = 100
SEARCH_STEP = "search step (arch + weight)"
BASELINE = "DenseNAS-C train step (baseline)"
CONV_POINTWISE = ", 1x1 as nn.Conv2d"


def supernet_steps(batch: int, input_size: int, device: str, amp: bool, channels_last: bool,
                   width_mult: float = 1.0, gemm_pointwise: bool = True) -> dict[str, Callable[[], None]]:
    """One closure per supernet step kind, sharing a model and optimisers as the search does."""
    torch.manual_seed(0)
    space = load_space("mbv2")
    model = Supernet(space, num_classes=NUM_CLASSES, width_mult=width_mult).to(device)
    if gemm_pointwise:
        use_gemm_pointwise(model)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model.to(memory_format=memory_format).train()
    table, _ = import_official_lut("lat_list_densenas_mbv2_xp32", space)
    weights = torch.optim.SGD(model.weight_parameters(), lr=1e-3, momentum=0.9, weight_decay=4e-5)
    arch = torch.optim.Adam([{"params": model.alpha_parameters()}, {"params": model.beta_parameters()}], lr=3e-4,
                            betas=(0.5, 0.999), weight_decay=1e-3)
    for param in model.parameters():
        param.grad = torch.zeros_like(param)
    ctx = DistContext(rank=0, world_size=1, local_rank=0, device=torch.device(device))
    images = torch.randn(batch, 3, input_size, input_size, device=device).to(memory_format=memory_format)
    labels = torch.randint(0, NUM_CLASSES, (batch,), device=device)
    generator = torch.Generator().manual_seed(0)

    def freeze(arch_step_: bool) -> None:
        for p in model.arch_parameters():
            p.requires_grad_(arch_step_)
        for p in model.weight_parameters():
            p.requires_grad_(not arch_step_)

    everything = model.sample_ops("all")

    def arch_only(all_ops: bool = False) -> None:  # all_ops: arch_policy all, the embedded architecture step
        freeze(True)
        sampled = everything if all_ops else model.sample_ops("prob", 2, generator)
        arch_step(model, arch, images, labels, sampled, table, lambda_=0.15, tau=15.0, ctx=ctx, amp=amp)

    def arch_then_weight() -> None:
        arch_only()
        freeze(False)
        weight_step(model, weights, images, labels, model.sample_ops("prob", 1, generator), lr=1e-3, ctx=ctx,
                    amp=amp)

    def weight_only(update_unsampled: bool = True) -> None:
        freeze(False)
        weight_step(model, weights, images, labels, model.sample_ops("uniform", 1, generator), lr=1e-3, ctx=ctx,
                    amp=amp, update_unsampled=update_unsampled)
        if update_unsampled:  # the faithful step needs every gradient present (zeros), as the search sets it up
            for param in model.weight_parameters():
                if param.grad is None:
                    param.grad = torch.zeros_like(param)

    def warmup_all_ops() -> None:  # warmup_policy all, update_unsampled false: the embedded warm-up's step
        freeze(False)
        weight_step(model, weights, images, labels, everything, lr=1e-3, ctx=ctx, amp=amp, update_unsampled=False)

    def validation() -> None:
        validate_supernet(model, [(images, labels)], everything, ctx=ctx, amp=amp)

    return {SEARCH_STEP: arch_then_weight, "arch step": arch_only,
            "arch step, all ops (arch_policy all)": lambda: arch_only(all_ops=True), "weight step": weight_only,
            "weight step, sampled ops only (update_unsampled false)": lambda: weight_only(update_unsampled=False),
            "warm-up weight step, all ops (warmup_policy all)": warmup_all_ops,
            "supernet validation (all ops)": validation}


def baseline_step(batch: int, input_size: int, device: str, amp: bool,
                  channels_last: bool, gemm_pointwise: bool = True) -> Callable[[], None]:
    """Forward + CE + backward + SGD of DenseNAS-C (the published C, 100 classes): the retraining loop's step."""
    torch.manual_seed(0)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    net = create_model("densenas_c", num_classes=NUM_CLASSES).to(device).to(memory_format=memory_format).train()
    if gemm_pointwise:
        use_gemm_pointwise(net)
    optimizer = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9, weight_decay=4e-5)
    images = torch.randn(batch, 3, input_size, input_size, device=device).to(memory_format=memory_format)
    labels = torch.randint(0, NUM_CLASSES, (batch,), device=device)

    criterion = torch.nn.CrossEntropyLoss()

    def step() -> None:
        train_step(net, optimizer, criterion, images, labels, amp=amp)

    return step


def best_seconds(entries: dict[str, Callable[[], None]], device: str, *, steps: int, warmup: int,
                 rounds: int) -> dict[str, float]:
    """Seconds per step of every entry: best round of ``steps`` timed steps, entries interleaved per round."""
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for step in entries.values():
        for _ in range(warmup):
            step()
    best = dict.fromkeys(entries, float("inf"))
    for _ in range(rounds):
        for name, step in entries.items():
            sync()
            start = time.perf_counter()
            for _ in range(steps):
                step()
            sync()
            best[name] = min(best[name], (time.perf_counter() - start) / steps)
    return best


def step_seconds(device: str, *, batch: int, input_size: int, amp: bool, channels_last: bool, steps: int,
                 rounds: int, warmup: int = 1, proxy_width: float | None = None,
                 conv_pointwise: bool = False) -> dict[str, float]:
    """Seconds per step of every supernet step kind and of the DenseNAS-C baseline (``BASELINE``); with
    ``proxy_width``, also those of the proxy supernet at that width; with ``conv_pointwise``, also every step with
    the 1×1 convs left as ``nn.Conv2d`` (``CONV_POINTWISE`` appended to the name); all interleaved."""
    entries = supernet_steps(batch, input_size, device, amp, channels_last)
    if proxy_width is not None:
        proxy = supernet_steps(batch, input_size, device, amp, channels_last, width_mult=proxy_width)
        entries.update({f"{name}, proxy width x{proxy_width}": step for name, step in proxy.items()})
    entries[BASELINE] = baseline_step(batch, input_size, device, amp, channels_last)
    if conv_pointwise:
        plain = supernet_steps(batch, input_size, device, amp, channels_last, gemm_pointwise=False)
        plain[BASELINE] = baseline_step(batch, input_size, device, amp, channels_last, gemm_pointwise=False)
        entries.update({f"{name}{CONV_POINTWISE}": step for name, step in plain.items()})
    return best_seconds(entries, device, steps=steps, warmup=warmup, rounds=rounds)


def project_paper_search(seconds: dict[str, float], batch: int) -> float:
    """Device-hours of the paper's MBV2 search at ``batch`` images per device and step (communication ignored)."""
    search_epochs, val_epochs = PAPER_EPOCHS - PAPER_WARMUP, PAPER_EPOCHS - PAPER_VAL_START
    total = (PAPER_EPOCHS * SEARCH_TRAIN_IMAGES / batch * seconds["weight step"]
             + search_epochs * SEARCH_VAL_IMAGES / batch * seconds["arch step"]
             + val_epochs * SEARCH_VAL_IMAGES / batch * seconds["supernet validation (all ops)"])
    return total / 3600


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--batch", type=int, default=None, help="per device (default: cpu 16, cuda 88 = 352 / 4)")
    parser.add_argument("--input-size", type=int, default=None, help="default: cpu 32, cuda 224")
    parser.add_argument("--amp", action="store_true", help="bf16 autocast (search.amp)")
    parser.add_argument("--channels-last", action="store_true", help="NHWC (search.channels_last)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per round (default: cpu 3, cuda 10)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--width-mult", type=float, default=None,
                        help="also time the proxy supernet at this width (search.spaces.<space>.width_mult)")
    parser.add_argument("--conv-pointwise", action="store_true",
                        help="also time every step with the 1x1 convs as nn.Conv2d (not densenas.pointwise)")
    args = parser.parse_args()
    cuda = args.device == "cuda"
    batch = args.batch or (88 if cuda else 16)
    size = args.input_size or (224 if cuda else 32)
    steps = args.steps or (10 if cuda else 3)
    seconds = step_seconds(args.device, batch=batch, input_size=size, amp=args.amp,
                           channels_last=args.channels_last, steps=steps, rounds=args.rounds,
                           proxy_width=args.width_mult, conv_pointwise=args.conv_pointwise)
    device = device_info("cuda" if cuda else "cpu")["name"]
    print(f"# search step benchmark, {dt.date.today()}, {device}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, batch {batch}, {size} px, amp {args.amp}, "
          f"channels_last {args.channels_last}, best of {args.rounds} rounds x {steps} steps")
    baseline = seconds[BASELINE]
    print("| step | ms/step | images/s | time ratio to a DenseNAS-C step | nn.Conv2d 1x1 / GEMM 1x1 |\n"
          "|---|---|---|---|---|")
    for name, value in seconds.items():
        images = 2 * batch if name.startswith(SEARCH_STEP) else batch  # a search step takes a val and a train batch
        conv = seconds.get(f"{name}{CONV_POINTWISE}")
        print(f"| {name} | {value * 1e3:.1f} | {images / value:.1f} | {value / baseline:.2f}x | "
              f"{f'{conv / value:.2f}x' if conv else ''} |")
    for width in (1.0, *([args.width_mult] if args.width_mult else [])):
        weights = sum(p.numel() for p in Supernet(load_space("mbv2"), num_classes=10, width_mult=width)
                      .weight_parameters())
        print(f"supernet width x{width}: {weights / 1e6:.2f} M weights, {weights * 8 / 1e6:.0f} MB of float32 "
              "weights + SGD momentum in a search checkpoint (10 classes)")
    if size == 224:
        hours = project_paper_search(seconds, batch)
        print(f"projected paper MBV2 search (150 epochs, batch {batch} per device): {hours:.1f} device-hours "
              f"on this device (paper: {PAPER_GPU_HOURS} V100 GPU-hours)")


if __name__ == "__main__":
    main()
