"""The retraining learning-rate schedule (SPEC.md §8.2): per-iteration cosine from the peak lr to ``min_lr``.

The official scheduler is advanced before every iteration from an initial step of −1, so iteration ``t``
(counted from 0 over the whole run) uses the value at ``t`` and the first one the peak lr (quirk Q19).
"""

from __future__ import annotations

import math

import torch


def cosine_lr(step: int, total_steps: int, peak_lr: float, min_lr: float) -> float:
    """lr at iteration ``step`` of ``total_steps``: min_lr + (peak − min_lr)·(1 + cos(π·step/total))/2."""
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    return min_lr + (peak_lr - min_lr) * (1 + math.cos(math.pi * step / total_steps)) / 2


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
