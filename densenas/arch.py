"""A discrete architecture of a search space (node path + one op per layer) and its net_config (SPEC.md §7.2).

Derivation (Viterbi + argmax), the random-search baseline and the latency-prediction benchmark all produce a
:class:`PathArch`; :func:`to_net_config` turns it into the stand-alone network description.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass

from densenas.complexity import count_mult_adds
from densenas.errors import DensenasError
from densenas.models import build_network
from densenas.net_config import BlockSpec, NetConfig
from densenas.spaces.space import SearchSpace
from densenas.spaces.topology import Topology


@dataclass(frozen=True)
class PathArch:
    """``path``: nodes 0..F; for each routing block on it (path[1:-1]) its head op and per-layer stack ops
    (``skip_connect`` kept, so every supernet layer is accounted for)."""

    path: tuple[int, ...]
    head_ops: tuple[str, ...]
    stack_ops: tuple[tuple[str, ...], ...]


def to_net_config(arch: PathArch, space: SearchSpace, topology: Topology, num_classes: int = 1000) -> NetConfig:
    """MBV2: the fixed 16→16 block first, ``conv1_1`` to last_dim last; ResNet: no final 1x1 node (SPEC §7.2)."""
    _check_path(arch, topology)
    blocks = []
    if space.family == "mbv2":
        assert space.head_width is not None
        blocks.append(BlockSpec(space.stem_width, space.head_width, "mbconv_k3_t1", (), 1))
    for index, node in enumerate(arch.path[1:-1]):
        source = arch.path[index]
        kept = tuple(op for op in arch.stack_ops[index] if op != "skip_connect")
        blocks.append(BlockSpec(topology.widths[source], topology.widths[node], arch.head_ops[index], kept,
                                topology.edge(source, node).stride))
    last_dim = space.last_dim if space.family == "mbv2" else None
    return NetConfig(net_type=space.family, blocks=tuple(blocks), last_dim=last_dim, num_classes=num_classes,
                     node_path=arch.path)


def _check_path(arch: PathArch, topology: Topology) -> None:
    path = arch.path
    if path[0] != 0 or path[-1] != topology.final_node:
        raise DensenasError(f"node path {list(path)} must run from 0 to {topology.final_node}")
    for source, target in itertools.pairwise(path):
        try:
            topology.edge(source, target)
        except KeyError:
            raise DensenasError(f"node path {list(path)}: no edge {source}->{target} in the space") from None
    blocks = len(path) - 2
    if len(arch.head_ops) != blocks or len(arch.stack_ops) != blocks:
        raise DensenasError(f"node path {list(path)}: expected ops for {blocks} routing blocks")
    for index, node in enumerate(path[1:-1]):
        if len(arch.stack_ops[index]) != topology.stacked_layers[node]:
            raise DensenasError(f"node {node}: expected {topology.stacked_layers[node]} stack ops, "
                                f"got {len(arch.stack_ops[index])}")


def sample_arch(space: SearchSpace, topology: Topology, rng: random.Random) -> PathArch:
    """A uniformly random path (each out-edge equally likely) with uniformly random ops per layer."""
    path = [0]
    while path[-1] != topology.final_node:
        path.append(rng.choice(topology.out_edges[path[-1]]).target)
    inner = path[1:-1]
    return PathArch(
        path=tuple(path),
        head_ops=tuple(rng.choice(space.head_ops) for _ in inner),
        stack_ops=tuple(tuple(rng.choice(space.stack_ops) for _ in range(topology.stacked_layers[n])) for n in inner),
    )


def sample_arch_near(
    space: SearchSpace, topology: Topology, target_mult_adds: int, *, tolerance: float, seed: int,
    input_size: int = 224, max_tries: int = 20_000,
) -> tuple[PathArch, int]:
    """The paper's Random Search baseline: the first random architecture whose mult-adds (at ``input_size``,
    1000 classes) lie within ``tolerance`` of ``target_mult_adds``."""
    def mult_adds(arch: PathArch) -> float:
        return count_mult_adds(build_network(to_net_config(arch, space, topology)), (1, 3, input_size, input_size))

    arch, value = sample_arch_matching(space, topology, mult_adds, target_mult_adds, tolerance=tolerance,
                                       seed=seed, max_tries=max_tries, unit="M mult-adds", scale=1e-6)
    return arch, int(value)


def sample_arch_matching(
    space: SearchSpace, topology: Topology, cost: Callable[[PathArch], float], target: float, *,
    tolerance: float, seed: int, max_tries: int = 20_000, unit: str = "", scale: float = 1.0,
) -> tuple[PathArch, float]:
    """The first random architecture (seeded) whose ``cost`` lies within ``tolerance`` of ``target``: the Random
    Search rule with any cost, e.g. mult-adds or the chained LUT latency."""
    rng = random.Random(seed)
    for _ in range(max_tries):
        arch = sample_arch(space, topology, rng)
        value = cost(arch)
        if abs(value - target) <= tolerance * target:
            return arch, value
    raise DensenasError(f"no random architecture within ±{tolerance:.0%} of {target * scale:.4g} {unit} "
                        f"after {max_tries} samples")
