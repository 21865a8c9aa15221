"""Architecture parameters of the supernet (SPEC.md §4.1): β per node (path level), α per mixed layer (op level).

They live in their own module so the search can give α and β their own Adam groups and keep them apart from the
weights; the supernet reads them in its forward.
"""

from __future__ import annotations

import torch
from torch import nn

from densenas.spaces.topology import Topology

INIT_STD = 1e-3


class ArchParameters(nn.Module):
    """``beta[i]``: [|out(i)|] for nodes 0..N; ``alpha_head[j-1]``: [|in(j)|, n_head_ops] and ``alpha_stack[j-1]``:
    [L_j, n_stack_ops] for routing blocks j = 1..N (zero rows where a block has no stacked layers)."""

    def __init__(self, topology: Topology, num_head_ops: int, num_stack_ops: int) -> None:
        super().__init__()
        blocks = range(1, topology.final_node)
        self.beta = nn.ParameterList(_init((len(edges),)) for edges in topology.out_edges)
        self.alpha_head = nn.ParameterList(_init((len(topology.in_edges[j]), num_head_ops)) for j in blocks)
        self.alpha_stack = nn.ParameterList(_init((topology.stacked_layers[j], num_stack_ops)) for j in blocks)

    def path_probs(self, temperature: float) -> list[torch.Tensor]:
        """p_i = softmax(β_i / T): node i's transition probabilities over its out-edges, in β order."""
        return [torch.softmax(beta / temperature, dim=0) for beta in self.beta]


def _init(shape: tuple[int, ...]) -> nn.Parameter:
    return nn.Parameter(INIT_STD * torch.randn(shape))
