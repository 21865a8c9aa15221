"""The depthwise k×k convolution of MBConv, made fast on the tiny feature maps of a 32-px network.

Exact reformulations only: the outputs and gradients are those of ``nn.Conv2d(C, C, k, s, (k-1)/2, groups=C)``
(to float rounding), the parameter keeps its k×k shape, so checkpoints, counts and initialisation are unchanged.
Why it exists: on 1×1 to 4×4 maps oneDNN's padded depthwise kernels cost up to 100x what the arithmetic needs
(docs/benchmarks.md, "Search step"), and those maps are where the supernet's widest layers sit at 32 px.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

# Output maps with at most this many positions get the per-tap weight gradient on the CPU (measured crossover:
# oneDNN is faster from 8×8 on, the taps up to 20x faster at 2×2 to 4×4).
TAPS_MAX_POSITIONS = 16


class DepthwiseConv2d(nn.Conv2d):
    """A depthwise conv (padding (k-1)/2, no bias) that skips the kernel taps which can only meet padding.

    On a map smaller than the kernel the outer taps multiply zeros only; convolving with the centre
    (2·min(p, H-1)+1)² taps gives the same output, and zero gradient for the skipped taps, as the full kernel.
    """

    def __init__(self, channels: int, kernel: int, stride: int) -> None:
        super().__init__(channels, channels, kernel, stride, (kernel - 1) // 2, groups=channels, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad, k = self.padding[0], self.kernel_size[0]
        keep_h, keep_w = min(pad, x.shape[-2] - 1), min(pad, x.shape[-1] - 1)
        weight = self.weight[:, :, pad - keep_h:k - pad + keep_h, pad - keep_w:k - pad + keep_w]
        padding = (keep_h, keep_w)
        if x.device.type == "cpu" and _output_positions(x, weight, self.stride[0], padding) <= TAPS_MAX_POSITIONS:
            return _SmallMapDepthwise.apply(x, weight, self.stride[0], padding)
        return F.conv2d(x, weight, None, self.stride, padding, 1, self.groups)


def _output_positions(x: torch.Tensor, weight: torch.Tensor, stride: int, padding: tuple[int, int]) -> int:
    out_h = (x.shape[-2] + 2 * padding[0] - weight.shape[-2]) // stride + 1
    out_w = (x.shape[-1] + 2 * padding[1] - weight.shape[-1]) // stride + 1
    return out_h * out_w


def tap_weight_grad(grad: torch.Tensor, x: torch.Tensor, kernel: tuple[int, int], stride: int,
                    padding: tuple[int, int]) -> torch.Tensor:
    """∂L/∂w of a depthwise conv, one kernel tap at a time: Σ_{n,h,w} grad · (the input window of that tap)."""
    padded = F.pad(x, (padding[1], padding[1], padding[0], padding[0]))
    out_h, out_w = grad.shape[-2:]
    taps = [(padded[:, :, i:i + stride * (out_h - 1) + 1:stride, j:j + stride * (out_w - 1) + 1:stride] * grad)
            .sum(dim=(0, 2, 3)) for i in range(kernel[0]) for j in range(kernel[1])]
    return torch.stack(taps, dim=1).view(x.shape[1], 1, *kernel)


class _SmallMapDepthwise(torch.autograd.Function):
    """oneDNN for the output and the input gradient, :func:`tap_weight_grad` for the weight gradient."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, stride: int,
                padding: tuple[int, int]) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.stride, ctx.padding = stride, padding
        return F.conv2d(x, weight, None, stride, padding, 1, weight.shape[0])

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.ops.aten.convolution_backward(
                grad, x, weight, None, [ctx.stride] * 2, list(ctx.padding), [1, 1], False, [0, 0],
                weight.shape[0], [True, False, False])[0]
        if ctx.needs_input_grad[1]:
            grad_w = tap_weight_grad(grad, x, tuple(weight.shape[-2:]), ctx.stride, ctx.padding)
        return grad_x, grad_w, None, None
