"""Preemption: a job told to stop (SIGTERM from slurm's preemption or `scancel`, SIGUSR1 as slurm's pre-timeout
signal, `sbatch --signal=USR1@300`) ends at the next step with its state saved and exit code 75, so that the
scheduler's retry (the slurm profile's `retries`) resumes it instead of a person relaunching it."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from types import FrameType
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch only where ranks agree: the CLI imports this module for every command, torch or not
    from densenas.distributed import DistContext

EXIT_PREEMPTED = 75  # EX_TEMPFAIL: "try again later", what a requeued job does
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class Preempted(Exception):
    """Raised where a stage has saved what it can; the CLI turns it into exit code 75."""


class StopRequest:
    """Remembers a stop signal until the loop asks; every rank asks at the same step and all of them stop if any
    was signalled (the signals reach ranks at slightly different moments, and a rank that stopped alone would
    leave the others waiting in a collective)."""

    def __init__(self) -> None:
        self.signal: int | None = None

    def handle(self, signum: int, frame: FrameType | None) -> None:
        del frame
        self.signal = signum

    def requested(self, ctx: DistContext) -> bool:
        if not ctx.distributed:
            return self.signal is not None
        import torch
        import torch.distributed as dist

        flag = torch.tensor([0 if self.signal is None else 1], device=ctx.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    def describe(self) -> str:
        return signal.Signals(self.signal).name if self.signal is not None else "another rank's stop signal"


@contextlib.contextmanager
def stop_on_signals() -> Iterator[StopRequest]:
    """Catch the stop signals for the block (the previous handlers come back after it)."""
    request = StopRequest()
    previous = {signum: signal.signal(signum, request.handle) for signum in STOP_SIGNALS}
    try:
        yield request
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
