"""The architecture step of the search (SPEC.md §4.4, §5.4): one Adam update of α and β on a search-val batch.

Loss = CE + λ·ln(cost)/ln(τ) with the chained expected cost; afterwards every α row is re-scaled so that the
sampled ops keep their total probability mass relative to the ops that were not drawn (ProxylessNAS).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from densenas.cost_table import CostTable
from densenas.distributed import DistContext
from densenas.search.sync import average_gradients
from densenas.supernet import SampledOps, Supernet


@dataclass(frozen=True)
class StepResult:
    """Per-batch figures of one step, averaged over ranks (``cost`` is NaN when no cost was computed)."""

    loss: float
    ce: float
    top1: float
    cost: float


def cost_term(cost: torch.Tensor, lambda_: float, tau: float) -> torch.Tensor:
    """λ·log_τ(cost): equals λ when cost = τ; τ only rescales the gradient (SPEC §5.4)."""
    return lambda_ * torch.log(cost) / math.log(tau)


def sampled_mask(alpha: torch.Tensor, rows: Sequence[Sequence[int]]) -> torch.Tensor:
    """Boolean mask of the sampled entries of an α matrix (one row of indices per matrix row)."""
    mask = torch.zeros(alpha.shape, dtype=torch.bool)
    for row, ops in enumerate(rows):
        mask[row, list(ops)] = True
    return mask.to(alpha.device)


@torch.no_grad()
def rescale_alpha(alphas: Sequence[torch.Tensor], before: Sequence[torch.Tensor],
                  sampled_rows: Sequence[Sequence[Sequence[int]]]) -> None:
    """Add r = ln Σ_S exp(α_old) − ln Σ_S exp(α_new) to the sampled entries S of every row, in place (§4.4, B1).

    Afterwards Σ_S exp(α) is what it was before the step; entries outside S keep their post-step values.
    """
    for alpha, old, rows in zip(alphas, before, sampled_rows, strict=True):
        if alpha.numel() == 0:
            continue
        mask = sampled_mask(alpha, rows)
        neg_inf = torch.tensor(float("-inf"), dtype=alpha.dtype, device=alpha.device)
        mass_before = torch.where(mask, old, neg_inf).logsumexp(dim=1, keepdim=True)
        mass_after = torch.where(mask, alpha, neg_inf).logsumexp(dim=1, keepdim=True)
        alpha.add_(torch.where(mask, mass_before - mass_after, torch.zeros_like(alpha)))


def arch_step(
    model: Supernet,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    labels: torch.Tensor,
    sampled: SampledOps,
    cost_table: CostTable,
    *,
    lambda_: float,
    tau: float,
    ctx: DistContext,
    amp: bool = False,
) -> StepResult:
    """Forward ``sampled`` ops (2 per row officially, every op under arch_policy all), backward CE + cost term,
    average α/β gradients over ranks, Adam step on α and β (coupled L2, C7), then re-scale α. The weights must be
    frozen by the caller."""
    alphas = model.alpha_parameters()
    before = [a.detach().clone() for a in alphas]
    with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=amp):
        logits, cost = model(images, sampled, cost_table)
    assert cost is not None, "an architecture step needs the expected cost"
    cost = cost.float()
    ce = F.cross_entropy(logits.float(), labels)
    loss = ce + cost_term(cost, lambda_, tau) if lambda_ else ce
    optimizer.zero_grad(set_to_none=False)
    loss.backward()
    average_gradients(model.arch_parameters(), ctx)
    optimizer.step()
    rescale_alpha(alphas, before, [*sampled.heads, *sampled.stacks])
    return reduce_stats(loss, ce, logits, labels, cost, ctx)


def reduce_stats(loss: torch.Tensor, ce: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor,
                 cost: torch.Tensor | None, ctx: DistContext) -> StepResult:
    """One host sync per step: loss, CE, top-1 and cost averaged over ranks."""
    top1 = (logits.detach().argmax(dim=1) == labels).float().mean()
    cost_value = cost.detach() if cost is not None else torch.tensor(float("nan"), device=logits.device)
    values = torch.stack([loss.detach().float(), ce.detach().float(), top1, cost_value.float()])
    if ctx.distributed:
        torch.distributed.all_reduce(values)
        values /= ctx.world_size
    loss_v, ce_v, top1_v, cost_v = values.tolist()
    return StepResult(loss=loss_v, ce=ce_v, top1=top1_v, cost=cost_v)
