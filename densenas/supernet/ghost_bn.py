"""Ghost batch norm for the supernet: training-mode BN statistics per group of N images, whatever the device count.

The paper searched on 4 GPUs under ``nn.DataParallel``: every forward was split into 4 replicas, so each
(non-affine, training-mode) BN normalised 352 / 4 = 88 images with their own mean and variance. One process with
the whole batch, or DDP ranks with another per-rank batch, would give the α/β gradients other statistics; grouping
the batch into chunks of N reproduces the paper's (``search.spaces.<space>.bn_group_size``).
"""

from __future__ import annotations

import torch
from torch import nn

from densenas.errors import DensenasError


class GhostBatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` whose training-mode statistics are taken per consecutive group of ``group_size`` images
    (eval mode and a batch of exactly ``group_size`` use the plain kernel). Running statistics take the mean of the
    groups' statistics; the search never reads them (Q5). Same parameters and buffers, so state dicts match."""

    def __init__(self, bn: nn.BatchNorm2d, group_size: int) -> None:
        super().__init__(bn.num_features, eps=bn.eps, momentum=bn.momentum, affine=bn.affine,
                         track_running_stats=bn.track_running_stats)
        self.group_size = group_size
        # Reuse the original tensors, so optimisers and DDP built on them stay valid.
        self.weight, self.bias = bn.weight, bn.bias
        self.running_mean, self.running_var = bn.running_mean, bn.running_var
        self.num_batches_tracked = bn.num_batches_tracked

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = x.shape[0]
        if not self.training or batch == self.group_size:
            return super().forward(x)
        if batch % self.group_size:
            raise DensenasError(f"ghost batch norm: a batch of {batch} images does not split into groups of "
                                f"{self.group_size} (bn_group_size must divide the per-process search batch)")
        size = self.group_size
        grouped = x.unflatten(0, (batch // size, size))                      # (G, N, C, H, W)
        var, mean = torch.var_mean(grouped, dim=(1, 3, 4), unbiased=False, keepdim=True)
        out = ((grouped - mean) * torch.rsqrt(var + self.eps)).flatten(0, 1)
        if self.affine:
            out = out * self.weight[:, None, None] + self.bias[:, None, None]
        if self.track_running_stats:
            self._update_running_stats(mean, var, size * x.shape[2] * x.shape[3])
        return out

    @torch.no_grad()
    def _update_running_stats(self, mean: torch.Tensor, var: torch.Tensor, count: int) -> None:
        self.num_batches_tracked += 1
        factor = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
        unbiased = var.mean(dim=0).flatten() * count / max(count - 1, 1)
        self.running_mean.lerp_(mean.mean(dim=0).flatten().to(self.running_mean.dtype), factor)
        self.running_var.lerp_(unbiased.to(self.running_var.dtype), factor)


def use_ghost_batch_norm(model: nn.Module, group_size: int) -> int:
    """Replace every ``nn.BatchNorm2d`` of ``model`` in place by a :class:`GhostBatchNorm2d`; return how many."""
    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.BatchNorm2d:
                setattr(parent, name, GhostBatchNorm2d(child, group_size))
                replaced += 1
    return replaced
