"""Ghost batch norm (`bn_group_size`): per-group statistics inside one batch equal those of separate batches,
and a DDP search under gloo with per-rank batch N gives the α/β gradients of one process with groups of N."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from densenas.errors import DensenasError
from densenas.supernet.ghost_bn import GhostBatchNorm2d, use_ghost_batch_norm

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("affine", [False, True])
@pytest.mark.parametrize("channels_last", [False, True])
def test_groups_equal_separate_batches(affine: bool, channels_last: bool) -> None:
    torch.manual_seed(0)
    x = torch.randn(12, 5, 6, 6) * 3 + 1
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    plain = nn.BatchNorm2d(5, affine=affine)
    if affine:
        with torch.no_grad():
            plain.weight.uniform_(0.5, 2)
            plain.bias.uniform_(-1, 1)
    reference = nn.BatchNorm2d(5, affine=affine)
    reference.load_state_dict(plain.state_dict())
    ghost = GhostBatchNorm2d(plain, group_size=4)
    separate = torch.cat([reference(chunk) for chunk in x.split(4)])
    grouped = ghost(x)
    assert torch.allclose(grouped, separate, atol=1e-5), f"max diff {(grouped - separate).abs().max():.2e}"
    whole = nn.BatchNorm2d(5, affine=affine)
    whole.load_state_dict(plain.state_dict())
    assert not torch.allclose(whole(x), separate, atol=1e-3), "the test needs groups whose statistics differ"
    # running statistics: the mean of the groups' statistics after one step (momentum 0.1 from 0 / 1)
    means = torch.stack([c.mean(dim=(0, 2, 3)) for c in x.split(4)]).mean(0)
    assert torch.allclose(ghost.running_mean, 0.1 * means, atol=1e-6)


def test_eval_mode_and_one_group_use_the_plain_kernel() -> None:
    bn = nn.BatchNorm2d(3)
    ghost = GhostBatchNorm2d(bn, group_size=4)
    x = torch.randn(4, 3, 2, 2)
    assert torch.equal(ghost(x), nn.functional.batch_norm(x, None, None, training=True, eps=bn.eps))
    ghost.eval()
    assert ghost(torch.randn(6, 3, 2, 2)).shape == (6, 3, 2, 2), "eval mode uses the running statistics"


def test_a_batch_that_does_not_split_is_refused() -> None:
    with pytest.raises(DensenasError, match="a batch of 6 images does not split into groups of 4"):
        GhostBatchNorm2d(nn.BatchNorm2d(3), group_size=4)(torch.randn(6, 3, 2, 2))


def test_conversion_keeps_parameters_and_state_dict() -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.Sequential(nn.BatchNorm2d(4, affine=False)))
    weight = net[1].weight
    keys = list(net.state_dict())
    assert use_ghost_batch_norm(net, 2) == 2
    assert isinstance(net[1], GhostBatchNorm2d) and isinstance(net[2][0], GhostBatchNorm2d)
    assert net[1].weight is weight, "optimisers built before the conversion keep their parameters"
    assert list(net.state_dict()) == keys


@pytest.mark.e2e
def test_ddp_per_rank_batch_equals_ghost_groups_on_one_process() -> None:
    """2 gloo ranks x 4 images against one process with 8 images in groups of 4: the same BN statistics (every
    BN output of the sampled ops) and α/β gradients; one process without groups differs."""
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
         str(REPO / "tests" / "ghost_bn_worker.py"), "4"],
        cwd=REPO, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert "ghost BN matches DDP" in result.stdout, result.stdout[-2000:]
