"""Candidate ops (SPEC §2.4): layer composition, residual rule, BN settings and the Q6 affine exceptions."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from densenas.errors import DensenasError
from densenas.ops import MBConv, build_op
from densenas.spaces.space import BNSpec

BN = BNSpec(momentum=0.1, eps=1e-3)


def _convs(module: nn.Module) -> list[nn.Conv2d]:
    return [m for m in module.modules() if isinstance(m, nn.Conv2d)]


@pytest.mark.parametrize(("kernel", "expansion"), [(3, 1), (3, 3), (5, 6), (7, 3)])
def test_mbconv_layers(kernel: int, expansion: int) -> None:
    op = build_op(f"mbconv_k{kernel}_t{expansion}", 24, 40, 2, BN)
    convs = _convs(op)
    assert len(convs) == (3 if expansion > 1 else 2)
    depthwise = convs[-2]
    assert depthwise.kernel_size == (kernel, kernel) and depthwise.stride == (2, 2)
    assert depthwise.groups == depthwise.in_channels == 24 * expansion, "hidden width is t·C_in"
    assert all(c.bias is None for c in convs)
    assert not isinstance(list(op.body)[-1], nn.ReLU6), "linear bottleneck: no activation after projection"
    assert op(torch.randn(1, 24, 16, 16)).shape == (1, 40, 8, 8)


def test_mbconv_residual_only_when_shapes_match() -> None:
    assert build_op("mbconv_k3_t1", 16, 16, 1, BN).residual
    assert not build_op("mbconv_k3_t6", 16, 24, 1, BN).residual
    assert not build_op("mbconv_k3_t6", 16, 16, 2, BN).residual


def test_bn_settings_and_affine_exceptions() -> None:
    fixed = build_op("mbconv_k3_t1", 16, 16, 1, BN, affine=False)
    bns = [m for m in fixed.modules() if isinstance(m, nn.BatchNorm2d)]
    assert [bn.affine for bn in bns] == [False, True], "Q6: the t=1 projection BN is always affine"
    assert all(bn.eps == 1e-3 and bn.momentum == 0.1 for bn in bns)
    honoured = MBConv(16, 16, 3, 1, 1, BN, affine=False, affine_exceptions=False)
    assert not any(m.affine for m in honoured.modules() if isinstance(m, nn.BatchNorm2d))
    bottleneck = build_op("bottle_neck", 64, 64, 1, BN, affine=False)
    inner = [m for m in bottleneck.body if isinstance(m, nn.BatchNorm2d)]
    assert all(bn.affine for bn in inner)


def test_basic_block_and_skip() -> None:
    block = build_op("basic_block", 32, 48, 2, BN)
    assert block(torch.randn(2, 32, 8, 8)).shape == (2, 48, 4, 4)
    x = torch.randn(1, 8, 4, 4)
    assert torch.equal(build_op("skip_connect", 8, 8, 1, BN)(x), x)
    with pytest.raises(DensenasError, match="skip_connect"):
        build_op("skip_connect", 8, 16, 1, BN)


def test_bottleneck_official_widths() -> None:
    stem_side = build_op("bottle_neck", 32, 64, 2, BN)
    assert stem_side(torch.randn(1, 32, 8, 8)).shape == (1, 256, 4, 4)
    later = build_op("bottle_neck", 64, 64, 1, BN)
    assert later(torch.randn(1, 256, 4, 4)).shape == (1, 256, 4, 4), "input is 4·C_in unless C_in is 32"


@pytest.mark.parametrize("name", ["mbconv_k9_t3", "conv3x3", "mbconv_k3_t2"])
def test_unknown_ops_are_refused(name: str) -> None:
    with pytest.raises(DensenasError, match=name):
        build_op(name, 8, 8, 1, BN)
