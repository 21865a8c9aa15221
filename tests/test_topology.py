"""The dense-connection rule reproduces SPEC.md's node tables (§2.3, §2.5) entry by entry."""

from __future__ import annotations

import pytest

from densenas.spaces import build_topology, count_paths, load_space

# node: (out-edges "target:stride" in β order, in-edges in head-branch order) — SPEC.md §2.3
MBV2_TABLE = {
    0: ("1:2", ""), 1: ("2:2 3:2 4:2", "0"), 2: ("3:1 4:1 5:2 6:2", "1"), 3: ("4:1 5:2 6:2 7:2", "2 1"),
    4: ("5:2 6:2 7:2", "3 2 1"), 5: ("6:1 7:1 8:1 9:1", "4 3 2"), 6: ("7:1 8:1 9:1 10:1", "5 4 3 2"),
    7: ("8:1 9:1 10:1", "6 5 4 3"), 8: ("9:1 10:1 11:2 12:2", "7 6 5"), 9: ("10:1 11:2 12:2 13:2", "8 7 6 5"),
    10: ("11:2 12:2 13:2", "9 8 7 6"), 11: ("12:1 13:1 14:1 15:1", "10 9 8"),
    12: ("13:1 14:1 15:1 16:1", "11 10 9 8"), 13: ("14:1 15:1 16:1", "12 11 10 9"),
    14: ("15:1 16:1 17:1", "13 12 11"), 15: ("16:1 17:1", "14 13 12 11"), 16: ("17:1", "15 14 13 12"),
    17: ("", "16 15 14"),
}
# SPEC.md §2.5
RESNET_TABLE = {
    0: ("1:2 2:2 3:2", ""), 1: ("2:1 3:1 4:2 5:2 6:2", "0"), 2: ("3:1 4:2 5:2 6:2", "1 0"),
    3: ("4:2 5:2 6:2", "2 1 0"), 4: ("5:1 6:1 7:2 8:2 9:2 10:2", "3 2 1"), 5: ("6:1 7:2 8:2 9:2 10:2", "4 3 2 1"),
    6: ("7:2 8:2 9:2 10:2", "5 4 3 2 1"), 7: ("8:1 9:1 10:1 11:1 12:1 13:1", "6 5 4"),
    8: ("9:1 10:1 11:1 12:1 13:1", "7 6 5 4"), 9: ("10:1 11:1 12:1 13:1", "8 7 6 5 4"),
    10: ("11:1 12:1 13:1", "9 8 7 6 5 4"), 11: ("12:1 13:1 14:2 15:2 16:2 17:2", "10 9 8 7"),
    12: ("13:1 14:2 15:2 16:2 17:2", "11 10 9 8 7"), 13: ("14:2 15:2 16:2 17:2", "12 11 10 9 8 7"),
    14: ("15:1 16:1 17:1 18:1 19:1 20:1", "13 12 11"), 15: ("16:1 17:1 18:1 19:1 20:1", "14 13 12 11"),
    16: ("17:1 18:1 19:1 20:1", "15 14 13 12 11"), 17: ("18:1 19:1 20:1", "16 15 14 13 12 11"),
    18: ("19:1 20:1 21:1", "17 16 15 14"), 19: ("20:1 21:1", "18 17 16 15 14"), 20: ("21:1", "19 18 17 16 15 14"),
    21: ("", "20 19 18"),
}


@pytest.mark.parametrize(("space", "table"), [("mbv2", MBV2_TABLE), ("resnet", RESNET_TABLE)])
def test_topology_matches_spec_node_table(space: str, table: dict[int, tuple[str, str]]) -> None:
    topology = build_topology(load_space(space))
    assert topology.final_node == max(table)
    for node, (outs, ins) in table.items():
        got_out = " ".join(f"{e.target}:{e.stride}" for e in topology.out_edges[node]) if node < max(table) else ""
        got_in = " ".join(str(e.source) for e in topology.in_edges[node])
        assert got_out == outs, f"{space} node {node} out-edges: expected {outs!r}, got {got_out!r}"
        assert got_in == ins, f"{space} node {node} in-edges: expected {ins!r}, got {got_in!r}"


def test_mbv2_beta_sizes_and_alpha_rows() -> None:
    topology = build_topology(load_space("mbv2"))
    assert topology.beta_sizes == [1, 3, 4, 4, 3, 4, 4, 3, 4, 4, 3, 4, 4, 3, 3, 2, 1]
    head_rows = [len(topology.in_edges[j]) for j in range(1, 17)]
    assert head_rows == [1, 1, 2, 3, 3, 4, 4, 3, 4, 4, 3, 4, 4, 3, 4, 4]


def test_resnet_beta_sizes() -> None:
    topology = build_topology(load_space("resnet"))
    assert topology.beta_sizes == [3, 5, 4, 3, 6, 5, 4, 6, 5, 4, 3, 6, 5, 4, 6, 5, 4, 3, 3, 2, 1]
    assert sum(len(topology.in_edges[j]) for j in range(1, 21)) == 84
    assert sum(topology.stacked_layers) == 113


@pytest.mark.parametrize(("space", "paths"), [("mbv2", 15_456), ("resnet", 540_225)])
def test_number_of_paths(space: str, paths: int) -> None:
    assert count_paths(build_topology(load_space(space))) == paths


def test_building_twice_gives_the_same_topology() -> None:
    space = load_space("mbv2")
    first, second = build_topology(space), build_topology(space)
    assert first == second
    assert space == load_space("mbv2"), "building a topology must not change the space definition"
