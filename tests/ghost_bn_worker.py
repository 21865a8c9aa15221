"""Run under torchrun (2 gloo processes) by tests/test_ghost_bn.py: one architecture-step backward of the MBV2
supernet with N images per rank, against one process holding all 2N images with ghost BN groups of N."""

from __future__ import annotations

import sys

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from densenas.distributed import init_distributed, shutdown
from densenas.official_lut import official_cost_table
from densenas.search.arch_step import cost_term
from densenas.search.sync import average_gradients
from densenas.spaces import load_space
from densenas.supernet import Supernet
from densenas.supernet.ghost_bn import use_ghost_batch_norm

SPACE = load_space("mbv2")
TABLE, _ = official_cost_table(SPACE)


def backward(images: torch.Tensor, labels: torch.Tensor, group: int | None, ctx=None):
    """BN outputs (by module name, in call order) and the α/β gradients of one architecture-step loss."""
    torch.manual_seed(0)
    model = Supernet(SPACE, num_classes=10).double()  # float64: tiny deep maps amplify float32 rounding
    if group is not None:
        use_ghost_batch_norm(model, group)
    model.train()
    for param in model.weight_parameters():
        param.requires_grad_(False)
    outputs: dict[str, torch.Tensor] = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.BatchNorm2d):
            module.register_forward_hook(lambda m, i, o, name=name: outputs.__setitem__(name, o.detach()))
    sampled = model.sample_ops("prob", 2, torch.Generator().manual_seed(3))
    logits, cost = model(images, sampled, TABLE)
    (F.cross_entropy(logits, labels) + cost_term(cost, 1.0, 15.0)).backward()
    if ctx is not None:
        average_gradients(model.arch_parameters(), ctx)
    return outputs, [p.grad.clone() for p in model.arch_parameters() if p.numel()]


def main(per_rank: int) -> None:
    ctx = init_distributed("cpu")
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(2 * per_rank, 3, 32, 32, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, 10, (2 * per_rank,), generator=generator)
    mine = slice(ctx.rank * per_rank, (ctx.rank + 1) * per_rank)
    outputs, grads = backward(images[mine], labels[mine], None, ctx)
    gathered: list[dict[str, torch.Tensor] | None] = [None] * ctx.world_size
    dist.all_gather_object(gathered, outputs)
    if ctx.is_main:
        ghost_outputs, ghost_grads = backward(images, labels, per_rank)
        assert list(ghost_outputs) == list(outputs), "the same BNs ran"
        bn_worst = 0.0
        for name, value in ghost_outputs.items():
            ddp = torch.cat([rank[name] for rank in gathered])
            bn_worst = max(bn_worst, (value - ddp).abs().max().item())
            assert torch.allclose(value, ddp, atol=1e-5), f"{name}: BN outputs differ by {(value - ddp).abs().max()}"
        worst = max(((g - d).abs().max() / d.abs().max().clamp_min(1e-12)).item()
                    for g, d in zip(ghost_grads, grads, strict=True))
        assert worst < 1e-4, f"α/β gradients differ by {worst:.2e} (relative to each tensor's largest)"
        _, plain_grads = backward(images, labels, None)
        plain = max(((g - d).abs().max() / d.abs().max().clamp_min(1e-12)).item()
                    for g, d in zip(plain_grads, grads, strict=True))
        assert plain > 10 * worst, f"without groups the gradients differ by only {plain:.2e}: the test is blind"
        print(f"ghost BN matches DDP: {len(ghost_outputs)} BN outputs within {bn_worst:.1e}, α/β gradients within "
              f"{worst:.1e} "
              f"(without groups: {plain:.1e})")
    shutdown(ctx)


if __name__ == "__main__":
    main(int(sys.argv[1]))
