"""Keeping ranks in step during a DDP search: α/β gradients are averaged by hand (they are not DDP-managed).

The weights go through DDP in weight steps; α and β are small, so one flat all-reduce per architecture step is
enough. Every rank then applies the same Adam update and stays bit-identical.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist

from densenas.distributed import DistContext


def average_gradients(params: Sequence[torch.Tensor], ctx: DistContext) -> None:
    """Replace each ``.grad`` by its mean over ranks (one flat all-reduce); no-op for a single process."""
    if not ctx.distributed:
        return
    grads = [p.grad for p in params if p.grad is not None and p.numel()]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= ctx.world_size
    offset = 0
    for grad in grads:
        grad.copy_(flat[offset:offset + grad.numel()].view_as(grad))
        offset += grad.numel()


def broadcast_tensors(tensors: Sequence[torch.Tensor], ctx: DistContext) -> None:
    """Overwrite ``tensors`` with rank 0's values (α and β at the start of a run)."""
    if not ctx.distributed:
        return
    with torch.no_grad():
        for tensor in tensors:
            dist.broadcast(tensor.data, src=0)
