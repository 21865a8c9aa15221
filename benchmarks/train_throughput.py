"""Images/s of one retraining step (forward, label-smoothed CE, backward, SGD) of DenseNAS-C against torchvision's
MobileNetV2, same resolution and batch, in this process; on CUDA also bf16 autocast + channels_last against fp32.

Synthetic inputs (data loading is benchmarked in benchmarks/data_loading.py). Models and settings run round-robin,
several rounds, and the best round counts, so a burst of load from other jobs hurts every entry alike. At 224 px
the script projects the paper's retraining of DenseNAS-C (240 epochs of ImageNet-1k's 1,281,167 images, SPEC §8.2)
in device-hours from the measured rate.

Run: python benchmarks/train_throughput.py                  # CPU: 32 px, batch 64, fp32
     python benchmarks/train_throughput.py --device cuda     # GPU: 224 px, batch 256, fp32 vs bf16+channels_last
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from densenas.config import load_params
from densenas.lut.profile import device_info
from densenas.registry import create_model
from densenas.train import make_criterion, train_step

REPO = Path(__file__).resolve().parents[1]
PAPER_EPOCHS = 240
IMAGENET_TRAIN_IMAGES = 1_281_167


@dataclass(frozen=True)
class Setting:
    name: str
    amp: bool
    channels_last: bool


FP32 = Setting("fp32", amp=False, channels_last=False)
BF16_CHANNELS_LAST = Setting("bf16 + channels_last", amp=True, channels_last=True)


def settings(device: str) -> list[Setting]:
    return [FP32, BF16_CHANNELS_LAST] if device == "cuda" else [FP32]


def train_step_rate(net: nn.Module, setting: Setting, *, batch: int, input_size: int, num_classes: int,
                    device: str, steps: int, warmup: int) -> float:
    """Images/s over ``steps`` training steps after ``warmup`` untimed ones: the trainer's step, loss and optimiser."""
    recipe = load_params(REPO / "params.yaml").train
    criterion = make_criterion(recipe)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=recipe.momentum,
                                weight_decay=recipe.weight_decay)
    memory_format = torch.channels_last if setting.channels_last else torch.contiguous_format
    net.to(memory_format=memory_format).train()
    images = torch.randn(batch, 3, input_size, input_size, device=device).to(memory_format=memory_format)
    labels = torch.randint(0, num_classes, (batch,), device=device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for index in range(warmup + steps):
        if index == warmup:
            sync()
            start = time.perf_counter()
        train_step(net, optimizer, criterion, images, labels, amp=setting.amp)
    sync()
    return steps * batch / (time.perf_counter() - start)


def best_rates(models: list[str], chosen: list[Setting], *, batch: int, input_size: int, num_classes: int,
               device: str, steps: int, warmup: int, rounds: int) -> dict[tuple[str, str], float]:
    """Best images/s of every (model, setting) over ``rounds`` round-robin rounds."""
    torch.manual_seed(0)
    nets = {name: create_model(name, num_classes=num_classes).to(device) for name in models}
    best: dict[tuple[str, str], float] = {}
    for _ in range(rounds):
        for setting in chosen:
            for name, net in nets.items():
                rate = train_step_rate(net, setting, batch=batch, input_size=input_size, num_classes=num_classes,
                                       device=device, steps=steps, warmup=warmup)
                best[name, setting.name] = max(rate, best.get((name, setting.name), 0.0))
    return best


def paper_retraining_hours(images_per_s: float) -> float:
    """Device-hours of 240 epochs of ImageNet-1k at ``images_per_s`` (compute only, data loading excluded)."""
    return PAPER_EPOCHS * IMAGENET_TRAIN_IMAGES / images_per_s / 3600


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--input-size", type=int, default=None, help="default: 32 on CPU, 224 on CUDA")
    parser.add_argument("--batch", type=int, default=None, help="default: 64 on CPU, 256 on CUDA")
    parser.add_argument("--num-classes", type=int, default=None, help="default: 10 on CPU, 1000 on CUDA")
    parser.add_argument("--models", nargs="+", default=["densenas_c", "mobilenet_v2"])
    parser.add_argument("--steps", type=int, default=None, help="timed steps per round (default: 5 CPU, 50 CUDA)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (CPU)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    args = parser.parse_args()
    cuda = args.device == "cuda"
    input_size = args.input_size or (224 if cuda else 32)
    batch = args.batch or (256 if cuda else 64)
    num_classes = args.num_classes or (1000 if cuda else 10)
    steps = args.steps or (50 if cuda else 5)
    if args.threads:
        torch.set_num_threads(args.threads)
    if cuda:
        torch.backends.cudnn.benchmark = True

    best = best_rates(args.models, settings(args.device), batch=batch, input_size=input_size,
                      num_classes=num_classes, device=args.device, steps=steps, warmup=args.warmup, rounds=args.rounds)

    baseline_model, baseline_setting = args.models[-1], settings(args.device)[0].name
    device = device_info(args.device)["name"]
    print(f"device {device} ({args.device}, {torch.get_num_threads()} threads), torch "
          f"{torch.__version__}, {dt.date.today()}; {input_size} px, batch {batch}, {num_classes} classes, "
          f"best of {args.rounds} rounds of {steps} steps")
    print(f"| model | setting | images/s | ratio to {baseline_model} {baseline_setting} |")
    print("|---|---|---|---|")
    for (name, setting), rate in best.items():
        print(f"| {name} | {setting} | {rate:.1f} | {rate / best[baseline_model, baseline_setting]:.2f} |")
    record = {"device": device, "device_type": args.device, "threads": torch.get_num_threads(),
              "torch": torch.__version__, "date": str(dt.date.today()), "input_size": input_size, "batch": batch,
              "num_classes": num_classes, "images_per_s": {f"{n}/{s}": r for (n, s), r in best.items()}}
    if input_size == 224 and "densenas_c" in args.models:
        hours = {s.name: paper_retraining_hours(best["densenas_c", s.name]) for s in settings(args.device)}
        record["paper_retraining_device_hours"] = hours
        for setting, value in hours.items():
            print(f"projection: DenseNAS-C, {PAPER_EPOCHS} epochs x {IMAGENET_TRAIN_IMAGES:,} images at this rate "
                  f"({setting}): {value:.1f} device-hours (compute only, data loading excluded)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
