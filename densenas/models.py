"""Derived (stand-alone) networks built from a ``net_config`` (SPEC.md §7.4): ``MBV2Net`` and ``ResNetDerived``."""

from __future__ import annotations

import torch
from torch import nn

from densenas.net_config import BlockSpec, NetConfig
from densenas.ops import Bottleneck, batch_norm, build_op, he_fout_init, kaiming_fout_init
from densenas.spaces.space import BNSpec

MBV2_BN = BNSpec(momentum=0.1, eps=1e-3)
RESNET_BN = BNSpec(momentum=0.1, eps=1e-5)


def _block(spec: BlockSpec, bn: BNSpec) -> nn.Sequential:
    """Head op (C_in→C_out, stride) then the kept stacked ops (C_out→C_out); skip layers are absent."""
    layers = [build_op(spec.head_op, spec.in_ch, spec.out_ch, spec.stride, bn)]
    layers += [build_op(op, spec.out_ch, spec.out_ch, 1, bn) for op in spec.stack_ops]
    return nn.Sequential(*layers)


class MBV2Net(nn.Module):
    """Stem 3x3/2 + BN + ReLU6, the blocks, 1x1 conv to ``last_dim`` + BN + ReLU6, pool, Linear."""

    def __init__(self, config: NetConfig, num_classes: int | None = None) -> None:
        super().__init__()
        assert config.last_dim is not None, "validated by net_config_from_dict"
        bn = MBV2_BN
        stem_width = config.blocks[0].in_ch
        self.stem = nn.Sequential(
            nn.Conv2d(3, stem_width, 3, 2, 1, bias=False), batch_norm(stem_width, bn, True), nn.ReLU6(inplace=True)
        )
        self.blocks = nn.Sequential(*(_block(spec, bn) for spec in config.blocks))
        last_in = config.blocks[-1].out_ch
        self.tail = nn.Sequential(
            nn.Conv2d(last_in, config.last_dim, 1, bias=False),
            batch_norm(config.last_dim, bn, True),
            nn.ReLU6(inplace=True),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(config.last_dim, num_classes or config.num_classes)
        he_fout_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.tail(self.blocks(self.stem(x)))
        return self.classifier(torch.flatten(self.pool(x), 1))


class ResNetDerived(nn.Module):
    """Stem 3x3/2 + BN + ReLU6 (Q10), the blocks, pool, Linear; no final 1x1 node (SPEC §7.4)."""

    def __init__(self, config: NetConfig, num_classes: int | None = None) -> None:
        super().__init__()
        bn = RESNET_BN
        stem_width = config.blocks[0].in_ch
        self.stem = nn.Sequential(
            nn.Conv2d(3, stem_width, 3, 2, 1, bias=False), batch_norm(stem_width, bn, True), nn.ReLU6(inplace=True)
        )
        self.blocks = nn.Sequential(*(_block(spec, bn) for spec in config.blocks))
        widen = Bottleneck.expansion if config.blocks[-1].head_op == "bottle_neck" else 1
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(config.blocks[-1].out_ch * widen, num_classes or config.num_classes)
        kaiming_fout_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x))
        return self.classifier(torch.flatten(self.pool(x), 1))


def build_network(config: NetConfig, num_classes: int | None = None) -> nn.Module:
    """Build the stand-alone network of ``config`` (``num_classes`` overrides the config's class count)."""
    family = MBV2Net if config.net_type == "mbv2" else ResNetDerived
    return family(config, num_classes)
