"""The search's weight learning rate (SPEC.md §6.4): per-iteration cosine over weight steps only.

T_max = epochs × (N_train // batch + 1) as in the official scheduler; the first weight step uses t = 1 (quirk
Q19), architecture steps never advance t, and past T_max the rate stays at the floor (``weight.min_lr``, quirk Q1).
"""

from __future__ import annotations

from densenas.train.schedule import cosine_lr


def total_weight_steps(epochs: int, num_train: int, batch_size: int) -> int:
    """T_max of the official scheduler: one more step per epoch than full batches fit."""
    return epochs * (num_train // batch_size + 1)


def weight_lr(step: int, total_steps: int, peak_lr: float, min_lr: float) -> float:
    """lr of weight step ``step`` (1 for the first step of the search, Q19), clamped at ``min_lr`` after T_max."""
    return cosine_lr(min(step, total_steps), total_steps, peak_lr, min_lr)
