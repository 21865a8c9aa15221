"""The calibrated LUT (`lut.method: calibrated`): isolated-op timings corrected by a fit on whole networks.

Each op timed alone misses what a network adds: per-op dispatch and the glue between ops, activations that stream
from one op to the next instead of staying in cache, the fixed stem and classifier. A few random architectures of
the space are measured end to end on the same device with the same timing loop, and

    measured ≈ Σ isolated entries + per_op_ms · (ops in the network) + offset_ms

is fitted by non-negative least squares on relative errors. The isolated timings keep their weight (a fitted
scale on them, tried first, went to 0 at 32 px where every op costs about the same, which would have made the
latency objective count layers and ignore kernels and expansions). The correction is folded into the entries
(each op entry gets + per_op_ms, the stem's also + offset_ms; a skip layer, absent from a derived network,
costs 0), so the chained cost stays a sum of entries and the search's expected cost of a one-hot
architecture is exactly the predicted latency. The isolated entries stay in the file beside the calibrated ones.
"""

from __future__ import annotations

import random
import statistics
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from scipy.optimize import nnls
from tqdm import tqdm

from densenas.arch import PathArch, sample_arch, to_net_config
from densenas.chained_cost import architecture_cost
from densenas.cost_table import CostTable
from densenas.latency import measure_latency
from densenas.lut.profile import torch_dtype
from densenas.lut.sites import OpSite, SupernetSites
from densenas.lut.tables import cost_table_from_sites
from densenas.models import build_network
from densenas.spaces.space import SearchSpace
from densenas.spaces.topology import Topology

SKIP = "skip_connect"
STATISTICS = ("mean", "median", "min")


@dataclass(frozen=True)
class Calibration:
    per_op_ms: float
    offset_ms: float

    def predict(self, isolated_sum: float, ops: float) -> float:
        return isolated_sum + self.per_op_ms * ops + self.offset_ms


def calibration_archs(space: SearchSpace, topology: Topology, count: int, seed: int) -> list[PathArch]:
    """The fit's random networks: a stream of its own (not ``random.Random(seed)``, which the latency benchmark
    draws its held-out networks from)."""
    rng = random.Random(f"lut-calibration:{seed}")
    return [sample_arch(space, topology, rng) for _ in range(count)]


def arch_terms(sites: SupernetSites, entries: dict[str, dict[str, float]], space: SearchSpace, topology: Topology,
               arch: PathArch, *, batch: int, dtype: str) -> tuple[float, float]:
    """(Σ isolated mean entries, number of ops) of the derived network of ``arch`` (skip layers: none)."""
    def table(cost: Any) -> CostTable:
        return cost_table_from_sites(sites, lambda s: 0.0 if s.op == SKIP else cost(s), "ms")

    def total(t: CostTable) -> float:
        return architecture_cost(topology, t, arch.path, [space.head_ops.index(op) for op in arch.head_ops],
                                 [[space.stack_ops.index(op) for op in ops] for ops in arch.stack_ops])

    return (total(table(lambda s: entries[s.signature(batch, dtype)]["mean"])),
            total(table(lambda s: 1.0)))


def fit_calibration(sums: Sequence[float], ops: Sequence[float], measured: Sequence[float]) -> Calibration:
    """Non-negative least squares on relative errors (each network counts alike, small or large)."""
    target = np.asarray(measured, dtype=np.float64)
    design = np.column_stack([ops, np.ones(len(target))]) / target[:, None]
    (per_op, offset), _ = nnls(design, (target - np.asarray(sums, dtype=np.float64)) / target)
    return Calibration(float(per_op), float(offset))


def measure_networks(archs: Sequence[PathArch], space: SearchSpace, topology: Topology, *, num_classes: int,
                     input_size: int, batch: int, device: str, dtype: str, warmup: int, repeats: int,
                     rounds: int) -> list[float]:
    """Mean latency (ms) of each derived network, the mean of ``rounds`` round-robin rounds, so that a burst of
    load touches every network a little rather than a few a lot."""
    networks = [build_network(to_net_config(arch, space, topology, num_classes)).to(device=device,
                                                                                  dtype=torch_dtype(dtype))
                for arch in archs]
    means: list[list[float]] = [[] for _ in archs]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        for _ in tqdm(range(rounds), desc="lut calibration rounds", unit="round", file=sys.stderr):
            for index, network in enumerate(networks):
                stats = measure_latency(network, (batch, 3, input_size, input_size), device=device, warmup=warmup,
                                        repeats=repeats, dtype=torch_dtype(dtype))
                means[index].append(stats.mean_ms)
    return [statistics.fmean(values) for values in means]


def calibrated_entries(sites: SupernetSites, entries: dict[str, dict[str, Any]], calibration: Calibration, *,
                       batch: int, dtype: str) -> dict[str, dict[str, Any]]:
    """Every entry with the calibration folded in (see the module docstring)."""
    stem = sites.stem.signature(batch, dtype)

    def corrected(site: OpSite) -> dict[str, Any]:
        entry = entries[site.signature(batch, dtype)]
        if site.op == SKIP:
            return {**{key: 0.0 for key in (*STATISTICS, "std")}, "count": entry["count"]}
        shift = calibration.per_op_ms + (calibration.offset_ms if site.signature(batch, dtype) == stem else 0.0)
        return {**{key: entry[key] + shift for key in STATISTICS if key in entry}, "std": entry["std"],
                "count": entry["count"]}

    return {site.signature(batch, dtype): corrected(site) for site in sites.distinct()}


def calibration_record(calibration: Calibration, *, archs: int, rounds: int, seed: int,
                       fit_mape_pct: float) -> dict[str, Any]:
    return {**asdict(calibration), "archs": archs, "rounds": rounds, "seed": seed, "fit_mape_pct": fit_mape_pct}
