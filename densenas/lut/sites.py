"""Every distinct op of a supernet with the input shape it sees there, and its LUT signature (SPEC.md §5.1).

The same sites feed the latency profiler, the FLOPs counter, the official-table converter and the mapping of a
LUT back onto the supernet layout, so an entry always means the same module on the same input.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import nn

from densenas.errors import DensenasError
from densenas.ops import batch_norm, build_op
from densenas.spaces.space import SearchSpace
from densenas.spaces.topology import Topology

STEM_OPS = {"mbv2": "stem_mbv2", "res": "stem_res"}
FINAL_OP = "conv1x1_bn_relu6"
CLASSIFIER_OP = "avgpool_linear"


@dataclass(frozen=True)
class OpSite:
    """One op on one input shape: ``op`` maps C_in×H×W to C_out channels at ``stride``."""

    op: str
    c_in: int
    c_out: int
    stride: int
    height: int
    width: int

    def signature(self, batch: int, dtype: str) -> str:
        """LUT key, e.g. ``mbconv_k3_t6|in=24x56x56|out=40|s=2|b=32|float32``."""
        return (f"{self.op}|in={self.c_in}x{self.height}x{self.width}|out={self.c_out}|s={self.stride}"
                f"|b={batch}|{dtype}")

    def input_shape(self, batch: int) -> tuple[int, int, int, int]:
        return (batch, self.c_in, self.height, self.width)


@dataclass(frozen=True)
class SupernetSites:
    """The sites in CostTable order. ``heads[j-1][b][o]``: head op o on node j's branch b; ``stacks[j-1][o]``:
    stack op o of node j, shared by all ``stacked_layers[j-1]`` layers of the node (they see the same shape)."""

    stem: OpSite
    heads: tuple[tuple[tuple[OpSite, ...], ...], ...]
    stacks: tuple[tuple[OpSite, ...], ...]
    stacked_layers: tuple[int, ...]
    final: tuple[OpSite, ...]
    classifier: OpSite

    def distinct(self) -> list[OpSite]:
        """Each site the supernet runs, once, in supernet order (the profiling order)."""
        ordered = [self.stem]
        for heads, stacks, layers in zip(self.heads, self.stacks, self.stacked_layers, strict=True):
            ordered += [site for branch in heads for site in branch]
            ordered += list(stacks) if layers else []
        ordered += [*self.final, self.classifier]
        return list(dict.fromkeys(ordered))


def node_resolutions(space: SearchSpace, input_size: int) -> tuple[int, ...]:
    """Feature-map side of nodes 0..F for a square ``input_size`` input: the stem halves it, then each node is
    halved as often as the space's 224-px resolutions say (ceil, as a padded stride-2 conv does)."""
    if input_size < 1:
        raise DensenasError(f"input size must be a positive integer, got {input_size}")
    resolutions = (*space.resolutions, space.resolutions[-1])
    sides = []
    for node_res in resolutions:
        halvings = math.log2(resolutions[0] / node_res)
        if not halvings.is_integer() or halvings < 0:
            raise DensenasError(f"space '{space.name}': resolution {node_res} is not node 0's "
                                f"({resolutions[0]}) divided by a power of two")
        side = math.ceil(input_size / 2)
        for _ in range(int(halvings)):
            side = math.ceil(side / 2)
        sides.append(side)
    return tuple(sides)


def supernet_sites(space: SearchSpace, topology: Topology, *, input_size: int, num_classes: int) -> SupernetSites:
    """Sites of the supernet of ``space`` at ``input_size``: a head op of edge i→j sees node i's width at node i's
    resolution, a stacked op of node j sees C_j at node j's resolution."""
    sides = node_resolutions(space, input_size)
    widths = topology.widths
    final = topology.final_node
    stem_out = space.head_width if space.head_width is not None else space.stem_width
    heads, stacks = [], []
    for j in range(1, final):
        heads.append(tuple(
            tuple(OpSite(op, widths[e.source], widths[j], e.stride, sides[e.source], sides[e.source])
                  for op in space.head_ops)
            for e in topology.in_edges[j]
        ))
        stacks.append(tuple(OpSite(op, widths[j], widths[j], 1, sides[j], sides[j]) for op in space.stack_ops))
    return SupernetSites(
        stem=OpSite(STEM_OPS[space.family], 3, stem_out, 2, input_size, input_size),
        heads=tuple(heads),
        stacks=tuple(stacks),
        stacked_layers=topology.stacked_layers[1:final],
        final=tuple(OpSite(FINAL_OP, widths[e.source], widths[final], 1, sides[e.source], sides[e.source])
                    for e in topology.in_edges[final]),
        classifier=OpSite(CLASSIFIER_OP, widths[final], num_classes, 1, sides[final], sides[final]),
    )


def build_site(site: OpSite, space: SearchSpace) -> nn.Module:
    """The module the supernet runs at ``site``, with its BN settings (SPEC §2.4): non-affine BNs except the
    quirk-Q6 projection BN of the fixed MBV2 block and the ResNet stem BN. tests/test_lut.py checks that the stem
    and final branches equal the supernet's own."""
    bn = space.bn
    if site.op == STEM_OPS["mbv2"]:
        assert space.head_width is not None, "MBV2 spaces define the fixed block's width"
        return nn.Sequential(
            nn.Conv2d(3, space.stem_width, 3, 2, 1, bias=False), batch_norm(space.stem_width, bn, False),
            nn.ReLU6(inplace=True), build_op("mbconv_k3_t1", space.stem_width, space.head_width, 1, bn, affine=False),
        )
    if site.op == STEM_OPS["res"]:
        return nn.Sequential(nn.Conv2d(3, site.c_out, 3, 2, 1, bias=False), batch_norm(site.c_out, bn, True),
                             nn.ReLU(inplace=True))
    if site.op == FINAL_OP:
        return nn.Sequential(nn.Conv2d(site.c_in, site.c_out, 1, bias=False), batch_norm(site.c_out, bn, False),
                             nn.ReLU6(inplace=True))
    if site.op == CLASSIFIER_OP:
        return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(site.c_in, site.c_out))
    return build_op(site.op, site.c_in, site.c_out, site.stride, bn, affine=False)
