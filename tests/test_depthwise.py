"""DepthwiseConv2d is an exact reformulation of nn.Conv2d(groups=C): same outputs, input and weight gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from densenas import depthwise
from densenas.depthwise import DepthwiseConv2d, tap_weight_grad

# (kernel, stride, map side): kernels larger than the map (cropped taps), small maps (per-tap weight gradient),
# and a map large enough for the plain oneDNN path.
CASES = [(3, 1, 1), (5, 1, 2), (7, 2, 2), (7, 1, 3), (5, 2, 4), (3, 2, 7), (7, 1, 9), (5, 1, 12)]


def _reference(channels: int, kernel: int, stride: int, weight: torch.Tensor) -> nn.Conv2d:
    conv = nn.Conv2d(channels, channels, kernel, stride, (kernel - 1) // 2, groups=channels, bias=False)
    conv.weight.data.copy_(weight)
    return conv.double()


@pytest.mark.parametrize(("kernel", "stride", "side"), CASES)
@pytest.mark.parametrize("channels_last", [False, True])
def test_matches_nn_conv2d_outputs_and_gradients(kernel: int, stride: int, side: int, channels_last: bool) -> None:
    torch.manual_seed(0)
    channels = 6
    ours = DepthwiseConv2d(channels, kernel, stride).double()
    ref = _reference(channels, kernel, stride, ours.weight.detach())
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(3, channels, side, side, dtype=torch.float64).to(memory_format=fmt)
    x_ours, x_ref = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_ours, out_ref = ours(x_ours), ref(x_ref)
    torch.testing.assert_close(out_ours, out_ref)
    upstream = torch.randn_like(out_ref)
    (out_ours * upstream).sum().backward()
    (out_ref * upstream).sum().backward()
    assert x_ours.grad is not None and x_ref.grad is not None
    torch.testing.assert_close(x_ours.grad, x_ref.grad)
    assert ours.weight.grad is not None and ref.weight.grad is not None
    torch.testing.assert_close(ours.weight.grad, ref.weight.grad)
    assert ours.weight.grad.shape == (channels, 1, kernel, kernel), "the parameter keeps its full k×k shape"


def test_small_maps_take_the_tap_path_and_large_maps_do_not(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, ...]] = []
    real = depthwise.tap_weight_grad

    def spy(grad: torch.Tensor, *args: object) -> torch.Tensor:
        calls.append(tuple(grad.shape))
        return real(grad, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(depthwise, "tap_weight_grad", spy)
    conv = DepthwiseConv2d(4, 5, 1)
    conv(torch.randn(2, 4, 4, 4)).sum().backward()
    conv(torch.randn(2, 4, 8, 8)).sum().backward()
    assert calls == [(2, 4, 4, 4)], "only the 4x4 output (16 positions) uses the per-tap weight gradient"


def test_tap_weight_grad_passes_gradcheck() -> None:
    torch.manual_seed(1)
    x = torch.randn(2, 3, 3, 3, dtype=torch.float64)
    grad = torch.randn(2, 3, 2, 2, dtype=torch.float64)
    ours = tap_weight_grad(grad, x, (3, 3), 2, (1, 1))
    weight = torch.zeros(3, 1, 3, 3, dtype=torch.float64, requires_grad=True)
    (F.conv2d(x, weight, None, 2, 1, 1, 3) * grad).sum().backward()
    torch.testing.assert_close(ours, weight.grad)
    conv = DepthwiseConv2d(3, 3, 1).double()
    assert torch.autograd.gradcheck(lambda inp: conv(inp), (torch.randn(1, 3, 2, 2, dtype=torch.float64,
                                                                         requires_grad=True),))
