"""The 1×1 convolution as a matrix product, for training on the CPU.

An exact reformulation: a stride-1 1×1 conv of an NHWC (channels-last) tensor is ``x[N·H·W, C_in] @ w[C_out, C_in]ᵀ``
over the same memory, so outputs and gradients are those of ``nn.Conv2d`` (to float rounding) and the parameters,
state dict and mult-adds are unchanged. Why it exists: on the 1×1 to 4×4 maps of a 32-px network oneDNN's 1×1
conv costs 1.3-8x the plain GEMM (its backward most), and those layers carry most of the MBV2 supernet's 90 M
weights (docs/benchmarks.md, "Pointwise convolutions as GEMMs"). Used by the search and the retraining; latency
timing keeps ``nn.Conv2d``, so a network's measured latency is that of the standard PyTorch modules.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PointwiseConv2d(nn.Conv2d):
    """``nn.Conv2d(C_in, C_out, 1)`` that runs as ``F.linear`` on channels-last CPU inputs (else as the conv)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu" or not x.is_contiguous(memory_format=torch.channels_last):
            return super().forward(x)
        n, c, h, w = x.shape
        rows = x.permute(0, 2, 3, 1).reshape(n * h * w, c)  # a view: channels-last memory is row-major NHWC
        out = F.linear(rows, self.weight.reshape(self.out_channels, c), self.bias)
        return out.view(n, h, w, self.out_channels).permute(0, 3, 1, 2)


def _is_plain_pointwise(module: nn.Module) -> bool:
    return (type(module) is nn.Conv2d and module.kernel_size == (1, 1) and module.stride == (1, 1)
            and module.padding == (0, 0) and module.dilation == (1, 1) and module.groups == 1
            and module.padding_mode == "zeros")


def use_gemm_pointwise(model: nn.Module) -> int:
    """Turn every plain stride-1 1×1 ``nn.Conv2d`` of ``model`` into a :class:`PointwiseConv2d` in place (a class
    change only: the same module, parameters and state dict); returns how many were changed."""
    plain = [m for m in model.modules() if _is_plain_pointwise(m)]
    for module in plain:
        module.__class__ = PointwiseConv2d
    return len(plain)
