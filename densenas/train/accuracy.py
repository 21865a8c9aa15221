"""Top-1/top-5 accuracy on a labelled split (SPEC.md §8.3), for the per-epoch validation and the evaluate stage.

Counted on one process over the whole split, so every image counts exactly once.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Accuracy:
    top1: float   # percent
    top5: float   # percent
    count: int    # images seen


def topk_correct(logits: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> torch.Tensor:
    """Per k, how many labels are among the k highest logits (k capped at the number of classes)."""
    top = logits.topk(min(max(ks), logits.shape[1]), dim=1).indices
    hits = top == labels[:, None]
    return torch.stack([hits[:, :k].any(dim=1).sum() for k in ks])


@torch.no_grad()
def evaluate_accuracy(model: nn.Module, loader: Iterable[tuple[torch.Tensor, torch.Tensor]], *,
                      device: torch.device, channels_last: bool = False, amp: bool = False) -> Accuracy:
    """Top-1/top-5 of ``model`` in eval mode over ``loader`` (the train/eval mode is restored afterwards)."""
    was_training = model.training
    model.eval()
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if amp else nullcontext()
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    counts = torch.zeros(3, dtype=torch.int64, device=device)  # top-1 hits, top-5 hits, images
    try:
        for images, labels in loader:
            images = images.to(device, non_blocking=True, memory_format=memory_format)
            labels = labels.to(device, non_blocking=True)
            with autocast:
                logits = model(images)
            counts[:2] += topk_correct(logits.float(), labels)
            counts[2] += labels.numel()
    finally:
        model.train(was_training)
    top1, top5, count = counts.tolist()
    if count == 0:
        raise ValueError("evaluation split is empty")
    return Accuracy(top1=100.0 * top1 / count, top5=100.0 * top5 / count, count=count)
