"""The mixed layer (SPEC.md §3.2): every candidate op of one head or stacked layer, of which a step runs a sample.

Its output and its expected cost (§5.2) share one set of weights, softmax(α[S] / T) over the sampled subset S.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from densenas.ops import build_op
from densenas.spaces.space import BNSpec


class MixedOp(nn.Module):
    """All candidate ops of one layer as modules (non-affine BNs, quirk Q6 aside); only sampled ones run."""

    def __init__(self, op_names: Sequence[str], c_in: int, c_out: int, stride: int, bn: BNSpec, *,
                 affine_exceptions: bool) -> None:
        super().__init__()
        self.candidates = nn.ModuleList(
            build_op(name, c_in, c_out, stride, bn, affine=False, affine_exceptions=affine_exceptions)
            for name in op_names
        )

    def forward(self, x: torch.Tensor, weights: torch.Tensor, sampled: Sequence[int]) -> torch.Tensor:
        """Σ_{o ∈ sampled} weights[o] · op_o(x); ``weights`` is the full row (zeros off the sample)."""
        out = None
        for o in sampled:
            term = weights[o] * self.candidates[o](x)
            out = term if out is None else out + term
        assert out is not None, "a mixed layer needs at least one sampled op"
        return out


def sampled_op_weights(alpha: torch.Tensor, sampled: Sequence[Sequence[int]], temperature: float) -> torch.Tensor:
    """Row-wise softmax(α[S] / T) over each row's sampled subset S, scattered into full rows (zeros elsewhere).

    Masking with -inf before the softmax gives exact zeros, and zero gradients, for the ops that were not drawn.
    """
    mask = torch.zeros(alpha.shape, dtype=torch.bool)
    for row, ops in enumerate(sampled):
        mask[row, list(ops)] = True
    logits = (alpha / temperature).masked_fill(~mask.to(alpha.device), float("-inf"))
    return torch.softmax(logits, dim=-1)
