"""PointwiseConv2d is an exact reformulation of a 1×1 nn.Conv2d; use_gemm_pointwise converts only plain 1×1 convs."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from densenas import pointwise
from densenas.pointwise import PointwiseConv2d, use_gemm_pointwise
from densenas.registry import create_model
from densenas.spaces import load_space
from densenas.supernet import Supernet


def _outputs_and_grads(net: nn.Module, x: torch.Tensor, forward: object = None) -> tuple[torch.Tensor, list]:
    x = x.clone().requires_grad_()
    torch.manual_seed(1)  # the same dropout masks in both networks
    out = net(x) if forward is None else forward(net, x)  # type: ignore[operator]
    logits = out[0] if isinstance(out, tuple) else out
    F.cross_entropy(logits, torch.arange(len(x)) % logits.shape[1]).backward()
    return logits, [x.grad, *(p.grad for p in net.parameters())]


@pytest.mark.parametrize("side", [1, 2, 5])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("bias", [False, True])
def test_matches_nn_conv2d_outputs_and_gradients(side: int, channels_last: bool, bias: bool) -> None:
    torch.manual_seed(0)
    ref = nn.Conv2d(7, 5, 1, bias=bias).double()
    ours = copy.deepcopy(ref)
    assert use_gemm_pointwise(ours) == 1 and type(ours) is PointwiseConv2d
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(3, 7, side, side, dtype=torch.float64).to(memory_format=fmt)
    out_ours, out_ref = ours(x), ref(x)
    torch.testing.assert_close(out_ours, out_ref)
    if channels_last:
        assert out_ours.is_contiguous(memory_format=torch.channels_last), "the output stays channels-last"
    upstream = torch.randn_like(out_ref)
    grads = []
    for net in (ours, ref):
        x_req = x.clone().requires_grad_()
        (net(x_req) * upstream).sum().backward()
        grads.append([x_req.grad, *(p.grad for p in net.parameters())])
    for got, want in zip(*grads, strict=True):
        torch.testing.assert_close(got, want)


def test_channels_last_inputs_take_the_gemm(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, ...]] = []
    real = pointwise.F.linear

    def spy(rows: torch.Tensor, *args: torch.Tensor | None) -> torch.Tensor:
        calls.append(tuple(rows.shape))
        return real(rows, *args)

    monkeypatch.setattr(pointwise.F, "linear", spy)
    conv = nn.Conv2d(4, 6, 1, bias=False)
    use_gemm_pointwise(conv)
    conv(torch.randn(2, 4, 3, 3))  # NCHW: the conv
    conv(torch.randn(2, 4, 3, 3).to(memory_format=torch.channels_last))
    assert calls == [(18, 4)], "only the channels-last input runs as one (N·H·W, C_in) GEMM"


def test_only_plain_stride1_pointwise_convs_are_converted() -> None:
    net = nn.Sequential(nn.Conv2d(4, 4, 1), nn.Conv2d(4, 4, 1, stride=2), nn.Conv2d(4, 4, 1, groups=2),
                        nn.Conv2d(4, 4, 3, padding=1), nn.Sequential(nn.Conv2d(4, 8, 1, bias=False)))
    state = {k: v.clone() for k, v in net.state_dict().items()}
    assert use_gemm_pointwise(net) == 2
    assert [type(m).__name__ for m in net.modules() if isinstance(m, nn.Conv2d)] == [
        "PointwiseConv2d", "Conv2d", "Conv2d", "Conv2d", "PointwiseConv2d"]
    assert use_gemm_pointwise(net) == 0, "converting twice changes nothing"
    assert net.state_dict().keys() == state.keys()
    for key, value in net.state_dict().items():
        assert torch.equal(value, state[key])


@pytest.mark.parametrize("model", ["densenas_c", "mobilenet_v2"])
def test_whole_networks_train_the_same(model: str) -> None:
    torch.manual_seed(0)
    ref = create_model(model, num_classes=10).double().to(memory_format=torch.channels_last).train()
    ours = copy.deepcopy(ref)
    assert use_gemm_pointwise(ours) > 10
    x = torch.randn(4, 3, 32, 32, dtype=torch.float64).to(memory_format=torch.channels_last)
    (out_ours, grads_ours), (out_ref, grads_ref) = _outputs_and_grads(ours, x), _outputs_and_grads(ref, x)
    torch.testing.assert_close(out_ours, out_ref)
    for got, want in zip(grads_ours, grads_ref, strict=True):
        torch.testing.assert_close(got, want)


def test_the_supernet_with_every_op_trains_the_same() -> None:
    torch.manual_seed(0)
    ref = Supernet(load_space("mbv2"), num_classes=10, width_mult=0.25).double()
    ref.to(memory_format=torch.channels_last).train()
    ours = copy.deepcopy(ref)
    assert use_gemm_pointwise(ours) > 100
    # batch 8: with 2 images, BN over a 1×1 map normalises near-equal pairs and amplifies float rounding
    x = torch.randn(8, 3, 32, 32, dtype=torch.float64).to(memory_format=torch.channels_last)
    everything = ref.sample_ops("all")

    def forward(net: nn.Module, images: torch.Tensor) -> torch.Tensor:
        return net(images, everything)

    (out_ours, grads_ours), (out_ref, grads_ref) = (_outputs_and_grads(ours, x, forward),
                                                    _outputs_and_grads(ref, x, forward))
    torch.testing.assert_close(out_ours, out_ref)
    for got, want in zip(grads_ours, grads_ref, strict=True):
        torch.testing.assert_close(got, want)
