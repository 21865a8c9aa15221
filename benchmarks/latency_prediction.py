"""How well the per-op LUT (CPU or CUDA) predicts the end-to-end latency of derived MBV2 networks on this machine.

Builds the LUT as the `lut` stage does (params `lut.method`: calibrated, the isolated-op timings corrected by a
fit on random networks measured here, or isolated), then samples random architectures of the MBV2 space (seeded;
none of them among the calibration's networks) plus DenseNAS-A/B/C, measures each end to end with the same
`measure_latency` loop and threads (round-robin over the networks, several rounds), and compares three
predictors: the calibrated table's chained cost (what the search optimises), the plain sum of the isolated
timings (skip layers 0), and mult-adds times one factor fitted on these very networks (the baseline). For each:
MAPE, the share within ±10 % and Spearman's ρ. On CPU it also times DenseNAS-A/B/C's ops inside the running
network (forward hooks), to split a pass into op time and the glue between ops.

A table is measured at one time and used at another, so the device's own speed drift is part of any prediction
error (the mult-adds factor, fitted on the measured networks themselves, has none): a reference network
(DenseNAS-C) is timed before and after the LUT build and at the start of every round, and each network's spread
between its rounds is kept (`round_spread_pct`), so a run says whether its device held still enough to judge a
±10 % target. Each round visits the networks in its own shuffled order, so a slow spell of the device spreads over
many networks instead of a contiguous few.

Run: python benchmarks/latency_prediction.py [--device cpu|cuda] [--input-size 224] [--batch 1] [--threads 1]
     [--archs 100] [--rounds 3]
Writes reports/table_latency.csv (per architecture), reports/table_latency.json (summary, device, date) and
reports/table_latency.png (predicted against measured, one panel per predictor).
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
from densenas.latency import LatencyStats, measure_latency, spread_pct
from densenas.lut import build_lut, load_cost_table, write_lut
from densenas.lut.calibrate import calibration_archs
from densenas.lut.lut_file import CalibrationSettings
from densenas.models import build_network
from densenas.registry import published_archs
from densenas.spaces import build_topology, load_space
from densenas.spaces.space import SearchSpace
from densenas.spaces.topology import Topology

REPO = Path(__file__).resolve().parents[1]
NUM_CLASSES = 1000   # the derived networks' classifier, so the LUT costs the same Linear
REFERENCE = "densenas_c"  # timed throughout the run: the device's speed drift


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
    """Build the LUT as the `lut` stage does (params ``lut.method``; a calibrated table fits its correction on its
    own random networks, disjoint from those evaluated here), predict and measure every network, write ``out``
    (CSV) and its JSON summary beside it; return the summary. A round after the first starts only if it would end
    (as long as the last one took) before ``deadline`` (``time.monotonic()``); the summary says how many ran."""
    space = load_space("mbv2")
    topology = build_topology(space)
    shape = (batch, 3, input_size, input_size)
    torch.set_num_threads(threads)
    start = time.perf_counter()
    reference = DeviceReference(build_network(to_net_config(published(space, topology)[REFERENCE], space, topology,
                                                            NUM_CLASSES)).to(device), shape, device=device,
                                warmup=warmup, repeats=repeats, start=start)
    reference.time("before the LUT", window="lut")
    calibration = (CalibrationSettings(params.lut.calibration_archs, params.lut.calibration_rounds, params.seed)
                   if params.lut.method == "calibrated" else None)
    lut = build_lut(space, metric="latency", input_size=input_size, batch=batch, dtype="float32",
                    num_classes=NUM_CLASSES, device=device, warmup=warmup, repeats=repeats, threads=threads,
                    calibration=calibration)
    lut_path = out.with_name(out.stem + "_lut.json")
    write_lut(lut_path, lut)
    lut_seconds = time.perf_counter() - start
    reference.time("after the LUT", window="lut")
    # The predictor the search optimises: the chained cost of the table as written (calibrated: skip layers 0).
    tables = {lut["method"]: load_cost_table(lut_path, space, topology, input_size=input_size, batch=batch)}
    if lut["method"] == "calibrated":  # the isolated timings the calibration started from, for comparison
        isolated = {**lut, "method": "isolated", "entries": lut["isolated_entries"]}
        del isolated["isolated_entries"], isolated["calibration"]
        isolated_path = out.with_name(out.stem + "_lut_isolated.json")
        write_lut(isolated_path, isolated)
        tables["isolated"] = load_cost_table(isolated_path, space, topology, input_size=input_size, batch=batch)
    tables["isolated"] = without_skip_cost(tables["isolated"], space)

    rng = random.Random(params.seed)
    held_out = {repr(a) for a in calibration_archs(space, topology, calibration.archs, calibration.seed)} \
        if calibration else set()
    randoms = (arch for arch in iter(lambda: sample_arch(space, topology, rng), None) if repr(arch) not in held_out)
    chosen = {**published(space, topology), **{f"random_{i:03d}": next(randoms) for i in range(archs)}}
    configs = {name: to_net_config(arch, space, topology, NUM_CLASSES) for name, arch in chosen.items()}
    torch.manual_seed(params.seed)
    # Round-robin rounds, each in its own order, so that a slow spell hits every network a little, not a few a lot.
    measured: dict[str, list[LatencyStats]] = {name: [] for name in chosen}
    order_rng = random.Random(f"latency-rounds:{params.seed}")
    round_seconds, previous_benchmark = 0.0, torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True  # on CUDA, as the LUT profiler and `densenas evaluate` time
    try:
        for index in tqdm(range(rounds), desc="rounds", unit="round", file=sys.stderr):
            if index and deadline is not None and time.monotonic() + round_seconds > deadline:
                break
            round_start = time.monotonic()
            reference.time(f"round {index + 1}", window="rounds")
            order = list(chosen)
            order_rng.shuffle(order)
            for name in tqdm(order, desc="networks", unit="net", file=sys.stderr, leave=False):
                network = build_network(configs[name]).to(device)
                measured[name].append(measure_latency(network, shape, device=device, warmup=warmup,
                                                      repeats=repeats))
            round_seconds = time.monotonic() - round_start
    finally:
        torch.backends.cudnn.benchmark = previous_benchmark
    frame = pd.DataFrame([
        {"arch": name, "node_path": "-".join(map(str, arch.path)),
         "mult_adds_m": count_mult_adds(build_network(configs[name]), (1, *shape[1:])) / 1e6,
         **{f"predicted_{method}_ms": predict(table, space, topology, arch) for method, table in tables.items()},
         "measured_ms": statistics.fmean(s.mean_ms for s in measured[name]),
         "round_spread_pct": spread_pct([s.mean_ms for s in measured[name]])}
        for name, arch in chosen.items()
    ])
    # The baseline: mult-adds times the one factor that fits these very networks best (relative least squares),
    # a generous baseline, since the LUT's calibration never sees them.
    relative = frame["mult_adds_m"] / frame["measured_ms"]  # min Σ (k·relative − 1)²
    ms_per_m = float(relative.sum() / (relative**2).sum())
    frame["predicted_mult_adds_ms"] = frame["mult_adds_m"] * ms_per_m
    predictors = [*tables, "mult_adds"]
    summary: dict[str, Any] = {
        "device": lut["device"], "torch": torch.__version__, "threads": threads, "input_size": input_size,
        "batch": batch, "warmup": warmup, "repeats": repeats, "rounds": len(measured["densenas_a"]),
        "num_classes": NUM_CLASSES, "measured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "load_average": os.getloadavg(), "lut_entries": len(lut["entries"]), "lut_seconds": round(lut_seconds, 1),
        "lut_method": lut["method"], "calibration": lut.get("calibration"),
        "total_seconds": round(time.perf_counter() - start, 1), "archs": len(frame),
        "mult_adds_ms_per_m": ms_per_m,
        **{name: accuracy(frame[f"predicted_{name}_ms"], frame["measured_ms"]) for name in predictors},
        "round_spread_pct_median": float(frame["round_spread_pct"].median()),
        "reference": reference.summary(),
    }
    for name in predictors:
        frame[f"error_{name}_pct"] = (frame[f"predicted_{name}_ms"] / frame["measured_ms"] - 1) * 100
    summary["published"] = frame[~frame["arch"].str.startswith("random")].set_index("arch")[
        [f"predicted_{name}_ms" for name in predictors] + ["measured_ms"]].to_dict("index")
    if device == "cpu":  # where the time goes: the same ops timed inside the network (hooks need no sync on CPU)
        for name, row in summary["published"].items():
            row["in_context_ops_ms"] = time_in_context(build_network(configs[name]), shape, warmup=warmup,
                                                       repeats=repeats)
    with atomic_path(out) as tmp:
        frame.round(4).to_csv(tmp, index=False)
    write_json(out.with_suffix(".json"), summary)
    plot_scatter(frame, predictors, out.with_suffix(".png"))
    return summary


class DeviceReference:
    """One fixed network timed now and then with the benchmark's own loop: the device's speed over the run."""

    def __init__(self, network: torch.nn.Module, shape: tuple[int, ...], *, device: str, warmup: int, repeats: int,
                 start: float) -> None:
        self.network, self.shape, self.device = network, shape, device
        self.warmup, self.repeats, self.start = warmup, repeats, start
        self.timings: list[dict[str, Any]] = []

    def time(self, label: str, *, window: str) -> None:
        """One timing, in ``window``: "lut" (around the LUT build) or "rounds" (the networks' measurement)."""
        stats = measure_latency(self.network, self.shape, device=self.device, warmup=self.warmup,
                                repeats=self.repeats)
        self.timings.append({"at": label, "window": window, "seconds": round(time.perf_counter() - self.start, 1),
                             "ms": stats.mean_ms})

    def summary(self) -> dict[str, Any]:
        """The timings, and the drift: mean over the rounds / mean around the LUT build."""
        lut = [t["ms"] for t in self.timings if t["window"] == "lut"]
        rounds = [t["ms"] for t in self.timings if t["window"] == "rounds"]
        ratio = statistics.fmean(rounds) / statistics.fmean(lut) if lut and rounds else 1.0
        return {"network": REFERENCE, "timings": self.timings, "drift_ratio": ratio,
                "drift_pct": (ratio - 1) * 100}


@torch.no_grad()
def time_in_context(network: torch.nn.Module, shape: tuple[int, ...], *, warmup: int, repeats: int) -> float:
    """Mean per-pass sum of the network's own op timings (stem, every head and stacked op, the 1x1 tail, pool and
    classifier) taken inside the running network with forward hooks (CPU): the ops as the LUT prices them, but
    with their real inputs; what is left of the whole pass is the glue between them."""
    ops = [network.stem, *(op for block in network.blocks for op in block), network.tail, network.pool,
           network.classifier]
    started: dict[int, float] = {}
    spent = [0.0]

    def before(module: torch.nn.Module, _: Any) -> None:
        started[id(module)] = time.perf_counter()

    def after(module: torch.nn.Module, _: Any, __: Any) -> None:
        spent[0] += time.perf_counter() - started[id(module)]

    handles = [h for op in ops for h in (op.register_forward_pre_hook(before), op.register_forward_hook(after))]
    network.eval()
    x = torch.randn(shape)
    try:
        for index in range(warmup + repeats):
            if index == warmup:
                spent[0] = 0.0
            network(x)
    finally:
        for handle in handles:
            handle.remove()
    return spent[0] * 1e3 / repeats


def plot_scatter(frame: pd.DataFrame, predictors: list[str], path: Path) -> None:
    """Predicted against measured latency, one panel per predictor, the diagonal and its ±10 % band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(predictors), figsize=(4.2 * len(predictors), 4), squeeze=False)
    top = float(max(frame["measured_ms"].max(), *(frame[f"predicted_{p}_ms"].max() for p in predictors))) * 1.05
    for ax, name in zip(axes[0], predictors, strict=True):
        ax.scatter(frame["measured_ms"], frame[f"predicted_{name}_ms"], s=10)
        ax.plot([0, top], [0, top], color="black", linewidth=0.8)
        ax.fill_between([0, top], [0, 0.9 * top], [0, 1.1 * top], color="grey", alpha=0.2, label="±10 %")
        ax.set(xlim=(0, top), ylim=(0, top), xlabel="measured (ms)", ylabel="predicted (ms)", title=name)
        ax.legend(loc="upper left")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default=str(REPO / "params.yaml"))
    parser.add_argument("--preset", default=None, help="preset merged over params (e.g. paper)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one param")
    parser.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: params lut.device")
    parser.add_argument("--archs", type=int, default=100, help="random architectures (plus DenseNAS-A/B/C)")
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
