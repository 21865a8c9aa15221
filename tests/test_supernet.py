"""The supernet (SPEC §2.2, §2.5, §3, §4): exact parameter and BN counts, sampled ops per step, the routing-block
and final-node weighting with quirks Q2/Q3/Q6, op sampling (§4.2, Q4) and the cost returned by the forward."""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import pytest
import torch
from torch import nn

from densenas.chained_cost import chained_cost
from densenas.config import QuirkParams
from densenas.cost_table import CostTable
from densenas.errors import DensenasError
from densenas.spaces import load_space
from densenas.supernet import MixedOp, SampledOps, Supernet, sample_ops

# SPEC §2.2 and §2.5, at 224 px with the 100-class search head.
COUNTS = {
    "mbv2": {"total": 90_430_733, "arch": 633, "head_rows": 51, "stack_rows": 39,
             "beta": [1, 3, 4, 4, 3, 4, 4, 3, 4, 4, 3, 4, 4, 3, 3, 2, 1]},
    "resnet": {"total": 178_131_665, "arch": 397, "head_rows": 84, "stack_rows": 113,
               "beta": [3, 5, 4, 3, 6, 5, 4, 6, 5, 4, 3, 6, 5, 4, 6, 5, 4, 3, 3, 2, 1]},
}

# A four-block space small enough to build and run in milliseconds: nodes 1..4, final node 5 with in-edges 4, 3.
TINY_SPACE = """
name: tiny
family: mbv2
stem_width: 8
head_width: 8
last_dim: 32
widths: [8, 16, 16, 24, 32]
resolutions: [16, 8, 8, 4, 4]
stages: [0, 1, 1, 2, 2, 3]
stacked_layers: [0, 1, 2, 1, 0]
connections_per_stage: [4, 4, 4]
head_ops: [mbconv_k3_t3, mbconv_k5_t6]
stack_ops: [mbconv_k3_t3, mbconv_k3_t6, skip_connect]
temperature: 0.8
bn: {momentum: 0.1, eps: 0.001}
"""


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module", params=["mbv2", "resnet"])
def supernet(request) -> Supernet:
    torch.manual_seed(0)
    return Supernet(load_space(request.param), num_classes=100)


@pytest.fixture
def tiny_space(tmp_path: Path):
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_SPACE)
    return load_space(path)


def _tiny(space, quirks: QuirkParams | None = None, seed: int = 0) -> Supernet:
    torch.manual_seed(seed)
    model = Supernet(space, num_classes=10, quirks=quirks)
    with torch.no_grad():   # spread α and β out so weightings differ visibly
        for p in model.arch_parameters():
            p.normal_()
    return model


def _mixed_ops(model: Supernet) -> list[tuple[MixedOp, tuple[int, ...]]]:
    """Every mixed layer with its α-row position: heads of nodes 1..N, then stacked layers of nodes 1..N."""
    heads = [(op, ("head", j, b)) for j, block in enumerate(model.blocks) for b, op in enumerate(block.heads)]
    stacks = [(op, ("stack", j, layer)) for j, block in enumerate(model.blocks)
              for layer, op in enumerate(block.stacks)]
    return heads + stacks


def _row(sampled: SampledOps, key: tuple) -> tuple[int, ...]:
    kind, j, row = key
    return (sampled.heads if kind == "head" else sampled.stacks)[j][row]


def test_parameter_and_bn_counts(supernet: Supernet) -> None:
    space = supernet.space
    want = COUNTS[space.name]
    total = sum(p.numel() for p in supernet.parameters())
    arch = sum(p.numel() for p in supernet.arch_parameters())
    assert total == want["total"], f"{space.name}: expected {want['total']:,} parameters, got {total:,}"
    assert arch == want["arch"], f"{space.name}: expected {want['arch']} architecture parameters, got {arch}"
    assert sum(p.numel() for p in supernet.weight_parameters()) + arch == total, "weights and α/β partition"
    assert [len(b) for b in supernet.beta_parameters()] == want["beta"]
    assert sum(a.shape[0] for a in supernet.arch.alpha_head) == want["head_rows"]
    assert sum(a.shape[0] for a in supernet.arch.alpha_stack) == want["stack_rows"]
    for op, (kind, _, _) in _mixed_ops(supernet):
        names = space.head_ops if kind == "head" else space.stack_ops
        assert len(op.candidates) == len(names), "every mixed layer holds all candidate ops"
    bns = [m for m in supernet.modules() if isinstance(m, nn.BatchNorm2d)]
    affine = [m for m in bns if m.affine]
    assert all(m.eps == space.bn.eps and m.momentum == space.bn.momentum for m in bns)
    assert len(affine) == 1, f"{space.name}: expected exactly 1 affine BN, got {len(affine)}"
    if space.name == "mbv2":
        assert len(bns) == 1626, f"expected 1,626 BN layers, got {len(bns)}"
        assert affine[0] is list(supernet.stem[3].body)[-1], "Q6: the fixed block's projection BN"
    else:
        assert affine[0] is supernet.stem[1], "the ResNet stem BN is affine"


@pytest.mark.parametrize(("policy", "k"), [("uniform", 1), ("prob", 2)], ids=["weight_step", "arch_step"])
def test_forward_backward_runs_only_sampled_ops(supernet: Supernet, policy: str, k: int) -> None:
    supernet.zero_grad(set_to_none=True)
    sampled = supernet.sample_ops(policy, k, torch.Generator().manual_seed(3))
    executed: dict[int, set[int]] = {}
    hooks = []
    for op, _ in _mixed_ops(supernet):
        layer = executed.setdefault(id(op), set())
        for index, candidate in enumerate(op.candidates):
            hooks.append(candidate.register_forward_hook(lambda m, a, out, layer=layer, index=index: layer.add(index)))
    table = _unit_cost_table(supernet)
    try:
        logits, cost = supernet(torch.randn(2, 3, 32, 32), sampled, table if policy == "prob" else None)
    finally:
        for hook in hooks:
            hook.remove()
    assert logits.shape == (2, 100) and torch.isfinite(logits).all()
    loss = nn.functional.cross_entropy(logits, torch.tensor([1, 2]))
    if cost is not None:
        loss = loss + 0.15 * torch.log(cost) / math.log(15.0)
    loss.backward()
    for op, key in _mixed_ops(supernet):
        ops = _row(sampled, key)
        assert len(ops) == min(k, len(op.candidates)), f"{key}: expected {min(k, len(op.candidates))} ops, got {ops}"
        assert executed[id(op)] == set(ops), f"{key}: sampled {ops}, executed {executed[id(op)]}"
        for index, candidate in enumerate(op.candidates):
            grads = [p.grad is not None for p in candidate.parameters()]
            assert all(grads) if index in ops else not any(grads), f"{key} op {index}: gradient iff sampled"
    if policy == "prob":
        alphas = [*supernet.arch.alpha_head, *supernet.arch.alpha_stack]
        rows = [*sampled.heads, *sampled.stacks]
        for alpha, ops_per_row in zip(alphas, rows, strict=True):
            for grad, ops in zip(alpha.grad, ops_per_row, strict=True):
                off = [o for o in range(grad.numel()) if o not in ops]
                assert torch.all(grad[off] == 0), f"α gradient off the sampled ops {ops}: {grad.tolist()}"
                if len(ops) > 1:
                    assert torch.any(grad[list(ops)] != 0), f"no α gradient on the sampled ops {ops}"
        assert all(torch.any(b.grad != 0) for b in supernet.beta_parameters() if b.numel() > 1)


def _unit_cost_table(model: Supernet) -> CostTable:
    topo = model.topology
    blocks = range(1, topo.final_node)
    return CostTable(
        stem=1.0,
        heads=tuple(torch.rand(len(topo.in_edges[j]), len(model.space.head_ops)) + 0.5 for j in blocks),
        stacks=tuple(torch.rand(topo.stacked_layers[j], len(model.space.stack_ops)) + 0.5 for j in blocks),
        final=torch.rand(len(topo.in_edges[topo.final_node])) + 0.5,
        classifier=0.5,
        unit="ms",
    )


def test_forward_cost_uses_the_forward_weights(tiny_space) -> None:
    """The cost of a forward = the chain with softmax(α[S]/T) over each sample and the raw p = softmax(β/T)."""
    model = _tiny(tiny_space)
    sampled = model.sample_ops("prob", 2, torch.Generator().manual_seed(0))
    table = _unit_cost_table(model)
    _, cost = model(torch.randn(2, 3, 32, 32), sampled, table)
    temperature = tiny_space.temperature

    def weights(alpha: torch.Tensor, rows) -> torch.Tensor:
        out = torch.zeros_like(alpha)
        for r, ops in enumerate(rows):
            out[r, list(ops)] = torch.softmax(alpha[r, list(ops)] / temperature, dim=0)
        return out

    heads = [weights(a, rows) for a, rows in zip(model.arch.alpha_head, sampled.heads, strict=True)]
    stacks = [weights(a, rows) for a, rows in zip(model.arch.alpha_stack, sampled.stacks, strict=True)]
    probs = [torch.softmax(b / temperature, dim=0) for b in model.arch.beta]
    expected = chained_cost(model.topology, table, heads, stacks, probs)
    assert torch.allclose(cost, expected), f"expected cost {float(expected)}, got {float(cost)}"
    assert torch.allclose(model.expected_cost(sampled, table), expected)
    assert model(torch.randn(2, 3, 32, 32), sampled)[1] is None, "no cost without a cost table"
    short = CostTable(table.stem, table.heads, (table.stacks[0][:0], *table.stacks[1:]), table.final,
                      table.classifier, table.unit)
    with pytest.raises(DensenasError, match="node 1 stack costs have shape"):
        model.expected_cost(sampled, short)


def test_a_proxy_width_supernet_scales_its_weights_and_keeps_the_full_width_cost(tiny_space) -> None:
    """width_mult scales every op's channels (at least 1) but neither the architecture parameters nor the cost."""
    full, proxy = _tiny(tiny_space), Supernet(tiny_space, num_classes=10, width_mult=0.25)
    proxy.arch.load_state_dict(full.arch.state_dict())
    convs = [m for m in proxy.modules() if isinstance(m, nn.Conv2d)]
    assert convs[0].out_channels == 2 and proxy.classifier.in_features == 8, "stem 8 and last_dim 32 at 1/4"
    assert min(m.out_channels for m in convs) >= 1
    full_weights = sum(p.numel() for p in full.weight_parameters())
    assert sum(p.numel() for p in proxy.weight_parameters()) < full_weights / 8
    sampled = full.sample_ops("prob", 2, torch.Generator().manual_seed(0))
    table = _unit_cost_table(full)
    logits, cost = proxy(torch.randn(2, 3, 32, 32), sampled, table)
    assert logits.shape == (2, 10) and torch.equal(cost, full.expected_cost(sampled, table))
    with pytest.raises(DensenasError, match=r"width_mult must be in \(0, 1\], got 1.5"):
        Supernet(tiny_space, width_mult=1.5)


def _captured_weights(model: Supernet, sampled: SampledOps) -> tuple[dict[int, torch.Tensor], torch.Tensor]:
    """The path weights each routing block received and the final node's branch weights."""
    blocks: dict[int, torch.Tensor] = {}
    final: list[torch.Tensor] = []
    hooks = [block.register_forward_hook(lambda m, args, out, j=j: blocks.__setitem__(j, args[1].detach()))
             for j, block in enumerate(model.blocks, start=1)]
    hooks.append(model.final.register_forward_hook(lambda m, args, out: final.append(args[1].detach())))
    with torch.no_grad():
        model(torch.randn(2, 3, 32, 32), sampled)
    for hook in hooks:
        hook.remove()
    return blocks, final[0]


@pytest.mark.parametrize("official", [True, False], ids=["official", "switched_off"])
def test_incoming_path_weights_follow_q2_and_q3(tiny_space, official: bool) -> None:
    quirks = QuirkParams() if official else QuirkParams(normalise_incoming_paths=True, final_node_softmax=False)
    model = _tiny(tiny_space, quirks)
    topo = model.topology
    probs = [torch.softmax(b.detach() / tiny_space.temperature, dim=0) for b in model.arch.beta]
    blocks, final = _captured_weights(model, model.sample_ops("all"))

    def raw(j: int) -> torch.Tensor:
        return torch.stack([probs[e.source][topo.out_position(e.source, j)] for e in topo.in_edges[j]])

    for j, got in blocks.items():
        want = raw(j) if official else raw(j) / raw(j).sum()
        assert torch.allclose(got, want), f"node {j}: expected path weights {want.tolist()}, got {got.tolist()}"
    if official:
        assert not torch.isclose(raw(4).sum(), torch.tensor(1.0)), "Q2: incoming p need not sum to 1"
    last = raw(topo.final_node)
    want = torch.softmax(last, dim=0) if official else last / last.sum()
    assert torch.allclose(final, want), f"final node: expected {want.tolist()}, got {final.tolist()}"


def test_routing_block_is_weighted_sum_then_stack(tiny_space) -> None:
    """x_j = stack(Σ_b p_b Σ_{o∈S_b} w_o head_b,o(x_b)), evaluated op by op (eval mode: deterministic BN)."""
    model = _tiny(tiny_space).eval()
    sampled = model.sample_ops("prob", 2, torch.Generator().manual_seed(1))
    head_w, stack_w = model.op_weights(sampled)
    j = 4
    block = model.blocks[j - 1]
    seen = {}
    hook = block.register_forward_hook(lambda m, args, out: seen.update(inputs=args[0], paths=args[1], out=out))
    with torch.no_grad():
        model(torch.randn(2, 3, 32, 32), sampled)
        hook.remove()
        want = sum(
            seen["paths"][b] * sum(head_w[j - 1][b, o] * head.candidates[o](x) for o in sampled.heads[j - 1][b])
            for b, (head, x) in enumerate(zip(block.heads, seen["inputs"], strict=True))
        )
        for layer, ops, w in zip(block.stacks, sampled.stacks[j - 1], stack_w[j - 1], strict=True):
            want = sum(w[o] * layer.candidates[o](want) for o in ops)
    assert len(seen["inputs"]) == 3, "node 4 has in-edges from nodes 3, 2, 1"
    assert torch.allclose(seen["out"], want, atol=1e-6), "routing block output differs from the weighted sum"


def test_affine_exceptions_switch(tiny_space) -> None:
    for quirks, expected in ((QuirkParams(), 1), (QuirkParams(affine_flag_exceptions=False), 0)):
        model = _tiny(tiny_space, quirks)
        affine = sum(m.affine for m in model.modules() if isinstance(m, nn.BatchNorm2d))
        assert affine == expected, f"{quirks}: expected {expected} affine BN, got {affine}"


def test_same_seed_same_supernet_and_outputs(tiny_space) -> None:
    first, second = _tiny(tiny_space, seed=4), _tiny(tiny_space, seed=4)
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b), f"{name} differs between two builds with the same seed"
    assert any(k.startswith("arch.") for k in first.state_dict()), "α and β are saved with the weights"
    sampled = first.sample_ops("prob", 2, torch.Generator().manual_seed(0))
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(first(x, sampled)[0], second(x, sampled)[0])


def test_sampling_policies(tiny_space) -> None:
    model = _tiny(tiny_space)
    n_head, n_stack = len(tiny_space.head_ops), len(tiny_space.stack_ops)
    draw = model.sample_ops("uniform", 2, torch.Generator().manual_seed(5))
    rows = [r for m in draw.stacks for r in m]
    assert all(len(r) == 2 and r[0] < r[1] < n_stack for r in rows), f"2 distinct sorted ops per row, got {rows}"
    assert all(r == tuple(range(n_head)) for m in draw.heads for r in m), "k >= number of ops: all ops"
    assert set(model.sample_ops("all").counts()) == {n_head, n_stack}
    assert set(model.sample_ops("prob", 1).counts()) == {1}
    again = model.sample_ops("uniform", 2, torch.Generator().manual_seed(5))
    assert again == draw, "same generator seed, same sample"
    assert pickle.loads(pickle.dumps(draw)) == draw, "sampled ops must be picklable for broadcasting"
    with pytest.raises(ValueError, match="policy"):
        model.sample_ops("gumbel", 1)


def test_prob_sampling_follows_softmax_alpha_without_temperature() -> None:
    """Q4: the draw uses softmax(α), not softmax(α/T); 'uniform' ignores α. 40,000 rows, 1 op each."""
    rows = 40_000
    alpha = torch.tensor([[0.0, math.log(3.0)]]).repeat(rows, 1)   # softmax(α) = (0.25, 0.75)
    generator = torch.Generator().manual_seed(0)
    prob = sample_ops([alpha], [torch.zeros(0, 2)], "prob", 1, generator)
    share = sum(r == (1,) for r in prob.heads[0]) / rows
    assert abs(share - 0.75) < 0.01, f"expected op 1 in 75% of draws (softmax(α/0.9) would give 77%), got {share}"
    uniform = sample_ops([alpha], [torch.zeros(0, 2)], "uniform", 1, generator)
    share = sum(r == (1,) for r in uniform.heads[0]) / rows
    assert abs(share - 0.5) < 0.01, f"uniform: expected op 1 in 50% of draws, got {share}"


def test_unsupported_spaces_fail_clearly(tmp_path: Path) -> None:
    bottleneck = tmp_path / "bottleneck.yaml"
    bottleneck.write_text(TINY_SPACE.replace("family: mbv2", "family: res").replace("head_width: 8", "head_width: null")
                          .replace("head_ops: [mbconv_k3_t3, mbconv_k5_t6]", "head_ops: [bottle_neck]"))
    with pytest.raises(DensenasError, match="bottle_neck"):
        Supernet(load_space(bottleneck))
    strided = tmp_path / "strided.yaml"
    strided.write_text(TINY_SPACE.replace("resolutions: [16, 8, 8, 4, 4]", "resolutions: [16, 8, 8, 8, 4]"))
    with pytest.raises(DensenasError, match="final node's inputs"):
        Supernet(load_space(strided))
