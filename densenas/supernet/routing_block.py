"""Routing blocks and the final node of the supernet (SPEC.md §3.1, §3.3).

A routing block aligns every incoming node with its own head mixed layer, sums the aligned tensors weighted by
the path probabilities it is given, then applies its stacked mixed layers once, to the sum.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from densenas.errors import DensenasError
from densenas.ops import batch_norm
from densenas.spaces.space import BNSpec
from densenas.spaces.topology import Edge
from densenas.supernet.mixed_op import MixedOp


class RoutingBlock(nn.Module):
    """Node j: one head MixedOp per in-edge (C_src→C_j at the edge's stride), then L_j stacked MixedOps (C_j→C_j)."""

    def __init__(self, in_edges: Sequence[Edge], widths: Sequence[int], num_stacked: int, head_ops: Sequence[str],
                 stack_ops: Sequence[str], bn: BNSpec, *, affine_exceptions: bool) -> None:
        super().__init__()
        width = widths[in_edges[0].target]
        self.heads = nn.ModuleList(
            MixedOp(head_ops, widths[e.source], width, e.stride, bn, affine_exceptions=affine_exceptions)
            for e in in_edges
        )
        self.stacks = nn.ModuleList(
            MixedOp(stack_ops, width, width, 1, bn, affine_exceptions=affine_exceptions) for _ in range(num_stacked)
        )

    def forward(self, inputs: Sequence[torch.Tensor], path_weights: torch.Tensor,
                head_weights: torch.Tensor, stack_weights: torch.Tensor,
                head_sampled: Sequence[Sequence[int]], stack_sampled: Sequence[Sequence[int]]) -> torch.Tensor:
        """``inputs`` and ``path_weights`` in in-edge order; op weights are full rows (see ``MixedOp``)."""
        out = None
        for b, (head, x) in enumerate(zip(self.heads, inputs, strict=True)):
            term = path_weights[b] * head(x, head_weights[b], head_sampled[b])
            out = term if out is None else out + term
        assert out is not None, "a routing block has at least one in-edge"
        for layer, weights, ops in zip(self.stacks, stack_weights, stack_sampled, strict=True):
            out = layer(out, weights, ops)
        return out


class FinalNode(nn.Module):
    """One 1x1 conv (no bias) + non-affine BN + ReLU6 branch per in-edge, to ``last_dim`` channels."""

    def __init__(self, in_edges: Sequence[Edge], widths: Sequence[int], last_dim: int, bn: BNSpec) -> None:
        super().__init__()
        strided = [e.source for e in in_edges if e.stride != 1]
        if strided:
            raise DensenasError(f"the final node's inputs must share its resolution, but node {strided[0]} is "
                                "twice as large; give the final node's predecessors its resolution")
        self.branches = nn.ModuleList(
            nn.Sequential(nn.Conv2d(widths[e.source], last_dim, 1, bias=False), batch_norm(last_dim, bn, False),
                          nn.ReLU6(True))
            for e in in_edges
        )

    def forward(self, inputs: Sequence[torch.Tensor], branch_weights: torch.Tensor) -> torch.Tensor:
        out = None
        for b, (branch, x) in enumerate(zip(self.branches, inputs, strict=True)):
            term = branch_weights[b] * branch(x)
            out = term if out is None else out + term
        assert out is not None, "the final node has at least one in-edge"
        return out
