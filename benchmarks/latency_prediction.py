"""How well a per-op LUT (CPU or CUDA) predicts the end-to-end latency of derived MBV2 networks on this machine.

Samples random architectures of the MBV2 space (seeded random node path and ops) plus DenseNAS-A/B/C, measures a
LUT of every supernet op here (1000-class classifier, as the derived networks have), predicts each network as the
sum of its ops' entries (stem, head ops, kept stacked ops, final 1x1 branch, classifier; skip layers are absent
from a derived network and cost 0), measures the network end to end with the same ``measure_latency`` protocol and
threads (round-robin over the networks, several rounds), and reports MAPE, the share within ±10 % and Spearman's
ρ for two statistics (mean: the official one; min: the pass least disturbed by other jobs on a shared machine),
plain and with a constant per-network overhead fitted on half of the random architectures and evaluated on the
others and DenseNAS-A/B/C.

Run: python benchmarks/latency_prediction.py [--device cpu|cuda] [--input-size 224] [--batch 1] [--threads 1]
     [--archs 50] [--rounds 3]
Writes reports/table_latency.csv (per architecture) and reports/table_latency.json (summary, device, date).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from tqdm import tqdm

from densenas.arch import PathArch, sample_arch, to_net_config
from densenas.atomic import atomic_path, write_json
from densenas.chained_cost import architecture_cost
from densenas.complexity import count_mult_adds
from densenas.config import Params, load_params, parse_set_items
from densenas.cost_table import CostTable
from densenas.latency import LatencyStats, measure_latency
from densenas.lut import build_lut, load_cost_table, write_lut
from densenas.models import build_network
from densenas.registry import published_archs
from densenas.spaces import build_topology, load_space
from densenas.spaces.space import SearchSpace
from densenas.spaces.topology import Topology

REPO = Path(__file__).resolve().parents[1]
NUM_CLASSES = 1000   # the derived networks' classifier, so the LUT costs the same Linear
STATISTICS = ("mean", "min")   # mean: the official statistic; min: the pass least disturbed by other jobs


def published(space: SearchSpace, topology: Topology) -> dict[str, PathArch]:
    """DenseNAS-A/B/C as PathArchs (dropped stacked layers are skips after the kept ops)."""
    archs = {}
    for key in ("densenas_a", "densenas_b", "densenas_c"):
        model = published_archs()["models"][key]
        path, blocks = model["node_path"], model["net_config"]["blocks"][1:-1]
        archs[key] = PathArch(
            path=tuple(path),
            head_ops=tuple(b["head_op"] for b in blocks),
            stack_ops=tuple((*b["stack_ops"], *["skip_connect"] * (topology.stacked_layers[n] - len(b["stack_ops"])))
                            for n, b in zip(path[1:-1], blocks, strict=True)),
        )
    return archs


def without_skip_cost(table: CostTable, space: SearchSpace) -> CostTable:
    """A derived network has no skip layers at all, so they predict 0 ms (not the identity's measured time)."""
    column = space.stack_ops.index("skip_connect")
    stacks = tuple(rows.clone().index_fill_(1, torch.tensor([column]), 0.0) for rows in table.stacks)
    return CostTable(table.stem, table.heads, stacks, table.final, table.classifier, table.unit)


def predict(table: CostTable, space: SearchSpace, topology: Topology, arch: PathArch) -> float:
    return architecture_cost(topology, table, arch.path, [space.head_ops.index(op) for op in arch.head_ops],
                             [[space.stack_ops.index(op) for op in layers] for layers in arch.stack_ops])


def accuracy(predicted: pd.Series, measured: pd.Series) -> dict[str, float]:
    error = (predicted - measured) / measured
    return {
        "mape_pct": float(error.abs().mean() * 100),
        "within_10pct": float((error.abs() <= 0.10).mean()),
        "mean_error_pct": float(error.mean() * 100),
        "spearman_rho": float(predicted.rank().corr(measured.rank())),   # Spearman = Pearson of the ranks
        "n": len(measured),
    }


def predict_and_measure(params: Params, *, device: str, archs: int, input_size: int, batch: int, threads: int,
                        warmup: int, repeats: int, rounds: int, out: Path,
                        deadline: float | None = None) -> dict[str, Any]:
    """Measure the LUT on ``device``, predict and measure every network, write ``out`` (CSV) and its JSON summary
    beside it; return the summary. A round after the first starts only if it would end (as long as the last one
    took) before ``deadline`` (``time.monotonic()``); the summary says how many ran."""
    space = load_space("mbv2")
    topology = build_topology(space)
    start = time.perf_counter()
    lut = build_lut(space, metric="latency", input_size=input_size, batch=batch, dtype="float32",
                    num_classes=NUM_CLASSES, device=device, warmup=warmup, repeats=repeats, threads=threads)
    lut_path = out.with_name(out.stem + "_lut.json")
    write_lut(lut_path, lut)
    lut_seconds = time.perf_counter() - start
    tables = {statistic: without_skip_cost(load_cost_table(lut_path, space, topology, input_size=input_size,
                                                           batch=batch, statistic=statistic), space)
              for statistic in STATISTICS}

    rng = random.Random(params.seed)
    chosen = {**published(space, topology), **{f"random_{i:03d}": sample_arch(space, topology, rng)
                                               for i in range(archs)}}
    configs = {name: to_net_config(arch, space, topology, NUM_CLASSES) for name, arch in chosen.items()}
    shape = (batch, 3, input_size, input_size)
    torch.manual_seed(params.seed)
    torch.set_num_threads(threads)
    # Round-robin rounds, so that a burst of load from other jobs hits every network a little, not a few a lot.
    measured: dict[str, list[LatencyStats]] = {name: [] for name in chosen}
    round_seconds, previous_benchmark = 0.0, torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True  # on CUDA, as the LUT profiler and `densenas evaluate` time
    try:
        for index in tqdm(range(rounds), desc="rounds", unit="round", file=sys.stderr):
            if index and deadline is not None and time.monotonic() + round_seconds > deadline:
                break
            round_start = time.monotonic()
            for name in tqdm(chosen, desc="networks", unit="net", file=sys.stderr, leave=False):
                network = build_network(configs[name]).to(device)
                measured[name].append(measure_latency(network, shape, device=device, warmup=warmup,
                                                      repeats=repeats))
            round_seconds = time.monotonic() - round_start
    finally:
        torch.backends.cudnn.benchmark = previous_benchmark
    frame = pd.DataFrame([
        {"arch": name, "node_path": "-".join(map(str, arch.path)),
         "mult_adds_m": count_mult_adds(build_network(configs[name]), (1, *shape[1:])) / 1e6,
         **{f"predicted_{stat}_ms": predict(tables[stat], space, topology, arch) for stat in STATISTICS},
         "measured_mean_ms": statistics.fmean(s.mean_ms for s in measured[name]),
         "measured_min_ms": min(s.min_ms for s in measured[name])}
        for name, arch in chosen.items()
    ])

    # A constant per-network overhead (dispatch and glue the isolated ops do not see): fitted on every other random
    # architecture, evaluated on the other random ones and DenseNAS-A/B/C.
    frame["split"] = ["fit" if name.startswith("random") and int(name[-3:]) % 2 == 0 else "eval"
                      for name in frame["arch"]]
    fit, evaluation = frame[frame["split"] == "fit"], frame[frame["split"] == "eval"]
    summary: dict[str, Any] = {
        "device": lut["device"], "torch": torch.__version__, "threads": threads, "input_size": input_size,
        "batch": batch, "warmup": warmup, "repeats": repeats, "rounds": len(measured["densenas_a"]),
        "num_classes": NUM_CLASSES, "measured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "load_average": os.getloadavg(), "lut_entries": len(lut["entries"]), "lut_seconds": round(lut_seconds, 1),
        "total_seconds": round(time.perf_counter() - start, 1), "archs": len(frame),
    }
    for stat in STATISTICS:
        predicted, measured_ms = f"predicted_{stat}_ms", f"measured_{stat}_ms"
        offset = float((fit[measured_ms] - fit[predicted]).mean())
        frame[f"error_{stat}_pct"] = (frame[predicted] / frame[measured_ms] - 1) * 100
        frame[f"corrected_{stat}_ms"] = frame[predicted] + offset
        summary[stat] = {
            "plain_all": accuracy(frame[predicted], frame[measured_ms]),
            "plain_eval": accuracy(evaluation[predicted], evaluation[measured_ms]),
            "offset_ms": offset,
            "corrected_eval": accuracy(evaluation[predicted] + offset, evaluation[measured_ms]),
        }
    summary["published"] = frame[~frame["arch"].str.startswith("random")].set_index("arch")[
        [f"{kind}_{stat}_ms" for stat in STATISTICS for kind in ("predicted", "measured")]].to_dict("index")
    with atomic_path(out) as tmp:
        frame.round(4).to_csv(tmp, index=False)
    write_json(out.with_suffix(".json"), summary)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default=str(REPO / "params.yaml"))
    parser.add_argument("--preset", default=None, help="preset merged over params (e.g. paper)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one param")
    parser.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: params lut.device")
    parser.add_argument("--archs", type=int, default=50, help="random architectures (plus DenseNAS-A/B/C)")
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=None, help="default: params lut.batch")
    parser.add_argument("--threads", type=int, default=None, help="default: params lut.threads")
    parser.add_argument("--warmup", type=int, default=None, help="default: params lut.warmup")
    parser.add_argument("--repeats", type=int, default=None, help="default: params lut.repeats")
    parser.add_argument("--rounds", type=int, default=3, help="round-robin measurement rounds over the networks")
    parser.add_argument("--out", default=str(REPO / "reports" / "table_latency.csv"))
    args = parser.parse_args()
    params = load_params(args.params, preset=args.preset, overrides=parse_set_items(args.set))
    summary = predict_and_measure(
        params, device=args.device or params.lut.device, archs=args.archs, input_size=args.input_size,
        batch=args.batch or params.lut.batch,
        threads=args.threads or params.lut.threads,
        warmup=params.lut.warmup if args.warmup is None else args.warmup,
        repeats=args.repeats or params.lut.repeats, rounds=args.rounds, out=Path(args.out))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
