"""The DenseNAS super network (SPEC.md §2.2, §2.5, §4.3): stem, routing blocks 1..N, final node, classifier.

One forward runs every edge and the sampled ops of every mixed layer and, given a cost table, returns the chained
expected cost computed with the same op weights and path probabilities as the logits.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from densenas.chained_cost import chained_cost
from densenas.config import QuirkParams
from densenas.cost_table import CostTable
from densenas.errors import DensenasError
from densenas.ops import batch_norm, build_op, he_fout_init, kaiming_fout_init
from densenas.spaces.space import SearchSpace
from densenas.spaces.topology import build_topology
from densenas.supernet.arch_params import ArchParameters
from densenas.supernet.mixed_op import sampled_op_weights
from densenas.supernet.routing_block import FinalNode, RoutingBlock
from densenas.supernet.sampling import SampledOps, sample_ops


class Supernet(nn.Module):
    """The supernet of ``space``; every BN is non-affine except the quirk-Q6 exceptions and the ResNet stem BN.

    ``quirks`` switches the official behaviours Q2 (incoming path weights not re-normalised), Q3 (extra softmax
    over the final node's incoming probabilities; switched off, the final node is weighted like a routing block)
    and Q6 (affine-flag exceptions); the default, ``QuirkParams()``, is the official code.

    ``width_mult`` < 1 builds every op with that fraction of its channels (at least one): a proxy supernet whose
    weights are cheaper to step and checkpoint, searched over the full-width space (topology, ops and cost table
    stay the space's, so the derived architecture and its cost are full-width; docs/deviations.md proxy-width).
    """

    def __init__(self, space: SearchSpace, *, num_classes: int = 100, quirks: QuirkParams | None = None,
                 width_mult: float = 1.0) -> None:
        super().__init__()
        if "bottle_neck" in (*space.head_ops, *space.stack_ops):
            raise DensenasError(f"space '{space.name}': the supernet does not support 'bottle_neck' candidates "
                                "(its 4x widths need a different final node; no shipped space uses it)")
        self.space = space
        self.topology = build_topology(space)
        self.quirks = quirks or QuirkParams()
        self.temperature = space.temperature
        topo = self.topology
        exceptions = self.quirks.affine_flag_exceptions
        if not 0 < width_mult <= 1:
            raise DensenasError(f"supernet width_mult must be in (0, 1], got {width_mult}")
        widths = [_scaled(width, width_mult) for width in topo.widths]
        last_dim = _scaled(space.last_dim, width_mult)
        self.stem = _stem(space, exceptions, width_mult)
        self.blocks = nn.ModuleList(
            RoutingBlock(topo.in_edges[j], widths, topo.stacked_layers[j], space.head_ops, space.stack_ops,
                         space.bn, affine_exceptions=exceptions)
            for j in range(1, topo.final_node)
        )
        self.final = FinalNode(topo.in_edges[topo.final_node], widths, last_dim, space.bn)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(last_dim, num_classes)
        if space.family == "mbv2":
            he_fout_init(self)
        else:
            kaiming_fout_init(self)
        self.arch = ArchParameters(topo, len(space.head_ops), len(space.stack_ops))
        # (source, position of the edge in β_source) for every in-edge of every node, in in-edge order.
        self._incoming = [[(e.source, topo.out_position(e.source, j)) for e in topo.in_edges[j]]
                          for j in range(topo.final_node + 1)]

    # -- parameter groups -------------------------------------------------------------------------------------
    def alpha_parameters(self) -> list[nn.Parameter]:
        """α: head matrices of nodes 1..N, then stack matrices of nodes 1..N."""
        return [*self.arch.alpha_head, *self.arch.alpha_stack]

    def beta_parameters(self) -> list[nn.Parameter]:
        """β: one vector per node 0..N."""
        return list(self.arch.beta)

    def arch_parameters(self) -> list[nn.Parameter]:
        return [*self.alpha_parameters(), *self.beta_parameters()]

    def weight_parameters(self) -> list[nn.Parameter]:
        """Every parameter that is not α or β (convs, the affine BNs, the classifier)."""
        arch = {id(p) for p in self.arch.parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    # -- sampling and weights ---------------------------------------------------------------------------------
    def sample_ops(self, policy: str, k: int | None = None, generator: torch.Generator | None = None) -> SampledOps:
        """Draw the ops every mixed layer runs in the next step (SPEC §4.2)."""
        return sample_ops(self.arch.alpha_head, self.arch.alpha_stack, policy, k, generator)

    def path_probs(self) -> list[torch.Tensor]:
        """p_i = softmax(β_i / T) for nodes 0..N."""
        return self.arch.path_probs(self.temperature)

    def op_weights(self, sampled: SampledOps) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """softmax(α[S] / T) over each row's sampled subset, as full rows: (head per node, stack per node)."""
        return (_group_weights(self.arch.alpha_head, sampled.heads, self.temperature),
                _group_weights(self.arch.alpha_stack, sampled.stacks, self.temperature))

    def expected_cost(self, sampled: SampledOps, cost_table: CostTable) -> torch.Tensor:
        """The chained cost (SPEC §5.3) with the op weights of ``sampled``, without running the network."""
        head_w, stack_w = self.op_weights(sampled)
        return self._chained_cost(cost_table, head_w, stack_w, self.path_probs())

    def _chained_cost(self, table: CostTable, head_w: list[torch.Tensor], stack_w: list[torch.Tensor],
                      probs: list[torch.Tensor]) -> torch.Tensor:
        # A table with fewer rows than a block would broadcast silently, so its layout is checked on every use.
        table.check_layout(self.topology, len(self.space.head_ops), len(self.space.stack_ops), "cost table")
        return chained_cost(self.topology, table, head_w, stack_w, probs)

    # -- forward ----------------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, sampled: SampledOps,
                cost_table: CostTable | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(logits, expected cost or None); every edge runs, each mixed layer runs its sampled ops."""
        probs = self.path_probs()
        head_w, stack_w = self.op_weights(sampled)
        nodes = [self.stem(x)]
        for j, block in enumerate(self.blocks, start=1):
            incoming = self._incoming_probs(probs, j)
            if self.quirks.normalise_incoming_paths:
                incoming = incoming / incoming.sum()
            inputs = [nodes[source] for source, _ in self._incoming[j]]
            nodes.append(block(inputs, incoming, head_w[j - 1], stack_w[j - 1], sampled.heads[j - 1],
                               sampled.stacks[j - 1]))
        final = self.topology.final_node
        incoming = self._incoming_probs(probs, final)
        if self.quirks.final_node_softmax:
            incoming = torch.softmax(incoming, dim=0)
        elif self.quirks.normalise_incoming_paths:
            incoming = incoming / incoming.sum()
        out = self.final([nodes[source] for source, _ in self._incoming[final]], incoming)
        logits = self.classifier(torch.flatten(self.pool(out), 1))
        cost = None if cost_table is None else self._chained_cost(cost_table, head_w, stack_w, probs)
        return logits, cost

    def _incoming_probs(self, probs: Sequence[torch.Tensor], node: int) -> torch.Tensor:
        """p_ij of every in-edge of ``node`` (in-edge order), taken from each source's distribution."""
        return torch.stack([probs[source][position] for source, position in self._incoming[node]])


def _scaled(width: int, width_mult: float) -> int:
    return max(1, round(width * width_mult))


def _stem(space: SearchSpace, affine_exceptions: bool, width_mult: float) -> nn.Sequential:
    """MBV2: 3x3/2 conv, non-affine BN, ReLU6, then the fixed mbconv_k3_t1 block (its output is node 0).
    ResNet: 3x3/2 conv, affine BN, ReLU (SPEC §2.5)."""
    node0 = space.stem_width if space.family == "res" else space.head_width
    if node0 != space.widths[0]:
        raise DensenasError(f"space '{space.name}': node 0 is the stem output, {node0} channels, but widths[0] is "
                            f"{space.widths[0]}")
    stem_width = _scaled(space.stem_width, width_mult)
    conv = nn.Conv2d(3, stem_width, 3, 2, 1, bias=False)
    if space.family == "res":
        return nn.Sequential(conv, batch_norm(stem_width, space.bn, True), nn.ReLU(inplace=True))
    assert space.head_width is not None, "MBV2 spaces define the fixed block's width"
    fixed = build_op("mbconv_k3_t1", stem_width, _scaled(space.head_width, width_mult), 1, space.bn, affine=False,
                     affine_exceptions=affine_exceptions)
    return nn.Sequential(conv, batch_norm(stem_width, space.bn, False), nn.ReLU6(inplace=True), fixed)


def _group_weights(alphas: Sequence[torch.Tensor], sampled: Sequence[Sequence[Sequence[int]]],
                   temperature: float) -> list[torch.Tensor]:
    """Op weights of every matrix of one kind, computed in one masked softmax over the stacked rows."""
    rows = [ops for matrix in sampled for ops in matrix]
    weights = sampled_op_weights(torch.cat(list(alphas)), rows, temperature)
    return list(weights.split([int(a.shape[0]) for a in alphas]))
