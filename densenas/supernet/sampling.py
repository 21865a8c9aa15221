"""Op sampling for the supernet (SPEC.md §4.2): which candidate ops of every mixed layer run in a step.

Sampling happens once per step, before the forward, so the result is a plain picklable object that the search
broadcasts to every DDP rank; every rank then runs the same ops. β is never sampled: every edge always runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

SAMPLE_POLICIES = ("uniform", "prob", "all")

Rows = tuple[tuple[int, ...], ...]


@dataclass(frozen=True)
class SampledOps:
    """Sorted op indices per α row: ``heads[j-1][b]`` for node j's head branch b (in-edge order),
    ``stacks[j-1][l]`` for its stacked layer l."""

    heads: tuple[Rows, ...]
    stacks: tuple[Rows, ...]

    def counts(self) -> list[int]:
        """Number of sampled ops of every α row, heads first (used to check a step's sample size)."""
        return [len(row) for rows in (*self.heads, *self.stacks) for row in rows]


def sample_ops(
    alpha_head: Sequence[torch.Tensor],
    alpha_stack: Sequence[torch.Tensor],
    policy: str,
    k: int | None = None,
    generator: torch.Generator | None = None,
) -> SampledOps:
    """Draw ``k`` distinct ops per α row: from softmax(α_row) for ``prob`` (no temperature, quirk Q4), with equal
    weights for ``uniform``; every op for ``all`` or when ``k`` >= the number of candidates."""
    if policy not in SAMPLE_POLICIES:
        raise ValueError(f"sample policy must be one of {SAMPLE_POLICIES}, got {policy!r}")
    if policy != "all" and (k is None or k < 1):
        raise ValueError(f"policy {policy!r} needs k >= 1 ops per row, got {k!r}")
    return SampledOps(
        heads=_sample_group(alpha_head, policy, k, generator),
        stacks=_sample_group(alpha_stack, policy, k, generator),
    )


def _sample_group(
    alphas: Sequence[torch.Tensor], policy: str, k: int | None, generator: torch.Generator | None
) -> tuple[Rows, ...]:
    """Sample every row of the α matrices of one kind (head or stack) in a single multinomial call."""
    sizes = [int(a.shape[0]) for a in alphas]
    num_ops = int(alphas[0].shape[1])
    if policy == "all" or k is None or k >= num_ops or sum(sizes) == 0:
        picks = [tuple(range(num_ops))] * sum(sizes)
    else:
        # One host copy for all rows keeps a GPU search from syncing once per row; the draw runs on the CPU so a
        # CPU generator reproduces it on any device.
        logits = torch.cat([a.detach() for a in alphas]).float().cpu()
        weights = torch.softmax(logits, dim=1) if policy == "prob" else torch.ones_like(logits)
        drawn = torch.multinomial(weights, k, replacement=False, generator=generator)
        picks = [tuple(sorted(row)) for row in drawn.tolist()]
    grouped, start = [], 0
    for size in sizes:
        grouped.append(tuple(picks[start:start + size]))
        start += size
    return tuple(grouped)
