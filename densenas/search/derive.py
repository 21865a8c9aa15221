"""Derivation (SPEC.md §7.1–7.2): the most probable node path by Viterbi over β, then the argmax op per layer.

Pure functions of α and β, so ``densenas derive`` reproduces from ``arch_params.json`` exactly what the search
logged each epoch. Softmaxes here carry no temperature (quirk Q4); ties keep the nearest predecessor and the
first op in candidate order (quirk Q18).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import torch

from densenas.arch import PathArch
from densenas.spaces.space import SearchSpace
from densenas.spaces.topology import Topology


def transition_probs(beta: Sequence[torch.Tensor]) -> list[list[float]]:
    """P_i = softmax(β_i) per node (no temperature, Q4), as plain floats in β (out-edge) order."""
    return [torch.softmax(b.detach().float().cpu(), dim=0).tolist() for b in beta]


def derive_path(probs: Sequence[Sequence[float]], topology: Topology) -> tuple[int, ...]:
    """Viterbi: the node path from 0 to the final node with the largest product of transition probabilities.

    ``in_edges`` are scanned nearest first and only a strictly larger product replaces the best one, so a tie
    keeps the nearest predecessor (Q18).
    """
    final = topology.final_node
    best_prob = [0.0] * (final + 1)
    predecessor = [-1] * (final + 1)
    best_prob[0] = 1.0
    for k in range(1, final + 1):
        for edge in topology.in_edges[k]:
            i = edge.source
            q = best_prob[i] * probs[i][topology.out_position(i, k)]
            if predecessor[k] < 0 or q > best_prob[k]:
                best_prob[k], predecessor[k] = q, i
    path = [final]
    while path[-1] != 0:
        path.append(predecessor[path[-1]])
    return tuple(reversed(path))


def first_argmax(row: Sequence[float]) -> int:
    """Index of the first maximum (Q18: ties keep the first op in candidate order)."""
    return max(range(len(row)), key=row.__getitem__)


def derive_ops(
    path: Sequence[int],
    alpha_head: Sequence[torch.Tensor],
    alpha_stack: Sequence[torch.Tensor],
    space: SearchSpace,
    topology: Topology,
) -> PathArch:
    """Argmax op of every routing block on ``path``: its head branch from the path predecessor and each of its
    stacked layers (``skip_connect`` kept here; :func:`densenas.arch.to_net_config` drops it)."""
    head_ops, stack_ops = [], []
    for source, node in pairwise(path[:-1]):
        head_row = alpha_head[node - 1][topology.in_position(source, node)].tolist()
        head_ops.append(space.head_ops[first_argmax(head_row)])
        stack_ops.append(tuple(space.stack_ops[first_argmax(row)] for row in alpha_stack[node - 1].tolist()))
    return PathArch(path=tuple(path), head_ops=tuple(head_ops), stack_ops=tuple(stack_ops))


def derive_arch(
    beta: Sequence[torch.Tensor],
    alpha_head: Sequence[torch.Tensor],
    alpha_stack: Sequence[torch.Tensor],
    space: SearchSpace,
    topology: Topology,
) -> PathArch:
    """The discrete architecture the search currently prefers: Viterbi path, then argmax ops (SPEC §7)."""
    path = derive_path(transition_probs(beta), topology)
    return derive_ops(path, alpha_head, alpha_stack, space, topology)
