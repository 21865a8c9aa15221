"""Does the search work on the embedded data? A λ sweep × seeds against random architectures at matched latency.

For each seed: one shared warm-up, then one latency search per λ (λ = 0 included) from it, each derived network
retrained with the params' recipe and evaluated (val top-1, mult-adds, measured latency, chained LUT latency).
Random Search baseline: random MBV2 architectures whose chained LUT latency lies within ``--tolerance`` of a
searched one's (the paper's rule, with the LUT latency as the matched cost), spread over the searched latencies,
retrained and evaluated the same way; DenseNAS-A/B/C are retrained on the same data for reference. Every stage is
the pipeline's own CLI, run two jobs at a time (one torch thread each); evaluations (latency timing) run alone.
A rerun skips the stages whose outputs exist, so a killed benchmark resumes; the warm-up and
search checkpoints (~13 GB in a full run) are deleted once every search is derived (``--keep-checkpoints``).

Writes ``reports/search_quality.csv`` (one row per network), ``reports/search_quality.json`` (Spearman ρ between
λ and the derived LUT latency per seed; searched minus matched random top-1, mean ± std; device, date) and
``reports/figures/search_quality.png`` (top-1 against LUT latency).

Run: python benchmarks/search_quality.py            # full: λ 0, 0.3, 1, 3, 10 × seeds 1-3, 6 random
     python benchmarks/search_quality.py --quick    # the smoke preset, 1 seed, 2 λ, 1 random (a test runs it)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import statistics
import subprocess
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from densenas.arch import PathArch, sample_arch, to_net_config
from densenas.atomic import atomic_path, write_json
from densenas.chained_cost import architecture_cost
from densenas.lut import load_cost_table, read_lut
from densenas.lut.profile import device_info
from densenas.spaces import build_topology, load_space

SPACE = "mbv2"
PUBLISHED = ("densenas_a", "densenas_b", "densenas_c")
TAU = 15.0


@dataclass(frozen=True)
class Net:
    """One network of the benchmark: how it was made and where its net_config (or registered name) lies."""

    kind: str                 # searched, random or published
    name: str
    model: str                # net_config path or registered model name
    seed: int | None = None
    lambda_: float | None = None


class Runner:
    """Runs the pipeline CLI with the benchmark's params (tracking off, one thread), skipping finished stages."""

    def __init__(self, work: Path, sets: Sequence[str], jobs: int) -> None:
        self.work, self.sets, self.jobs = work, list(sets), jobs
        self.logs = work / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)

    def cli(self, name: str, args: Sequence[str], output: Path, extra_sets: Sequence[str] = ()) -> None:
        if output.exists():
            return
        command = [sys.executable, "-m", "densenas.cli", "--set", "tracking.enabled=false", *self._sets(extra_sets),
                   *args]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        log = self.logs / f"{name}.log"
        with log.open("w") as handle:
            code = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, env=env, check=False).returncode
        if code != 0 or not output.exists():
            raise SystemExit(f"search_quality: stage {name} failed (exit {code}); see {log}")
        print(f"done: {name}", file=sys.stderr, flush=True)

    def parallel(self, calls: Sequence[tuple[str, Sequence[str], Path, Sequence[str]]]) -> None:
        with ThreadPoolExecutor(self.jobs) as pool:
            for future in [pool.submit(self.cli, *call) for call in calls]:
                future.result()

    def _sets(self, extra: Sequence[str]) -> list[str]:
        return [arg for value in [*self.sets, *extra] for arg in ("--set", value)]


def variant_set(lambda_: float) -> tuple[str, str]:
    """The variant name of λ and the --set that defines it (the only variant of the run). Variant names are
    lower-case identifiers (params schema), so λ 0.3 is ``lam0p3`` and 1e-05 ``lam1em05``."""
    name = "lam" + f"{lambda_:g}".replace(".", "p").replace("-", "m").replace("+", "")
    return name, (f"search.spaces.{SPACE}.variants={{{name}: {{objective: latency, lambda: {lambda_}, "
                  f"tau: {TAU}}}}}")


def warmup_dir(work: Path, seed: int) -> Path:
    return work / f"s{seed}" / "warmup"


def search_nets(runner: Runner, data: Path, lut: Path, seeds: Sequence[int], lambdas: Sequence[float]) -> list[Net]:
    """Warm-ups (one per seed) and every (seed, λ) search from its seed's warm-up. A seed's searches are queued as
    soon as its warm-up is done, behind the warm-ups not yet started, so no core waits for the last warm-up."""
    work = runner.work
    nets: list[Net] = []
    with ThreadPoolExecutor(runner.jobs) as pool:
        warmups = {seed: pool.submit(runner.cli, f"warmup-s{seed}", [
            "search", "--space", SPACE, "--warmup", "--data", str(data), "--out", str(warmup_dir(work, seed))],
            warmup_dir(work, seed) / "metrics.json", [f"seed={seed}"]) for seed in seeds}
        searches = []
        for seed in seeds:
            warmups[seed].result()
            for lambda_ in lambdas:
                name, definition = variant_set(lambda_)
                out = work / f"s{seed}" / name
                searches.append(pool.submit(runner.cli, f"search-s{seed}-{name}", [
                    "search", "--space", SPACE, "--variant", name, "--lut", str(lut), "--data", str(data),
                    "--warmup-from", str(warmup_dir(work, seed) / "checkpoint.pt"), "--out", str(out)],
                    out / "net_config.json", [f"seed={seed}", definition]))
                nets.append(Net("searched", f"s{seed}-{name}", str(out / "net_config.json"), seed, lambda_))
        for search in searches:
            search.result()
    return nets


def drop_search_checkpoints(work: Path, seeds: Sequence[int], searched: Sequence[Net]) -> None:
    """Delete the warm-up and search checkpoints (0.7 GB each at full width, ~13 GB in a full run) once every
    search is derived: the later stages read only net_config.json and metrics.json, and a rerun skips the searches."""
    paths = [warmup_dir(work, seed) / "checkpoint.pt" for seed in seeds]
    paths += [Path(net.model).parent / "checkpoint.pt" for net in searched]
    for path in paths:
        path.unlink(missing_ok=True)


RANDOM_POOL = 20_000  # random architectures drawn once; the Random Search rows are picked from them


def random_nets(work: Path, lut: Path, searched: Sequence[float], count: int,
                tolerance: float) -> tuple[list[Net], list[float], dict[str, Any]]:
    """The Random Search rule at matched chained LUT latency: ``count`` targets spread over the searched latencies
    that some of ``RANDOM_POOL`` random architectures (seeded) match within ``tolerance``, each matched by the first
    unused such architecture. Searched latencies that no random architecture reaches (a large λ finds networks
    cheaper than random sampling does) are reported, not matched. Returns the nets, their targets and the pool's
    record."""
    space = load_space(SPACE)
    topology = build_topology(space)
    doc = read_lut(lut)
    table = load_cost_table(lut, space, topology, input_size=doc["input_size"], batch=doc["batch"],
                            metric="latency")

    def lut_latency(arch: PathArch) -> float:
        return architecture_cost(topology, table, arch.path, [space.head_ops.index(op) for op in arch.head_ops],
                                 [[space.stack_ops.index(op) for op in ops] for ops in arch.stack_ops])

    rng = random.Random(0)
    pool = [(arch, lut_latency(arch)) for arch in (sample_arch(space, topology, rng) for _ in range(RANDOM_POOL))]

    def matches(target: float) -> list[int]:
        return [i for i, (_, value) in enumerate(pool) if abs(value - target) <= tolerance * target]

    reachable = [value for value in searched if matches(value)]
    targets = spread(reachable, count) if reachable else []
    nets, used = [], set()
    for index, target in enumerate(targets):
        choice = next(i for i in matches(target) if i not in used)
        used.add(choice)
        path = work / "random" / f"r{index}" / "net_config.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, to_net_config(pool[choice][0], space, topology).to_dict())
        nets.append(Net("random", f"r{index}", str(path)))
    latencies = [value for _, value in pool]
    record = {"size": RANDOM_POOL, "min_lut_latency_ms": min(latencies), "max_lut_latency_ms": max(latencies),
              "searched_unmatched_lut_latency_ms": sorted(v for v in searched if v not in reachable)}
    return nets, targets, record


def spread(values: Sequence[float], count: int) -> list[float]:
    """``count`` values picked evenly over the sorted ``values`` (the random targets)."""
    ordered = sorted(values)
    if count == 1:
        return [ordered[len(ordered) // 2]]
    return [ordered[round(i * (len(ordered) - 1) / (count - 1))] for i in range(count)]


def train_and_evaluate(runner: Runner, data: Path, lut: Path, nets: Sequence[Net]) -> dict[str, dict[str, Any]]:
    """Retrain every network (two at a time), then evaluate each alone (its latency is timed)."""
    work = runner.work
    runner.parallel([(f"train-{net.name}", ["train", "--model", net.model, "--name", net.name, "--data", str(data),
                                            "--out", str(work / "train" / net.name)],
                      work / "train" / net.name / "metrics.json", []) for net in nets])
    results = {}
    for net in nets:
        out = work / "eval" / f"{net.name}.json"
        runner.cli(f"eval-{net.name}", ["evaluate", "--model", net.model, "--name", net.name, "--data", str(data),
                                        "--checkpoint", str(work / "train" / net.name / "best.pt"), "--lut",
                                        str(lut), "--out", str(out)], out)
        results[net.name] = json.loads(out.read_text())
    return results


def table(nets: Sequence[Net], results: dict[str, dict[str, Any]]) -> pd.DataFrame:
    rows = []
    for net in nets:
        result = results[net.name]
        predicted = result.get("lut_latency") or {}
        rows.append({"kind": net.kind, "name": net.name, "seed": net.seed, "lambda": net.lambda_,
                     "lut_latency_ms": predicted.get("latency_ms"), "latency_ms": result["latency"]["mean_ms"],
                     "mult_adds_m_224": result["mult_adds_m_224"], "params_m_224": result["params_m_224"],
                     "top1": result["top1"], "top5": result["top5"]})
    return pd.DataFrame(rows)


def summarise(frame: pd.DataFrame, pairs: Sequence[tuple[str, str]], meta: dict[str, Any]) -> dict[str, Any]:
    """Spearman ρ(λ, LUT latency) per seed; searched − matched random top-1 over the matched pairs."""
    searched = frame[frame.kind == "searched"]
    rho = {}
    for seed, group in searched.groupby("seed"):
        value = group["lambda"].corr(group["lut_latency_ms"], method="spearman")
        rho[str(int(seed))] = None if pd.isna(value) else float(value)
    top1 = frame.set_index("name")["top1"]
    diffs = [float(top1[s] - top1[r]) for s, r in pairs]
    mean = statistics.fmean(diffs) if diffs else None
    std = statistics.stdev(diffs) if len(diffs) > 1 else None
    sem = None if std is None else std / len(diffs) ** 0.5
    return {**meta, "spearman_lambda_vs_lut_latency": rho,
            "all_seeds_rho_le_minus_0.8": all(v is not None and v <= -0.8 + 1e-9 for v in rho.values()),  # −0.8 = 4/5
            "searched_minus_random_top1": {"mean": mean, "std": std, "sem": sem, "pairs": [list(p) for p in pairs],
                                           "differences": diffs},
            "verdict": verdict(mean, sem, len(diffs))}


def verdict(mean: float | None, sem: float | None, pairs: int) -> str:
    """Searched against random in words: a difference counts only if it exceeds two standard errors of the mean
    (about a 95 % interval); one pair, or a spread as large as the mean, is called not distinguishable."""
    if mean is None:
        return "no matched pairs"
    figures = f"{mean:+.2f} top-1 points (standard error {sem:.2f}) over {pairs} pairs" if sem is not None else \
        f"{mean:+.2f} top-1 points over 1 pair (no spread to judge it by)"
    if sem is not None and mean > 2 * sem:
        return f"searched beats random at matched LUT latency: {figures}"
    if sem is not None and mean < -2 * sem:
        return f"searched is worse than random at matched LUT latency: {figures}"
    return f"searched and random are not distinguishable at matched LUT latency: {figures}"


def plot(frame: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import SymLogNorm

    figure, axes = plt.subplots(figsize=(6.4, 4.4))
    searched = frame[frame.kind == "searched"]
    # λ spans 0 to 10 with most of the sweep below 1: a linear colour scale would paint 0, 0.3 and 1 alike.
    points = axes.scatter(searched.lut_latency_ms, searched.top1, c=searched["lambda"], cmap="viridis",
                          norm=SymLogNorm(linthresh=0.3, vmin=0), label="searched", edgecolors="k")
    figure.colorbar(points, ax=axes, label="λ")
    randoms = frame[frame.kind == "random"]
    axes.scatter(randoms.lut_latency_ms, randoms.top1, marker="x", color="tab:red", label="random (matched)")
    published = frame[frame.kind == "published"]
    axes.scatter(published.lut_latency_ms, published.top1, marker="s", color="tab:gray", label="DenseNAS-A/B/C")
    for row in published.itertuples():
        axes.annotate(row.name.replace("densenas_", "").upper(), (row.lut_latency_ms, row.top1))
    axes.set_xlabel("chained LUT latency (ms)")
    axes.set_ylabel("val top-1 (%)")
    axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.15), ncols=3)  # below the axes: hides no point
    axes.set_title("DenseNAS search quality (embedded data)")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke preset, 1 seed, λ 0 and 1, 1 random, DenseNAS-A")
    parser.add_argument("--seeds", type=int, nargs="+", default=None)
    parser.add_argument("--lambdas", type=float, nargs="+", default=None)
    parser.add_argument("--random", type=int, default=None, help="random architectures (default 6; quick 1)")
    parser.add_argument("--tolerance", type=float, default=0.05, help="relative LUT-latency match of a random arch")
    parser.add_argument("--jobs", type=int, default=2, help="stages run at once (one torch thread each)")
    parser.add_argument("--work", type=Path, default=Path("results/search_quality"))
    parser.add_argument("--reports", type=Path, default=Path("reports"))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra params override")
    parser.add_argument("--keep-checkpoints", action="store_true",
                        help="keep the warm-up and search checkpoints (deleted once every search is derived)")
    args = parser.parse_args()
    quick = args.quick
    seeds = args.seeds or ([1] if quick else [1, 2, 3])
    lambdas = args.lambdas or ([0.0, 1.0] if quick else [0.0, 0.3, 1.0, 3.0, 10.0])
    random_count = args.random if args.random is not None else (1 if quick else 6)
    sets = (["preset=smoke"] if quick else []) + args.set
    runner = Runner(args.work, sets, args.jobs)
    data, lut = args.work / "data", args.work / "lut.json"
    runner.parallel([("prepare", ["prepare", "--out", str(data)], data / "manifest.json", []),
                     ("lut", ["lut", "--space", SPACE, "--out", str(lut)], lut, [])])
    started = dt.datetime.now()
    searched = search_nets(runner, data, lut, seeds, lambdas)
    if not args.keep_checkpoints:
        drop_search_checkpoints(args.work, seeds, searched)
    derived = {net.name: json.loads((Path(net.model).parent / "metrics.json").read_text())["derived"]
               for net in searched}
    latencies = [derived[net.name]["lut_latency_ms"] for net in searched]
    randoms, targets, pool = random_nets(args.work, lut, latencies, random_count, args.tolerance)
    matched = [min(searched, key=lambda n: abs(derived[n.name]["lut_latency_ms"] - t)) for t in targets]
    published = [Net("published", name, name) for name in (PUBLISHED[:1] if quick else PUBLISHED)]
    nets = [*searched, *randoms, *published]
    results = train_and_evaluate(runner, data, lut, nets)
    frame = table(nets, results)
    meta = {"date": dt.date.today().isoformat(), "device": device_info("cpu")["name"], "seeds": seeds,
            "lambdas": lambdas, "tau": TAU, "random": random_count, "tolerance": args.tolerance, "quick": quick,
            "params_overrides": sets, "load_average": os.getloadavg(), "random_pool": pool,
            "wall_minutes": (dt.datetime.now() - started).total_seconds() / 60}
    summary = summarise(frame, [(s.name, r.name) for s, r in zip(matched, randoms, strict=True)], meta)
    args.reports.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.reports / "search_quality.csv") as tmp:
        frame.to_csv(tmp, index=False)
    write_json(args.reports / "search_quality.json", summary)
    plot(frame, args.reports / "figures" / "search_quality.png")
    print(frame.to_string(index=False))
    print(json.dumps({k: summary[k] for k in ("spearman_lambda_vs_lut_latency", "verdict")}, indent=1))


if __name__ == "__main__":
    main()
