"""The dense-connection rule (SPEC.md §2.3): which routing blocks connect, in which order, with which stride.

Out-edge order is the order of a node's β entries; in-edge order (nearest predecessor first) is the order of its
head branches, head-α rows and head LUT entries. Everything downstream indexes through this object.
"""

from __future__ import annotations

from dataclasses import dataclass

from densenas.spaces.space import SearchSpace


@dataclass(frozen=True)
class Edge:
    source: int
    target: int
    stride: int


@dataclass(frozen=True)
class Topology:
    """Nodes 0..F: 0 the stem output, 1..F-1 routing blocks, F the final 1x1 node."""

    widths: tuple[int, ...]
    out_edges: tuple[tuple[Edge, ...], ...]   # per node 0..F-1, in β order
    in_edges: tuple[tuple[Edge, ...], ...]    # per node 0..F, nearest source first
    stacked_layers: tuple[int, ...]           # per node 0..F (final node: 0)

    @property
    def final_node(self) -> int:
        return len(self.widths) - 1

    @property
    def beta_sizes(self) -> list[int]:
        return [len(edges) for edges in self.out_edges]

    def out_position(self, source: int, target: int) -> int:
        """Index of edge source→target in β_source."""
        for position, edge in enumerate(self.out_edges[source]):
            if edge.target == target:
                return position
        raise KeyError(f"no edge {source}->{target}")

    def in_position(self, source: int, target: int) -> int:
        """Index of the head branch of ``target`` that comes from ``source``."""
        for position, edge in enumerate(self.in_edges[target]):
            if edge.source == source:
                return position
        raise KeyError(f"no edge {source}->{target}")

    def edge(self, source: int, target: int) -> Edge:
        return self.out_edges[source][self.out_position(source, target)]


def build_topology(space: SearchSpace) -> Topology:
    """Apply the dense-connection rule to ``space``; pure, so repeated calls agree."""
    widths = (*space.widths, space.last_dim)
    resolutions = (*space.resolutions, space.resolutions[-1])
    stages = space.stages
    final = len(widths) - 1
    out_edges: list[tuple[Edge, ...]] = []
    for i in range(final):
        edges: list[Edge] = []
        for k in range(i + 1, i + space.connections_per_stage[stages[i]] + 1):
            if k > final or stages[k] - stages[i] > 1:
                break
            ratio = resolutions[i] / resolutions[k]
            if ratio not in (1, 2):
                break
            edges.append(Edge(source=i, target=k, stride=int(ratio)))
        out_edges.append(tuple(edges))
    in_edges = tuple(
        tuple(sorted((e for edges in out_edges for e in edges if e.target == k), key=lambda e: -e.source))
        for k in range(final + 1)
    )
    return Topology(
        widths=widths,
        out_edges=tuple(out_edges),
        in_edges=in_edges,
        stacked_layers=(*space.stacked_layers, 0),
    )


def count_paths(topology: Topology) -> int:
    """Number of distinct node paths from node 0 to the final node."""
    paths = [0] * (topology.final_node + 1)
    paths[0] = 1
    for k in range(1, topology.final_node + 1):
        paths[k] = sum(paths[e.source] for e in topology.in_edges[k])
    return paths[topology.final_node]
