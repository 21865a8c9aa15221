"""Derivation (SPEC §7.1–7.2): Viterbi against brute force over every path, tie rules (Q18), argmax ops, and
`densenas derive` from an arch_params.json."""

from __future__ import annotations

import json
from itertools import pairwise
from pathlib import Path

import pytest
import torch

from densenas.arch import to_net_config
from densenas.errors import DensenasError
from densenas.net_config import load_net_config, parse_official_string
from densenas.search.derive import derive_arch, derive_path, first_argmax, transition_probs
from densenas.search.records import arch_snapshot, derive_from_arch_params, write_arch_params
from densenas.spaces import build_topology, load_space
from densenas.spaces.topology import Edge, Topology
from densenas.supernet import ArchParameters

MBV2 = load_space("mbv2")
MBV2_TOPOLOGY = build_topology(MBV2)


def all_paths(topology: Topology, node: int = 0) -> list[tuple[int, ...]]:
    if node == topology.final_node:
        return [(node,)]
    return [(node, *rest) for edge in topology.out_edges[node] for rest in all_paths(topology, edge.target)]


def brute_force_best(topology: Topology, probs: list[list[float]]) -> tuple[tuple[int, ...], float]:
    """The path with the largest product of transition probabilities, multiplied in path order (as Viterbi)."""
    def product(path: tuple[int, ...]) -> float:
        value = 1.0
        for source, target in pairwise(path):
            value *= probs[source][topology.out_position(source, target)]
        return value

    best = max(all_paths(topology), key=product)
    return best, product(best)


def random_beta(topology: Topology, seed: int, scale: float) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [scale * torch.randn(len(edges), generator=generator) for edges in topology.out_edges]


def test_mbv2_has_the_papers_path_count() -> None:
    assert len(all_paths(MBV2_TOPOLOGY)) == 15_456


@pytest.mark.parametrize(("seed", "scale"), [(0, 1e-3), (1, 1.0), (2, 1.0), (3, 3.0), (4, 10.0)])
def test_viterbi_equals_brute_force_over_all_mbv2_paths(seed: int, scale: float) -> None:
    probs = transition_probs(random_beta(MBV2_TOPOLOGY, seed, scale))
    expected, _ = brute_force_best(MBV2_TOPOLOGY, probs)
    got = derive_path(probs, MBV2_TOPOLOGY)
    assert got == expected, f"Viterbi path {got}, brute force over 15,456 paths {expected}"


def test_viterbi_equals_brute_force_over_all_resnet_paths() -> None:
    topology = build_topology(load_space("resnet"))
    probs = transition_probs(random_beta(topology, seed=7, scale=1.0))
    expected, _ = brute_force_best(topology, probs)
    got = derive_path(probs, topology)
    assert got == expected, f"Viterbi path {got}, brute force over 540,225 ResNet paths {expected}"


def _diamond() -> Topology:
    """0 → 1 → 2 and 0 → 2: node 2's in-edges nearest first (1, then 0)."""
    e01, e02, e12 = Edge(0, 1, 1), Edge(0, 2, 1), Edge(1, 2, 1)
    return Topology(widths=(8, 8, 8), out_edges=((e01, e02), (e12,)), in_edges=((), (e01,), (e12, e02)),
                    stacked_layers=(0, 0, 0))


def test_viterbi_ties_keep_the_nearest_predecessor() -> None:
    assert derive_path([[0.5, 0.5], [1.0]], _diamond()) == (0, 1, 2), "tie 0.5 vs 0.5: nearest (1) must win (Q18)"
    assert derive_path([[0.4, 0.6], [1.0]], _diamond()) == (0, 2), "0.6 > 0.4: the direct edge must win"


def test_viterbi_uses_softmax_without_temperature() -> None:
    beta = [torch.tensor([0.0, 0.3]), torch.tensor([0.0])]
    assert transition_probs(beta)[0] == pytest.approx(torch.softmax(beta[0], 0).tolist())


def test_argmax_ties_keep_the_first_op() -> None:
    assert first_argmax([0.1, 0.7, 0.7, 0.2]) == 1


def test_ops_come_from_the_path_predecessors_head_row_and_every_stacked_layer() -> None:
    arch = ArchParameters(MBV2_TOPOLOGY, len(MBV2.head_ops), len(MBV2.stack_ops))
    with torch.no_grad():
        for b in arch.beta:
            b.zero_()
        arch.beta[0][0] = 1.0
        for j, alpha in enumerate(arch.alpha_head, start=1):
            alpha.zero_()
            for row in range(alpha.shape[0]):  # branch b of node j prefers head op (j + b) mod 6
                alpha[row, (j + row) % alpha.shape[1]] = 1.0
        for alpha in arch.alpha_stack:
            alpha.zero_()
            alpha[:, -1] = 1.0  # every stacked layer prefers skip_connect
    derived = derive_arch(arch.beta, arch.alpha_head, arch.alpha_stack, MBV2, MBV2_TOPOLOGY)
    for source, node, head in zip(derived.path[:-2], derived.path[1:-1], derived.head_ops, strict=True):
        branch = MBV2_TOPOLOGY.in_position(source, node)
        assert head == MBV2.head_ops[(node + branch) % 6], f"node {node} from {source}: head op {head}"
    assert all(set(ops) <= {"skip_connect"} for ops in derived.stack_ops)
    assert all(not block.stack_ops for block in to_net_config(derived, MBV2, MBV2_TOPOLOGY).blocks), \
        "skip_connect layers must be dropped from the net_config"


def _write_arch_params(path: Path, seed: int) -> ArchParameters:
    torch.manual_seed(seed)
    arch = ArchParameters(MBV2_TOPOLOGY, len(MBV2.head_ops), len(MBV2.stack_ops))
    with torch.no_grad():
        for p in arch.parameters():
            p.normal_()
    derived = derive_arch(arch.beta, arch.alpha_head, arch.alpha_stack, MBV2, MBV2_TOPOLOGY)
    header = {"space": "mbv2", "variant": "test", "num_classes": 10}
    write_arch_params(path, header, [arch_snapshot(-1, arch, derived, {}), arch_snapshot(0, arch, derived, {})])
    return arch


def test_derive_from_the_json_file_equals_derive_from_the_live_tensors(tmp_path: Path) -> None:
    arch = _write_arch_params(tmp_path / "arch_params.json", seed=5)
    live = to_net_config(derive_arch(arch.beta, arch.alpha_head, arch.alpha_stack, MBV2, MBV2_TOPOLOGY), MBV2,
                         MBV2_TOPOLOGY, 10)
    assert derive_from_arch_params(tmp_path / "arch_params.json") == live
    assert derive_from_arch_params(tmp_path / "arch_params.json", "init") == live


def test_derive_cli_writes_json_and_the_official_string(tmp_path: Path, run_cli) -> None:
    _write_arch_params(tmp_path / "arch_params.json", seed=6)
    result = run_cli("derive", "--arch-params", str(tmp_path / "arch_params.json"), "--epoch", "0",
                     "--out", str(tmp_path / "net_config.json"))
    assert result.returncode == 0, result.stderr
    config = load_net_config(tmp_path / "net_config.json")
    assert config == derive_from_arch_params(tmp_path / "arch_params.json")
    official = parse_official_string((tmp_path / "net_config.txt").read_text())
    assert (official.net_type, official.blocks, official.last_dim) == (config.net_type, config.blocks,
                                                                        config.last_dim)
    assert json.loads((tmp_path / "net_config.json").read_text())["num_classes"] == 10


def test_derive_cli_names_a_missing_epoch(tmp_path: Path, run_cli) -> None:
    _write_arch_params(tmp_path / "arch_params.json", seed=6)
    result = run_cli("derive", "--arch-params", str(tmp_path / "arch_params.json"), "--epoch", "9")
    assert result.returncode == 2
    assert "no snapshot for epoch 9" in result.stderr and "Traceback" not in result.stderr


def _write_epochs(path: Path, val_top1: list[float | None]) -> list[ArchParameters]:
    """One snapshot per epoch, each from other random α/β, with the given supernet val top-1 (None: unvalidated)."""
    snapshots, archs = [], []
    for epoch, top1 in enumerate(val_top1):
        torch.manual_seed(100 + epoch)
        arch = ArchParameters(MBV2_TOPOLOGY, len(MBV2.head_ops), len(MBV2.stack_ops))
        with torch.no_grad():
            for p in arch.parameters():
                p.normal_()
        derived = derive_arch(arch.beta, arch.alpha_head, arch.alpha_stack, MBV2, MBV2_TOPOLOGY)
        snapshots.append(arch_snapshot(epoch, arch, derived, {"supernet_val_top1": top1}))
        archs.append(arch)
    write_arch_params(path, {"space": "mbv2", "variant": "test", "num_classes": 10}, snapshots)
    return archs


def _net(arch: ArchParameters):
    return to_net_config(derive_arch(arch.beta, arch.alpha_head, arch.alpha_stack, MBV2, MBV2_TOPOLOGY), MBV2,
                         MBV2_TOPOLOGY, 10)


def test_retrain_epoch_last_or_best_supernet_val(tmp_path: Path) -> None:
    path = tmp_path / "arch_params.json"
    archs = _write_epochs(path, [None, 40.0, 55.0, 55.0, 30.0])
    assert derive_from_arch_params(path, "last") == _net(archs[4])
    assert derive_from_arch_params(path, "best_supernet_val") == _net(archs[2]), "ties keep the earlier epoch"
    assert _net(archs[2]) != _net(archs[4]), "the test needs two different architectures"


def test_best_supernet_val_without_a_validated_epoch_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "arch_params.json"
    _write_epochs(path, [None, None])
    with pytest.raises(DensenasError, match="no search epoch has a supernet val top-1"):
        derive_from_arch_params(path, "best_supernet_val")


def test_derive_cli_defaults_to_params_retrain_epoch(tmp_path: Path, run_cli) -> None:
    path = tmp_path / "arch_params.json"
    archs = _write_epochs(path, [None, 60.0, 20.0])
    for setting, epoch in (("last", 2), ("best_supernet_val", 1)):
        out = tmp_path / f"{setting}.json"
        result = run_cli("--set", "tracking.enabled=false", "--set", f"search.retrain_epoch={setting}", "derive",
                         "--arch-params", str(path), "--out", str(out))
        assert result.returncode == 0, result.stderr
        assert load_net_config(out) == _net(archs[epoch]), f"{setting}: expected epoch {epoch}'s architecture"
