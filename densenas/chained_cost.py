"""Chained cost estimation (SPEC.md §5.2–§5.3): the expected cost of the network under the path distribution.

Pure and differentiable: gradients reach α through the op weights and β through the path probabilities, so the
search adds it to the architecture loss; the one-architecture form predicts a derived network's cost from a LUT.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import torch

from densenas.cost_table import CostTable
from densenas.errors import DensenasError
from densenas.spaces.topology import Topology


def chained_cost(
    topology: Topology,
    table: CostTable,
    head_weights: Sequence[torch.Tensor],
    stack_weights: Sequence[torch.Tensor],
    path_probs: Sequence[torch.Tensor],
) -> torch.Tensor:
    """Total expected cost C̃(0) + classifier, with C̃(F) = 0 and, for i = N..0,
    C̃(i) = cost_b^i + Σ_{j ∈ out(i)} p_ij (cost_align^{ij} + C̃(j)).

    ``head_weights[j-1]`` [|in(j)|, n_head_ops] and ``stack_weights[j-1]`` [L_j, n_stack_ops] are the op weights of
    node j's mixed layers (rows over the sampled subset, zeros elsewhere); ``path_probs[i]`` [|out(i)|] are node i's
    raw transition probabilities. cost_b^0 is the stem; a final-node edge costs its 1x1 branch, with no α and no
    extra softmax (quirk Q3 touches only the forward). Result dtype and device follow ``path_probs``.
    """
    final = topology.final_node
    like = path_probs[0]
    head_costs = [_layer_costs(w, table.heads[j], like) for j, w in enumerate(head_weights)]
    final_costs = table.final.to(like)
    chained: list[torch.Tensor] = [like.new_zeros(())] * (final + 1)
    for i in range(final - 1, -1, -1):
        own = like.new_tensor(table.stem) if i == 0 else _layer_costs(stack_weights[i - 1], table.stacks[i - 1],
                                                                       like).sum()
        onward = []
        for edge in topology.out_edges[i]:
            branch = topology.in_position(i, edge.target)
            align = final_costs[branch] if edge.target == final else head_costs[edge.target - 1][branch]
            onward.append(align + chained[edge.target])
        chained[i] = own + (path_probs[i] * torch.stack(onward)).sum()
    return chained[0] + table.classifier


def _layer_costs(weights: torch.Tensor, costs: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """cost^l = Σ_o w_o^l · LUT_o^l for every row l."""
    return (weights.to(like) * costs.to(like)).sum(dim=-1)


def architecture_cost(
    topology: Topology,
    table: CostTable,
    path: Sequence[int],
    head_ops: Sequence[int],
    stack_ops: Sequence[Sequence[int]],
) -> float:
    """Cost of one fixed architecture: the chain with p = 1 along ``path`` and one-hot op weights, i.e. stem + the
    chosen head and stacked ops of every block on the path + the final 1x1 branch + classifier.

    ``path`` runs from node 0 to the final node; ``head_ops[k]`` and ``stack_ops[k]`` (one op index per stacked
    layer of that node, ``skip_connect`` included) belong to the k-th routing block on it, ``path[k + 1]``.
    """
    final = topology.final_node
    if len(path) < 2 or path[0] != 0 or path[-1] != final:
        raise DensenasError(f"architecture path must run from node 0 to the final node {final}, got {list(path)}")
    blocks = path[1:-1]
    if len(head_ops) != len(blocks) or len(stack_ops) != len(blocks):
        raise DensenasError(f"architecture path has {len(blocks)} routing blocks, got {len(head_ops)} head ops and "
                            f"{len(stack_ops)} stacked-op lists")
    hops = list(pairwise(path))
    for source, target in hops:
        if all(edge.target != target for edge in topology.out_edges[source]):
            raise DensenasError(f"architecture path {list(path)}: node {source} has no edge to node {target}")
    total = table.stem + table.classifier + float(table.final[topology.in_position(path[-2], final)])
    for (source, node), head_op, layer_ops in zip(hops[:-1], head_ops, stack_ops, strict=True):
        layers = table.stacks[node - 1]
        if len(layer_ops) != layers.shape[0]:
            raise DensenasError(f"node {node} has {layers.shape[0]} stacked layers, got {len(layer_ops)} ops")
        total += float(table.heads[node - 1][topology.in_position(source, node), head_op])
        total += sum(float(layers[layer, op]) for layer, op in enumerate(layer_ops))
    return total
