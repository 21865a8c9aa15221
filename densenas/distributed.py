"""torchrun/DDP plumbing shared by search and training: process group from the environment, rank-0 duties.

Gloo on CPU, NCCL on GPU. Without torchrun's environment everything runs as a single process (rank 0 of 1); under
torchrun the process joins a group even when it is alone, so one GPU runs the same DDP path as eight.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    launched: bool = False   # in a torchrun process group (even of world size 1)

    @property
    def is_main(self) -> bool:
        """Only the main process writes files, derives architectures and logs to MLflow."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1 or self.launched


def init_distributed(device: str = "auto") -> DistContext:
    """Join the process group torchrun describes (if any) and pick this process's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    launched = world_size > 1 or "TORCHELASTIC_RUN_ID" in os.environ   # torchrun sets it, even for one process
    use_cuda = torch.cuda.is_available() if device == "auto" else device.startswith("cuda")
    chosen = torch.device(f"cuda:{local_rank}") if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(chosen)
    if launched and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistContext(rank=rank, world_size=world_size, local_rank=local_rank, device=chosen, launched=launched)


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()


def broadcast_object(obj: object, ctx: DistContext) -> object:
    """Rank 0's ``obj`` on every rank (e.g. the sampled ops of a step)."""
    if not ctx.distributed:
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def per_rank_batch(global_batch: int, ctx: DistContext) -> int:
    if global_batch % ctx.world_size:
        from densenas.errors import DensenasError

        raise DensenasError(f"batch size {global_batch} is not divisible by the {ctx.world_size} processes")
    return global_batch // ctx.world_size


def shutdown(ctx: DistContext) -> None:
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()
