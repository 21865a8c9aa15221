"""The weight step of the search (SPEC.md §4.4) and supernet validation (§6.2).

A weight step trains the supernet weights on a search-train batch with plain cross-entropy, one sampled op per
mixed layer; validation runs every op with BN in training mode (quirk Q5) on search-val and updates nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from densenas.cost_table import CostTable
from densenas.distributed import DistContext
from densenas.search.arch_step import StepResult, reduce_stats
from densenas.supernet import SampledOps, Supernet
from densenas.train.schedule import set_lr


def weight_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    labels: torch.Tensor,
    sampled: SampledOps,
    *,
    lr: float,
    ctx: DistContext,
    amp: bool = False,
    update_unsampled: bool = True,
) -> StepResult:
    """One SGD step at ``lr``; ``model`` is the DDP-wrapped supernet under torchrun (it averages the gradients).

    ``update_unsampled`` (faithful): gradients are zeroed, not dropped, so momentum and weight decay keep acting
    on ops that were not sampled, as under the PyTorch versions the official code ran on. False drops them, so
    SGD skips every op that did not run (docs/deviations.md): the step then costs what the sampled path costs.
    """
    set_lr(optimizer, lr)
    with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=amp):
        logits, _ = model(images, sampled)
    ce = F.cross_entropy(logits.float(), labels)
    optimizer.zero_grad(set_to_none=not update_unsampled)
    ce.backward()
    optimizer.step()
    return reduce_stats(ce, ce, logits, labels, None, ctx)


@dataclass(frozen=True)
class ValResult:
    loss: float
    top1: float
    top5: float


@torch.no_grad()
def validate_supernet(
    model: Supernet,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    sampled: SampledOps,
    *,
    ctx: DistContext,
    amp: bool = False,
) -> ValResult:
    """Loss, top-1 and top-5 of the supernet with every op (``sampled`` = all), summed over every rank's batches.

    BN stays in training mode (Q5): the supernet's running statistics are never meant to be used during search.
    """
    model.train()
    totals = torch.zeros(4, dtype=torch.float64, device=ctx.device)
    for images, labels in batches:
        with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=amp):
            logits, _ = model(images, sampled)
        logits = logits.float()
        hits = logits.topk(min(5, logits.shape[1]), dim=1).indices == labels[:, None]
        totals += torch.stack([F.cross_entropy(logits, labels, reduction="sum"), hits[:, 0].sum(),
                               hits.any(dim=1).sum(), labels.new_tensor(len(labels))]).double()
    if ctx.distributed:
        dist.all_reduce(totals)
    loss, top1, top5, count = totals.tolist()
    count = max(count, 1.0)
    return ValResult(loss=loss / count, top1=top1 / count, top5=top5 / count)


def expected_cost_all_ops(model: Supernet, cost_table: CostTable) -> float:
    """The chained cost with every op weighted by softmax(α/T): the search's current cost estimate."""
    with torch.no_grad():
        return float(model.expected_cost(model.sample_ops("all"), cost_table))
