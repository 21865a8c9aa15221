"""Mult-adds and parameter counts in the paper's convention (SPEC.md §10.2).

Conv2d: k_h·k_w·C_in·C_out/groups·H_out·W_out (+ C_out·H_out·W_out with a bias); Linear: in·out. BN,
activations, pooling and additions are free. Used for the model zoo, the FLOPs LUT and the report tables.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Complexity:
    mult_adds: int
    params: int

    @property
    def mult_adds_m(self) -> float:
        return self.mult_adds / 1e6

    @property
    def params_m(self) -> float:
        return self.params / 1e6


def conv_mult_adds(conv: nn.Conv2d, out_h: int, out_w: int) -> int:
    k_h, k_w = conv.kernel_size
    per_position = k_h * k_w * conv.in_channels * conv.out_channels // conv.groups
    bias = conv.out_channels if conv.bias is not None else 0
    return (per_position + bias) * out_h * out_w


def count_params(module: nn.Module) -> int:
    """Parameter elements, excluding auxiliary heads (names containing 'aux'), as the official counter."""
    return sum(p.numel() for name, p in module.named_parameters() if "aux" not in name)


@torch.no_grad()
def count_mult_adds(module: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Mult-adds of one forward of ``module`` on a zero tensor of ``input_shape`` (batch included)."""
    total = 0

    def on_conv(mod: nn.Conv2d, _inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        total += output.shape[0] * conv_mult_adds(mod, output.shape[-2], output.shape[-1])

    def on_linear(mod: nn.Linear, inputs: tuple[torch.Tensor, ...], _output: torch.Tensor) -> None:
        nonlocal total
        rows = inputs[0].numel() // mod.in_features
        total += rows * mod.in_features * mod.out_features

    handles = []
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(on_conv))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(on_linear))
    was_training = module.training
    module.eval()
    try:
        device = next((p.device for p in module.parameters()), torch.device("cpu"))
        module(torch.zeros(input_shape, device=device))
    finally:
        module.train(was_training)
        for handle in handles:
            handle.remove()
    return total


def complexity(module: nn.Module, input_size: int = 224, batch: int = 1) -> Complexity:
    return Complexity(count_mult_adds(module, (batch, 3, input_size, input_size)), count_params(module))
