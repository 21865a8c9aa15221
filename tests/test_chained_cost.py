"""Chained cost (SPEC §5.2–§5.3): equal to brute-force enumeration over every path, differentiable in α and β,
and the one-architecture form equal to the chain with p = 1 on the path and one-hot op weights."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import pytest
import torch

from densenas.chained_cost import architecture_cost, chained_cost
from densenas.cost_table import CostTable
from densenas.errors import DensenasError
from densenas.spaces import SearchSpace, Topology, build_topology, count_paths, load_space
from densenas.supernet import sample_ops, sampled_op_weights

PATHS = {"mbv2": 15_456, "resnet": 540_225}   # SPEC §2.2, §2.5


pytestmark = pytest.mark.usefixtures("one_thread")


def random_cost_table(space: SearchSpace, topology: Topology, generator: torch.Generator) -> CostTable:
    """Costs drawn uniformly from [0.1, 5) in the topology's layout (float64)."""
    def draw(*shape: int) -> torch.Tensor:
        return 0.1 + 4.9 * torch.rand(*shape, generator=generator, dtype=torch.float64)

    blocks = range(1, topology.final_node)
    return CostTable(
        stem=float(draw(())),
        heads=tuple(draw(len(topology.in_edges[j]), len(space.head_ops)) for j in blocks),
        stacks=tuple(draw(topology.stacked_layers[j], len(space.stack_ops)) for j in blocks),
        final=draw(len(topology.in_edges[topology.final_node])),
        classifier=float(draw(())),
        unit="ms",
    )


@dataclass
class Arch:
    """α and β as plain float64 tensors in the supernet's layout (SPEC §4.1)."""

    alpha_head: list[torch.Tensor]
    alpha_stack: list[torch.Tensor]
    beta: list[torch.Tensor]

    def tensors(self) -> list[torch.Tensor]:
        return [*self.alpha_head, *self.alpha_stack, *self.beta]


def random_arch(topology: Topology, space: SearchSpace, generator: torch.Generator) -> Arch:
    """Spread-out values (std 1), so every path and op weighs differently."""
    def draw(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator, dtype=torch.float64)

    blocks = range(1, topology.final_node)
    return Arch(
        alpha_head=[draw(len(topology.in_edges[j]), len(space.head_ops)) for j in blocks],
        alpha_stack=[draw(topology.stacked_layers[j], len(space.stack_ops)) for j in blocks],
        beta=[draw(len(edges)) for edges in topology.out_edges],
    )


def _softmax_over(row: list[float], ops: tuple[int, ...], temperature: float) -> list[float]:
    """Plain-Python softmax(α[S] / T) over ``ops``, zeros elsewhere (independent of the library's masking)."""
    exps = {o: math.exp(row[o] / temperature) for o in ops}
    total = sum(exps.values())
    return [exps[o] / total if o in exps else 0.0 for o in range(len(row))]


def brute_force_cost(topology: Topology, table: CostTable, arch: Arch, sampled, temperature: float):
    """Σ over every node path 0 → F of Π p along the path × (stem + Σ align + Σ block costs) + classifier,
    with α-weighted layer costs; returns (cost, number of paths enumerated)."""
    final = topology.final_node

    def layer_cost(alpha: torch.Tensor, costs: torch.Tensor, row: int, ops: tuple[int, ...]) -> float:
        weights = _softmax_over(alpha[row].tolist(), ops, temperature)
        return sum(w * c for w, c in zip(weights, costs[row].tolist(), strict=True))

    block = [table.stem] + [
        sum(layer_cost(arch.alpha_stack[j - 1], table.stacks[j - 1], row, ops)
            for row, ops in enumerate(sampled.stacks[j - 1]))
        for j in range(1, final)
    ] + [0.0]
    moves = []
    for i in range(final):
        probs = _softmax_over(arch.beta[i].tolist(), tuple(range(len(arch.beta[i]))), temperature)
        row = []
        for position, edge in enumerate(topology.out_edges[i]):
            branch = topology.in_position(i, edge.target)
            if edge.target == final:
                align = float(table.final[branch])
            else:
                align = layer_cost(arch.alpha_head[edge.target - 1], table.heads[edge.target - 1], branch,
                                   sampled.heads[edge.target - 1][branch])
            row.append((edge.target, probs[position], align))
        moves.append(row)
    total, paths = 0.0, 0
    pending = [(0, 1.0, block[0])]   # (node, path probability so far, path cost so far)
    while pending:
        node, prob, cost = pending.pop()
        if node == final:
            total, paths = total + prob * cost, paths + 1
            continue
        for target, p, align in moves[node]:
            pending.append((target, prob * p, cost + align + block[target]))
    return total + table.classifier, paths


def _chain(topology: Topology, table: CostTable, arch: Arch, sampled, temperature: float) -> torch.Tensor:
    """The library's chain fed with the supernet's op weights and path probabilities."""
    heads = [sampled_op_weights(a, rows, temperature) for a, rows in zip(arch.alpha_head, sampled.heads, strict=True)]
    stacks = [sampled_op_weights(a, rows, temperature)
              for a, rows in zip(arch.alpha_stack, sampled.stacks, strict=True)]
    probs = [torch.softmax(beta / temperature, dim=0) for beta in arch.beta]
    return chained_cost(topology, table, heads, stacks, probs)


@pytest.mark.parametrize("space_name", ["mbv2", "resnet"])
@pytest.mark.parametrize(("policy", "k"), [("all", None), ("prob", 2)])
def test_chain_equals_brute_force_over_all_paths(space_name: str, policy: str, k: int | None) -> None:
    space = load_space(space_name)
    topology = build_topology(space)
    generator = torch.Generator().manual_seed(7)
    table = random_cost_table(space, topology, generator)
    arch = random_arch(topology, space, generator)
    sampled = sample_ops(arch.alpha_head, arch.alpha_stack, policy, k, generator)
    expected, paths = brute_force_cost(topology, table, arch, sampled, space.temperature)
    got = float(_chain(topology, table, arch, sampled, space.temperature))
    assert paths == PATHS[space_name] == count_paths(topology), f"enumerated {paths} paths"
    assert got == pytest.approx(expected, rel=1e-6), f"{space_name}/{policy}: brute force {expected}, chain {got}"


@pytest.mark.parametrize("space_name", ["mbv2", "resnet"])
def test_chain_gradcheck_alpha_and_beta(space_name: str) -> None:
    space = load_space(space_name)
    topology = build_topology(space)
    generator = torch.Generator().manual_seed(1)
    table = random_cost_table(space, topology, generator)
    arch = random_arch(topology, space, generator)
    sampled = sample_ops(arch.alpha_head, arch.alpha_stack, "prob", 2, generator)

    def cost(*tensors: torch.Tensor) -> torch.Tensor:
        heads, stacks = len(arch.alpha_head), len(arch.alpha_stack)
        rebuilt = Arch(list(tensors[:heads]), list(tensors[heads:heads + stacks]), list(tensors[heads + stacks:]))
        return _chain(topology, table, rebuilt, sampled, space.temperature)

    inputs = tuple(t.clone().requires_grad_(True) for t in arch.tensors())
    assert torch.autograd.gradcheck(cost, inputs, eps=1e-6, atol=1e-6, rtol=1e-5)


def _random_architecture(topology: Topology, space: SearchSpace, generator: torch.Generator):
    """A random node path 0 → F with a random head op and stacked ops for every routing block on it."""
    def pick(n: int) -> int:
        return int(torch.randint(n, (), generator=generator))

    path = [0]
    while path[-1] != topology.final_node:
        edges = topology.out_edges[path[-1]]
        path.append(edges[pick(len(edges))].target)
    blocks = path[1:-1]
    head_ops = [pick(len(space.head_ops)) for _ in blocks]
    stack_ops = [[pick(len(space.stack_ops)) for _ in range(topology.stacked_layers[j])] for j in blocks]
    return path, head_ops, stack_ops


@pytest.mark.parametrize("space_name", ["mbv2", "resnet"])
def test_architecture_cost_equals_one_hot_chain(space_name: str) -> None:
    space = load_space(space_name)
    topology = build_topology(space)
    generator = torch.Generator().manual_seed(11)
    table = random_cost_table(space, topology, generator)
    arch = random_arch(topology, space, generator)
    for _ in range(5):
        path, head_ops, stack_ops = _random_architecture(topology, space, generator)
        heads = [torch.zeros_like(a) for a in arch.alpha_head]
        stacks = [torch.zeros_like(a) for a in arch.alpha_stack]
        probs = [torch.softmax(beta, dim=0) for beta in arch.beta]   # off the path: any distribution
        for (source, node), head_op, layer_ops in zip(itertools.pairwise(path[:-1]), head_ops, stack_ops, strict=True):
            probs[source] = torch.zeros_like(probs[source])
            probs[source][topology.out_position(source, node)] = 1.0
            heads[node - 1][topology.in_position(source, node), head_op] = 1.0
            for layer, op in enumerate(layer_ops):
                stacks[node - 1][layer, op] = 1.0
        probs[path[-2]] = torch.zeros_like(probs[path[-2]])
        probs[path[-2]][topology.out_position(path[-2], path[-1])] = 1.0
        expected = float(chained_cost(topology, table, heads, stacks, probs))
        got = architecture_cost(topology, table, path, head_ops, stack_ops)
        assert got == pytest.approx(expected, rel=1e-12), f"path {path}: one-hot chain {expected}, got {got}"


def test_architecture_cost_is_a_plain_sum() -> None:
    """With every entry 1, the cost counts stem + one head and L_j stacked ops per block + final branch + FC."""
    space = load_space("mbv2")
    topology = build_topology(space)
    ones = CostTable(
        stem=1.0,
        heads=tuple(torch.ones(len(topology.in_edges[j]), 6) for j in range(1, 17)),
        stacks=tuple(torch.ones(topology.stacked_layers[j], 7) for j in range(1, 17)),
        final=torch.ones(3), classifier=1.0, unit="ms",
    )
    path = [0, 1, 4, 7, 10, 13, 16, 17]
    stack_ops = [[6] * topology.stacked_layers[j] for j in path[1:-1]]
    got = architecture_cost(topology, ones, path, [0] * 6, stack_ops)
    assert got == 1 + 6 + 5 * 3 + 1 + 1, f"expected 24 unit costs, got {got}"


def test_architecture_cost_rejects_inconsistent_architectures() -> None:
    space = load_space("mbv2")
    topology = build_topology(space)
    table = random_cost_table(space, topology, torch.Generator().manual_seed(0))
    path = [0, 1, 4, 7, 10, 13, 16, 17]
    stack_ops = [[0, 0, 0]] * 5 + [[]]
    assert architecture_cost(topology, table, path, [0] * 6, stack_ops) > 0
    with pytest.raises(DensenasError, match="no edge to node 5"):
        architecture_cost(topology, table, [0, 1, 5, 7, 10, 13, 16, 17], [0] * 6, stack_ops)
    with pytest.raises(DensenasError, match="from node 0 to the final node 17"):
        architecture_cost(topology, table, path[:-1], [0] * 5, stack_ops[:5])
    with pytest.raises(DensenasError, match="6 routing blocks"):
        architecture_cost(topology, table, path, [0] * 5, stack_ops)
    with pytest.raises(DensenasError, match="node 1 has 3 stacked layers, got 2"):
        architecture_cost(topology, table, path, [0] * 6, [[0, 0], *stack_ops[1:]])
