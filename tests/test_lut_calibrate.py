"""The calibrated LUT (issue #12): the fit recovers a known overhead, the file records how it was made, and the
search's expected cost of a one-hot architecture is exactly the calibrated predictor of that architecture."""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

import pytest
import torch

from densenas.arch import PathArch, sample_arch
from densenas.chained_cost import chained_cost
from densenas.cli import main as cli
from densenas.lut import load_cost_table, read_lut
from densenas.lut.calibrate import SKIP, Calibration, arch_terms, fit_calibration
from densenas.lut.sites import supernet_sites
from densenas.spaces import build_topology, load_space

REPO = Path(__file__).resolve().parents[1]
TINY = ["--set", "lut.warmup=0", "--set", "lut.repeats=1", "--set", "lut.calibration_archs=3",
        "--set", "lut.calibration_rounds=1", "--set", "tracking.enabled=false"]


def test_the_fit_recovers_a_known_overhead() -> None:
    sums = [3.0, 5.5, 8.0, 11.0, 4.2]
    ops = [20, 31, 40, 52, 25]
    measured = [s + 0.05 * n + 1.5 for s, n in zip(sums, ops, strict=True)]
    fitted = fit_calibration(sums, ops, measured)
    assert fitted.per_op_ms == pytest.approx(0.05, rel=1e-9) and fitted.offset_ms == pytest.approx(1.5, rel=1e-9)


@pytest.fixture(scope="module")
def luts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("luts")
    paths = {}
    for method in ("calibrated", "isolated"):
        paths[method] = folder / f"{method}.json"
        code = cli(["--params", str(REPO / "params.yaml"), *TINY, "--set", f"lut.method={method}", "lut",
                    "--space", "mbv2", "--input-size", "32", "--out", str(paths[method])])
        assert code == 0
    return paths


def test_a_lut_records_how_it_was_made(luts: dict[str, Path]) -> None:
    calibrated, isolated = read_lut(luts["calibrated"]), read_lut(luts["isolated"])
    assert isolated["method"] == "isolated" and "calibration" not in isolated and "isolated_entries" not in isolated
    assert calibrated["method"] == "calibrated"
    record = calibrated["calibration"]
    assert record["archs"] == 3 and record["rounds"] == 1 and record["per_op_ms"] >= 0 and record["offset_ms"] >= 0
    assert set(calibrated["isolated_entries"]) == set(calibrated["entries"])
    skips = [key for key in calibrated["entries"] if key.startswith(f"{SKIP}|")]
    assert skips and all(calibrated["entries"][key]["mean"] == 0.0 for key in skips), "a dropped layer costs 0"


def _one_hot_expected_cost(table, topology, space, arch: PathArch) -> float:
    """The search's chained expected cost with α and β one-hot on ``arch`` (what the search's loss sees)."""
    heads = [torch.zeros(len(topology.in_edges[j]), len(space.head_ops), dtype=torch.float64)
             for j in range(1, topology.final_node)]
    stacks = [torch.zeros(topology.stacked_layers[j], len(space.stack_ops), dtype=torch.float64)
              for j in range(1, topology.final_node)]
    probs = [torch.full((len(topology.out_edges[i]),), 1.0 / len(topology.out_edges[i]), dtype=torch.float64)
             for i in range(topology.final_node)]
    path = list(arch.path)
    for (source, node), head_op, layer_ops in zip(itertools.pairwise(path[:-1]), arch.head_ops, arch.stack_ops,
                                                  strict=True):
        probs[source] = torch.zeros_like(probs[source])
        probs[source][topology.out_position(source, node)] = 1.0
        heads[node - 1][topology.in_position(source, node), space.head_ops.index(head_op)] = 1.0
        for layer, op in enumerate(layer_ops):
            stacks[node - 1][layer, space.stack_ops.index(op)] = 1.0
    probs[path[-2]] = torch.zeros_like(probs[path[-2]])
    probs[path[-2]][topology.out_position(path[-2], path[-1])] = 1.0
    return float(chained_cost(topology, table, heads, stacks, probs))


def test_the_search_optimises_exactly_the_calibrated_predictor(luts: dict[str, Path]) -> None:
    doc = json.loads(luts["calibrated"].read_text())
    space = load_space("mbv2")
    topology = build_topology(space)
    table = load_cost_table(luts["calibrated"], space, topology, input_size=32, batch=1)
    sites = supernet_sites(space, topology, input_size=32, num_classes=doc["num_classes"])
    fitted = Calibration(doc["calibration"]["per_op_ms"], doc["calibration"]["offset_ms"])
    rng = random.Random(5)
    for _ in range(5):
        arch = sample_arch(space, topology, rng)
        isolated_sum, ops = arch_terms(sites, doc["isolated_entries"], space, topology, arch, batch=1,
                                       dtype="float32")
        predicted = fitted.predict(isolated_sum, ops)
        assert _one_hot_expected_cost(table, topology, space, arch) == pytest.approx(predicted, rel=1e-9)
