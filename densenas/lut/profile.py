"""Cost of each supernet op on its own (SPEC.md §5.1): measured latency or analytic mult-adds.

Latency goes through :func:`densenas.latency.measure_latency`, the loop that also times whole networks, so LUT
predictions and end-to-end measurements follow one protocol (eval mode, no grad, warm-up dropped, CUDA synced).
"""

from __future__ import annotations

import platform
import sys
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from densenas.complexity import count_mult_adds
from densenas.errors import DensenasError
from densenas.latency import LatencyStats, measure_latency
from densenas.lut.sites import OpSite, build_site
from densenas.spaces.space import SearchSpace

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def torch_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise DensenasError(f"dtype '{name}': expected one of {sorted(DTYPES)}")
    return DTYPES[name]


def profile_latency(
    sites: list[OpSite], space: SearchSpace, *, batch: int, device: str, dtype: str, warmup: int, repeats: int,
    threads: int, progress: bool = True,
) -> dict[OpSite, LatencyStats]:
    """Time every site once, with ``threads`` intra-op threads (restored afterwards) and, on CUDA, cudnn autotuning
    on as in the official measurement; the caller's RNG state is left untouched."""
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise DensenasError(f"LUT device '{device}': CUDA is not available on this machine")
    previous_threads, previous_benchmark = torch.get_num_threads(), torch.backends.cudnn.benchmark
    torch.set_num_threads(threads)
    torch.backends.cudnn.benchmark = True
    stats: dict[OpSite, LatencyStats] = {}
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            bar = tqdm(sites, desc=f"lut {space.name} latency", unit="op", file=sys.stderr, disable=not progress)
            for site in bar:
                module = build_site(site, space).to(device=device, dtype=torch_dtype(dtype))
                stats[site] = measure_latency(module, site.input_shape(batch), device=device, warmup=warmup,
                                              repeats=repeats, dtype=torch_dtype(dtype))
    finally:
        torch.set_num_threads(previous_threads)
        torch.backends.cudnn.benchmark = previous_benchmark
    return stats


def count_flops(sites: list[OpSite], space: SearchSpace) -> dict[OpSite, float]:
    """Millions of mult-adds of every site for a batch-1 input (SPEC §10.2 conventions). Shapes are all the
    counter needs, so the ops run on the meta device: no weights, no arithmetic."""
    with torch.device("meta"):
        return {site: count_mult_adds(build_site(site, space), site.input_shape(1)) / 1e6 for site in sites}


def device_info(device: str) -> dict[str, Any]:
    """What the LUT was measured on: the CPU model from /proc/cpuinfo, or the CUDA device name."""
    if device.startswith("cuda"):
        index = torch.device(device).index or 0
        major, minor = torch.cuda.get_device_capability(index)
        return {"type": "cuda", "name": torch.cuda.get_device_name(index), "capability": f"{major}.{minor}"}
    return {"type": "cpu", "name": cpu_model(), "logical_cpus": torch.multiprocessing.cpu_count()}


def cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "Processor") and value.strip():
                return value.strip()
    return platform.processor() or platform.machine() or "unknown CPU"
