"""Wall-clock latency of a module (SPEC.md §10.1): eval mode, no grad, warm-up passes dropped, CUDA synchronised.

One timing loop for the per-op LUT and for end-to-end measurements, so predicted and measured latencies are
taken the same way.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class LatencyStats:
    mean_ms: float
    std_ms: float
    median_ms: float
    count: int
    min_ms: float   # least disturbed pass: the steadiest statistic on a shared machine

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def spread_pct(means: list[float]) -> float:
    """(max − min) / mean of one network's round means, in %: how much the device moved under it."""
    return (max(means) - min(means)) / statistics.fmean(means) * 100 if len(means) > 1 else 0.0


@torch.no_grad()
def measure_latency(
    module: nn.Module, input_shape: tuple[int, ...], *, device: str = "cpu", warmup: int = 10, repeats: int = 50,
    dtype: torch.dtype = torch.float32, channels_last: bool = False,
) -> LatencyStats:
    """Time ``repeats`` forwards of ``module`` on a random input after ``warmup`` dropped ones."""
    was_training = module.training
    module.eval()
    x = torch.randn(input_shape, device=device, dtype=dtype)
    if channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)  # SPEC §12 B4
    timings = []
    try:
        for index in range(warmup + repeats):
            sync()
            start = time.perf_counter()
            module(x)
            sync()
            if index >= warmup:
                timings.append((time.perf_counter() - start) * 1e3)
    finally:
        module.train(was_training)
    return LatencyStats(
        mean_ms=statistics.fmean(timings),
        std_ms=statistics.stdev(timings) if len(timings) > 1 else 0.0,
        median_ms=statistics.median(timings),
        count=len(timings),
        min_ms=min(timings),
    )
