"""The model zoo: published mult-adds/params (SPEC §7.5, §10.2), torchvision baselines, forward/backward."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from densenas.complexity import complexity
from densenas.registry import create_model, get_entry, list_models

# (mult-adds, params) at 224x224, 1000 classes — ../shared/paper/published_archs.json [VERIFIED]
PUBLISHED = {
    "densenas_a": (251_334_416, 4_767_920),
    "densenas_b": (313_580_096, 5_584_080),
    "densenas_c": (360_808_256, 6_134_144),
    "densenas_c_arxiv_v1": (382_990_336, 6_720_312),
    "resnet_space_issue19": (895_890_176, 7_671_032),
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_architectures_match_recomputed_counts(name: str) -> None:
    cost = complexity(create_model(name), input_size=224)
    assert (cost.mult_adds, cost.params) == PUBLISHED[name]


@pytest.mark.parametrize(("name", "paper_m"), [("densenas_a", 251), ("densenas_b", 314), ("densenas_c", 361)])
def test_counts_round_to_the_paper_flops(name: str, paper_m: int) -> None:
    assert abs(complexity(create_model(name)).mult_adds_m - paper_m) < 0.5


@pytest.mark.parametrize(
    ("name", "mult_adds_m", "tol"),
    [("mobilenet_v2", 300.77, 0.05), ("resnet18", 1810, 10), ("resnet34", 3660, 10), ("resnet50", 4090, 10)],
)
def test_torchvision_baselines_in_the_paper_convention(name: str, mult_adds_m: float, tol: float) -> None:
    got = complexity(create_model(name)).mult_adds_m
    assert abs(got - mult_adds_m) <= tol, f"{name}: expected {mult_adds_m}±{tol} M, got {got:.2f} M"


@pytest.mark.parametrize("name", ["densenas_c", "resnet_space_issue19", "mobilenet_v2", "resnet18"])
def test_counter_agrees_with_torch_flop_counter(name: str) -> None:
    model = create_model(name).eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, 3, 224, 224))
    # torch counts a multiply-add as 2 FLOPs and, like the paper, ignores BN, activations and bias adds.
    assert counter.get_total_flops() == 2 * complexity(model).mult_adds


@pytest.mark.parametrize("name", list_models())
def test_every_registered_model_runs_forward_and_backward(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, num_classes=10).train()
    logits = model(torch.randn(2, 3, 64, 64))
    assert logits.shape == (2, 10)
    assert torch.isfinite(logits).all()
    logits.logsumexp(1).mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_registry_entries_name_their_paper_row() -> None:
    assert get_entry("densenas_c").paper_name == "DenseNAS-C"
    assert get_entry("mobilenet_v2_140").paper_name == "1.4-MobileNetV2"
    assert get_entry("densenas_a").net_config is not None
