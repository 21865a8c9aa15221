"""Candidate operations of both search spaces (SPEC.md §2.4): MBConv, BasicBlock, Bottleneck, skip.

Supernets and derived networks build their layers through :func:`build_op`, so an op name means the same
module everywhere. BN affine flags follow the official quirk Q6 unless ``affine_exceptions`` is False.
"""

from __future__ import annotations

import torch
from torch import nn

from densenas.depthwise import DepthwiseConv2d
from densenas.errors import DensenasError
from densenas.op_names import parse_op
from densenas.spaces.space import BNSpec


def batch_norm(channels: int, bn: BNSpec, affine: bool) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=bn.eps, momentum=bn.momentum, affine=affine)


class MBConv(nn.Module):
    """Inverted residual with linear bottleneck; hidden width t·C_in; residual whenever shapes match (Q7)."""

    def __init__(
        self, c_in: int, c_out: int, kernel: int, stride: int, expansion: int, bn: BNSpec, affine: bool,
        affine_exceptions: bool = True,
    ) -> None:
        super().__init__()
        hidden = c_in * expansion
        layers: list[nn.Module] = []
        if expansion > 1:
            layers += [nn.Conv2d(c_in, hidden, 1, bias=False), batch_norm(hidden, bn, affine), nn.ReLU6(inplace=True)]
        layers += [
            DepthwiseConv2d(hidden, kernel, stride),
            batch_norm(hidden, bn, affine),
            nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, c_out, 1, bias=False),
            # Q6: the t = 1 path of the official op ignores the affine flag on its projection BN.
            batch_norm(c_out, bn, affine or (expansion == 1 and affine_exceptions)),
        ]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        return out + x if self.residual else out


class BasicBlock(nn.Module):
    """ResNet basic block (as torchvision's), with a 1x1 projection shortcut when the shape changes."""

    def __init__(self, c_in: int, c_out: int, stride: int, bn: BNSpec, affine: bool) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False),
            batch_norm(c_out, bn, affine),
            nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False),
            batch_norm(c_out, bn, affine),
        )
        self.shortcut = _projection(c_in, c_out, stride, bn, affine)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


class Bottleneck(nn.Module):
    """ResNet-B bottleneck, stride on the 3x3 conv; official quirks: input is 4·C_in unless C_in is 32 (the stem
    width), planes = C_out, output 4·C_out, and bn1–bn3 always affine (Q6)."""

    expansion = 4

    def __init__(self, c_in: int, c_out: int, stride: int, bn: BNSpec, affine: bool,
                 affine_exceptions: bool = True) -> None:
        super().__init__()
        real_in = c_in if c_in == 32 else c_in * self.expansion
        inner_affine = affine or affine_exceptions
        self.body = nn.Sequential(
            nn.Conv2d(real_in, c_out, 1, bias=False),
            batch_norm(c_out, bn, inner_affine),
            nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, stride, 1, bias=False),
            batch_norm(c_out, bn, inner_affine),
            nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out * self.expansion, 1, bias=False),
            batch_norm(c_out * self.expansion, bn, inner_affine),
        )
        self.shortcut = _projection(real_in, c_out * self.expansion, stride, bn, affine)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


def _projection(c_in: int, c_out: int, stride: int, bn: BNSpec, affine: bool) -> nn.Module:
    if stride == 1 and c_in == c_out:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), batch_norm(c_out, bn, affine))


def build_op(
    name: str, c_in: int, c_out: int, stride: int, bn: BNSpec, *, affine: bool = True,
    affine_exceptions: bool = True,
) -> nn.Module:
    """Build candidate op ``name`` mapping C_in→C_out at ``stride``."""
    spec = parse_op(name)
    if stride not in (1, 2):
        raise DensenasError(f"op '{name}': stride must be 1 or 2, got {stride}")
    if spec.family == "mbconv":
        return MBConv(c_in, c_out, spec.kernel, stride, spec.expansion, bn, affine, affine_exceptions)
    if spec.family == "basic_block":
        return BasicBlock(c_in, c_out, stride, bn, affine)
    if spec.family == "bottle_neck":
        return Bottleneck(c_in, c_out, stride, bn, affine, affine_exceptions)
    if stride != 1 or c_in != c_out:
        raise DensenasError(f"op 'skip_connect' keeps its shape: got {c_in}->{c_out}, stride {stride}")
    return nn.Identity()


def he_fout_init(module: nn.Module) -> None:
    """The official 'he_fout' init: conv weights ~ N(0, sqrt(2/n)), n = k_h·k_w·C_out/groups; BN γ=1, β=0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels / m.groups
            nn.init.normal_(m.weight, 0.0, (2.0 / n) ** 0.5)
        elif isinstance(m, nn.BatchNorm2d) and m.affine:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)


def kaiming_fout_init(module: nn.Module) -> None:
    """The ResNet-space init: Kaiming normal (fan_out, ReLU gain) convs; BN γ=1, β=0; Linear default."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d) and m.affine:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
