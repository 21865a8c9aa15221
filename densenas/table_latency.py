"""The latency stage: the measured end-to-end latency of every model of a table, in one quiet job (SPEC §10.1).

Timed inside each evaluation, the rows of a table were measured minutes apart on a device whose speed drifts (the
2-core VMs here moved 5-15 % between minutes, docs/benchmarks.md), and every evaluation held all cores for the
few seconds of its timing. Here one job builds each table network (224 px, 1000 classes, as the paper reports
them; the trained weights do not change the time) and times them in round-robin rounds, each round in its own
shuffled order, so that a slow spell of the device touches every row a little; a row's figure is the mean of its
rounds' means. The protocol per round is `densenas evaluate`'s (:func:`densenas.evaluate.measured_latency`).
"""

from __future__ import annotations

import random
import statistics
import sys
from typing import Any

from tqdm import tqdm

from densenas.config import Params
from densenas.evaluate import PAPER_NUM_CLASSES, measured_latency
from densenas.latency import spread_pct
from densenas.registry import create_model
from densenas.report import ResultPaths


def table_latency(models: list[str], paths: ResultPaths, params: Params) -> dict[str, Any]:
    """The record of ``results/latency/{space}.json``: per model the mean, spread and round means (ms), and the
    protocol once."""
    rounds = params.evaluate.latency_rounds
    networks = {model: create_model(paths.model_source(model), num_classes=PAPER_NUM_CLASSES) for model in models}
    order_rng = random.Random(f"table-latency:{params.seed}")
    timings: dict[str, list[dict[str, Any]]] = {model: [] for model in models}
    for _ in tqdm(range(rounds), desc="latency rounds", unit="round", file=sys.stderr):
        order = list(models)
        order_rng.shuffle(order)
        for model in order:
            timings[model].append(measured_latency(networks[model], params.evaluate))
    per_model = {}
    for model, runs in timings.items():
        means = [run["mean_ms"] for run in runs]
        per_model[model] = {
            "mean_ms": statistics.fmean(means),
            "round_means_ms": means,
            "round_spread_pct": spread_pct(means),
            "median_ms": statistics.median(run["median_ms"] for run in runs),
            "std_ms": statistics.fmean(run["std_ms"] for run in runs),
        }
    return {"models": per_model, "protocol": {**timings[models[0]][0]["protocol"], "rounds": rounds,
                                              "order": "shuffled per round"},
            "params_digest": params.digest}
