"""Zero-initialised residual branches for short retraining schedules (docs/deviations.md `zero-init-residual`).

Setting the γ of the last BN of every residual branch to 0 makes each block start as its shortcut, so a deep
network trains like a shallow one at first and tolerates a larger step size (Goyal et al. 2017; timm's
``zero_init_last``). The official recipe keeps γ = 1; the embedded recipe, 3 epochs on 20,000 images, needs the
faster start.
"""

from __future__ import annotations

from torch import nn
from torchvision.models import mnasnet, mobilenetv2, resnet

from densenas.ops import BasicBlock, Bottleneck, MBConv


def residual_branch_bn(block: nn.Module) -> nn.Module | None:
    """The BN that closes ``block``'s residual branch, or None if ``block`` is not a residual block."""
    if isinstance(block, MBConv):
        return block.body[-1] if block.residual else None
    if isinstance(block, BasicBlock | Bottleneck):
        return block.body[-1]
    if isinstance(block, mobilenetv2.InvertedResidual):
        return block.conv[-1] if block.use_res_connect else None
    if isinstance(block, mnasnet._InvertedResidual):
        return block.layers[-1] if block.apply_residual else None
    if isinstance(block, resnet.BasicBlock):
        return block.bn2
    if isinstance(block, resnet.Bottleneck):
        return block.bn3
    return None


def zero_init_residual_bn(net: nn.Module) -> int:
    """Zero the γ of every residual branch's closing BN (affine ones only); returns how many were zeroed."""
    zeroed = 0
    for block in net.modules():
        bn = residual_branch_bn(block)
        if isinstance(bn, nn.modules.batchnorm._BatchNorm) and bn.affine:
            nn.init.zeros_(bn.weight)
            zeroed += 1
    return zeroed
