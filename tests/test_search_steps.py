"""Search steps (SPEC §4.4, §5.4, §6.4): α re-scaling, the cost term, the weight-LR schedule, and one
architecture and one weight step on the MBV2 supernet."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from densenas.distributed import DistContext
from densenas.official_lut import import_official_lut
from densenas.search.arch_step import arch_step, cost_term, rescale_alpha
from densenas.search.schedule import total_weight_steps, weight_lr
from densenas.search.weight_step import weight_step
from densenas.spaces import load_space
from densenas.spaces.space import SearchSpace
from densenas.supernet import Supernet

SINGLE = DistContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


def test_rescaling_restores_the_mass_of_the_sampled_subset() -> None:
    generator = torch.Generator().manual_seed(0)
    old = torch.randn(4, 7, generator=generator)
    new = old + torch.randn(4, 7, generator=generator)
    stepped = new.clone()
    sampled = [(1, 4), (0, 6), (2, 3), (5, 6)]
    rescale_alpha([new], [old], [sampled])
    for row, ops in enumerate(sampled):
        subset, rest = list(ops), [o for o in range(7) if o not in ops]
        before = old[row, subset].logsumexp(0) - stepped[row, rest].logsumexp(0)
        after = new[row, subset].logsumexp(0) - new[row, rest].logsumexp(0)
        assert after.item() == pytest.approx(before.item(), abs=1e-5), \
            f"row {row}: log(mass S / mass rest) {after.item():.6f}, expected {before.item():.6f}"
        assert torch.equal(new[row, rest], stepped[row, rest]), f"row {row}: entries outside S must not move"


def test_rescaling_skips_matrices_without_rows() -> None:
    empty = torch.zeros(0, 7)
    rescale_alpha([empty], [empty.clone()], [()])
    assert empty.shape == (0, 7)


def test_cost_term_is_lambda_times_log_base_tau() -> None:
    cost = torch.tensor(15.0, requires_grad=True)
    term = cost_term(cost, 0.15, 15.0)
    assert term.item() == pytest.approx(0.15), f"cost = τ must give λ, got {term.item()}"
    term.backward()
    assert cost.grad.item() == pytest.approx(0.15 / (15.0 * math.log(15.0)))


def test_weight_lr_is_a_cosine_over_weight_steps_starting_at_step_one() -> None:
    total = total_weight_steps(150, 102_400, 352)
    assert total == 150 * (102_400 // 352 + 1)
    first = weight_lr(1, total, 0.2, 1e-5)
    assert first < 0.2 and first == pytest.approx(1e-5 + (0.2 - 1e-5) * (1 + math.cos(math.pi / total)) / 2), \
        "the first weight step uses t = 1 (Q19)"
    assert weight_lr(total // 2, total, 0.2, 1e-5) == pytest.approx((0.2 + 1e-5) / 2)
    assert weight_lr(total, total, 0.2, 1e-5) == pytest.approx(1e-5)
    assert weight_lr(total + 7, total, 0.2, 1e-5) == pytest.approx(1e-5), "past T_max the rate stays at the floor"


def slim_mbv2() -> SearchSpace:
    """The MBV2 space with 1/8 of its widths: same topology, ops and α/β layout (the step logic does not depend on
    widths), 1/60 of the weights, so the unit tests stay fast."""
    space = load_space("mbv2")
    widths = tuple(max(4, w // 8) for w in space.widths)
    return dataclasses.replace(space, widths=widths, stem_width=widths[0], head_width=widths[0],
                               last_dim=space.last_dim // 8)


@pytest.fixture(scope="module")
def supernet() -> Supernet:
    torch.manual_seed(0)
    model = Supernet(slim_mbv2(), num_classes=10)
    for param in model.parameters():
        param.grad = torch.zeros_like(param)
    return model


def _batch(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(4, 3, 32, 32, generator=generator), torch.randint(0, 10, (4,), generator=generator)


def _freeze(model: Supernet, *, arch: bool) -> None:
    for p in model.arch_parameters():
        p.requires_grad_(arch)
    for p in model.weight_parameters():
        p.requires_grad_(not arch)


def test_arch_step_moves_alpha_and_beta_only_and_keeps_the_sampled_mass(supernet: Supernet) -> None:
    table, _ = import_official_lut("lat_list_densenas_mbv2_xp32", "mbv2")
    _freeze(supernet, arch=True)
    optimizer = torch.optim.Adam([{"params": supernet.alpha_parameters()}, {"params": supernet.beta_parameters()}],
                                 lr=3e-4, betas=(0.5, 0.999), weight_decay=1e-3)
    weights = [p.detach().clone() for p in supernet.weight_parameters()]
    alphas = [a.detach().clone() for a in supernet.alpha_parameters()]
    betas = [b.detach().clone() for b in supernet.beta_parameters()]
    sampled = supernet.sample_ops("prob", 2, torch.Generator().manual_seed(1))
    images, labels = _batch(0)
    result = arch_step(supernet, optimizer, images, labels, sampled, table, lambda_=0.15, tau=15.0, ctx=SINGLE)
    assert result.loss == pytest.approx(result.ce + 0.15 * math.log(result.cost) / math.log(15.0), rel=1e-5)
    assert all(torch.equal(a, b) for a, b in zip(weights, supernet.weight_parameters(), strict=True)), \
        "an architecture step must not change the weights"
    assert any(not torch.equal(a, b) for a, b in zip(betas, supernet.beta_parameters(), strict=True))
    rows = [*sampled.heads, *sampled.stacks]
    for before, after, matrix_rows in zip(alphas, supernet.alpha_parameters(), rows, strict=True):
        for row, ops in enumerate(matrix_rows):
            subset = list(ops)
            assert after[row, subset].logsumexp(0).item() == pytest.approx(
                before[row, subset].logsumexp(0).item(), abs=1e-5), "re-scaling must keep Σ_S exp(α)"
    moved = max((a - b).abs().max().item() for a, b in zip(alphas, supernet.alpha_parameters(), strict=True)
                if a.numel())
    assert 0 < moved < 1e-2


@pytest.mark.parametrize("policy, k", [("prob", 2), ("all", None)])
def test_arch_step_gives_a_gradient_to_exactly_the_ops_it_runs(supernet: Supernet, policy: str, k: int | None) -> None:
    """arch_policy prob (official) trains the 2 drawn ops' α per row; all (embedded) every op's, so the CE of the
    mixture the all-op warm-up trained reaches every α entry."""
    table, _ = import_official_lut("lat_list_densenas_mbv2_xp32", "mbv2")
    _freeze(supernet, arch=True)
    optimizer = torch.optim.Adam([{"params": supernet.alpha_parameters()}, {"params": supernet.beta_parameters()}],
                                 lr=3e-4, betas=(0.5, 0.999), weight_decay=0.0)
    sampled = supernet.sample_ops(policy, k, torch.Generator().manual_seed(2))
    images, labels = _batch(1)
    arch_step(supernet, optimizer, images, labels, sampled, table, lambda_=0.15, tau=15.0, ctx=SINGLE)
    for alpha, matrix_rows in zip(supernet.alpha_parameters(), [*sampled.heads, *sampled.stacks], strict=True):
        for row, ops in enumerate(matrix_rows):
            has_grad = (alpha.grad[row] != 0).nonzero().flatten().tolist()
            assert has_grad == list(ops), f"row {row}: gradient on ops {has_grad}, ran {list(ops)}"
            assert len(ops) == (alpha.shape[1] if policy == "all" else 2)


def test_weight_step_moves_weights_only_at_the_given_lr(supernet: Supernet) -> None:
    _freeze(supernet, arch=False)
    optimizer = torch.optim.SGD(supernet.weight_parameters(), lr=0.0, momentum=0.9, weight_decay=4e-5)
    arch = [p.detach().clone() for p in supernet.arch_parameters()]
    weights = [p.detach().clone() for p in supernet.weight_parameters()]
    sampled = supernet.sample_ops("uniform", 1, torch.Generator().manual_seed(2))
    images, labels = _batch(1)
    result = weight_step(supernet, optimizer, images, labels, sampled, lr=0.05, ctx=SINGLE)
    assert optimizer.param_groups[0]["lr"] == 0.05
    assert math.isnan(result.cost) and result.loss == result.ce
    assert all(torch.equal(a, b) for a, b in zip(arch, supernet.arch_parameters(), strict=True)), \
        "a weight step must not change α or β"
    changed = sum(not torch.equal(a, b) for a, b in zip(weights, supernet.weight_parameters(), strict=True))
    assert changed > 0


@pytest.mark.parametrize("update_unsampled", [True, False])
def test_unsampled_ops_move_only_when_update_unsampled(update_unsampled: bool) -> None:
    """Faithful (True): decay and momentum move every op; False: the ops a step did not run keep their weights."""
    torch.manual_seed(0)
    model = Supernet(slim_mbv2(), num_classes=10)
    _freeze(model, arch=False)
    for param in model.parameters():  # as the search sets up the faithful run
        param.grad = torch.zeros_like(param)
    optimizer = torch.optim.SGD(model.weight_parameters(), lr=0.05, momentum=0.9, weight_decay=4e-5)
    generator = torch.Generator().manual_seed(3)
    images, labels = _batch(2)
    weight_step(model, optimizer, images, labels, model.sample_ops("uniform", 1, generator), lr=0.05, ctx=SINGLE,
                update_unsampled=update_unsampled)
    sampled = model.sample_ops("uniform", 1, generator)
    head = model.blocks[0].heads[0]
    unused = next(o for o in range(len(head.candidates))
                  if o not in sampled.heads[0][0] and list(head.candidates[o].parameters()))
    before = [p.detach().clone() for p in head.candidates[unused].parameters()]
    weight_step(model, optimizer, images, labels, sampled, lr=0.05, ctx=SINGLE, update_unsampled=update_unsampled)
    after = list(head.candidates[unused].parameters())
    moved = any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))
    assert moved == update_unsampled
