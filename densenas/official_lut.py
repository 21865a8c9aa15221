"""Import the official DenseNAS latency tables (nested lists, ``luts/README.md``) as CostTables and LUT files.

The text is parsed as JSON, never evaluated (SPEC C4). Rows map onto the space by the space's own layer counts;
the MBV2 table's surplus stacked-layer rows for nodes 14–16 (SPEC Q14) are reported, never silently dropped.
"""

from __future__ import annotations

import logging
import math
import os
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from densenas.atomic import sha256_file
from densenas.cost_table import CostTable
from densenas.errors import DensenasError
from densenas.input_files import load_json_text, read_input_text
from densenas.lut.lut_file import SCHEMA_VERSION, UNITS
from densenas.lut.sites import OpSite, SupernetSites, supernet_sites
from densenas.spaces.space import SearchSpace, load_space
from densenas.spaces.topology import Topology, build_topology

logger = logging.getLogger(__name__)

OFFICIAL_TABLES = ("lat_list_densenas_mbv2_xp32", "lat_list_resv2_32", "lat_list_resv2_32_reg10")
# The table a space is searched against under `lut.source: official` (ResNet: skip_reg is applied by the search,
# which turns lat_list_resv2_32 into lat_list_resv2_32_reg10, SPEC §5.1).
OFFICIAL_SPACE_TABLES = {"mbv2": "lat_list_densenas_mbv2_xp32", "resnet": "lat_list_resv2_32"}
OFFICIAL_DEVICE = "NVIDIA TITAN Xp (official DenseNAS table)"
OFFICIAL_BATCH = 32
OFFICIAL_INPUT_SIZE = 224
OFFICIAL_NUM_CLASSES = 100      # the search head (SPEC Q12)
OFFICIAL_WARMUP = 100           # timings dropped per op by the official script (SPEC §5.1)


@dataclass(frozen=True)
class OfficialLutReport:
    """What the import used and what it left out. ``surplus_rows[j]``: stacked-layer rows of node j beyond the
    space's layer count, each a list of per-op values (never read by the official forward)."""

    path: str
    space: str
    values: int
    used_values: int
    surplus_rows: dict[int, list[list[float]]] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()

    @property
    def surplus_values(self) -> int:
        return sum(len(row) for rows in self.surplus_rows.values() for row in rows)

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "space": self.space, "values": self.values, "used_values": self.used_values,
                "surplus_values": self.surplus_values,
                "surplus_rows": {str(j): rows for j, rows in self.surplus_rows.items()},
                "warnings": list(self.warnings)}


def official_table_path(name_or_path: str | os.PathLike[str]) -> Path:
    """A shipped official table by file name (see ``OFFICIAL_TABLES``), or any path."""
    if str(name_or_path) in OFFICIAL_TABLES:
        return Path(str(resources.files("densenas.resources").joinpath("luts").joinpath(str(name_or_path))))
    return Path(name_or_path)


def import_official_lut(
    path: str | os.PathLike[str], space: SearchSpace | str,
) -> tuple[CostTable, OfficialLutReport]:
    """Read an official nested-list table for ``space``; heads, final branches and classifier must match the space
    exactly, stacked rows at least cover its layers (extra rows are reported as surplus)."""
    space = load_space(space) if isinstance(space, str) else space
    topology = build_topology(space)
    source = official_table_path(path)
    raw = _parse(source)
    label = str(source)
    if not isinstance(raw, list) or len(raw) != 4:
        raise DensenasError(f"{label}: expected [stem, blocks, final, classifier], got "
                            f"{'a list of ' + str(len(raw)) if isinstance(raw, list) else type(raw).__name__}")
    stem, blocks, final, classifier = raw
    blocks_expected = topology.final_node - 1
    if not isinstance(blocks, list) or len(blocks) != blocks_expected:
        raise DensenasError(f"{label}: [1] must list {blocks_expected} routing blocks for space '{space.name}', got "
                            f"{len(blocks) if isinstance(blocks, list) else type(blocks).__name__}")
    heads, stacks, surplus = [], [], {}
    for j, block in enumerate(blocks, start=1):
        where = f"{label}: [1][{j - 1}] (node {j})"
        if not isinstance(block, list) or len(block) != 2:
            raise DensenasError(f"{where}: expected [head_costs, stack_costs]")
        heads.append(_matrix(block[0], len(topology.in_edges[j]), len(space.head_ops), f"{where} heads"))
        layers = topology.stacked_layers[j]
        rows = _matrix(block[1], None, len(space.stack_ops), f"{where} stacked layers")
        if rows.shape[0] < layers:
            raise DensenasError(f"{where}: {rows.shape[0]} stacked-layer rows, the space has {layers} layers")
        stacks.append(rows[:layers])
        if rows.shape[0] > layers:
            surplus[j] = rows[layers:].tolist()
    table = CostTable(
        stem=_number(stem, f"{label}: [0] (stem)"),
        heads=tuple(heads),
        stacks=tuple(stacks),
        final=_matrix([final], 1, len(topology.in_edges[topology.final_node]), f"{label}: [2] (final node)")[0],
        classifier=_number(classifier, f"{label}: [3] (classifier)"),
        unit=UNITS["latency"],
    )
    table.check_layout(topology, len(space.head_ops), len(space.stack_ops), label)
    values = _count_numbers(raw)
    surplus_count = sum(len(row) for rows in surplus.values() for row in rows)
    warnings = ()
    if surplus:
        total = sum(v for rows in surplus.values() for row in rows for v in row)
        warnings = (f"{label}: {sum(len(r) for r in surplus.values())} surplus stacked-layer rows for node(s) "
                    f"{', '.join(map(str, surplus))} of space '{space.name}' (which has "
                    f"{', '.join(str(topology.stacked_layers[j]) for j in surplus)} layers there) are not used "
                    f"(SPEC Q14; {surplus_count} values, sum {total:.4f} {table.unit})",)
        for message in warnings:
            logger.warning(message)
    report = OfficialLutReport(label, space.name, values, values - surplus_count, surplus, warnings)
    return table, report


def official_cost_table(space: SearchSpace | str) -> tuple[CostTable, dict[str, Any]]:
    """The shipped official table of ``space`` with every stacked layer's own row (as the official chain reads it),
    and a record of which table it is (name, sha256, batch, input size, device)."""
    space = load_space(space) if isinstance(space, str) else space
    name = OFFICIAL_SPACE_TABLES[space.name]
    table, _ = import_official_lut(name, space)
    return table, {"lut": name, "lut_sha256": sha256_file(official_table_path(name)),
                   "input_size": OFFICIAL_INPUT_SIZE, "batch": OFFICIAL_BATCH, "device": OFFICIAL_DEVICE}


def official_lut_document(path: str | os.PathLike[str], space: SearchSpace | str) -> tuple[dict[str, Any],
                                                                                           OfficialLutReport]:
    """The official table in our LUT schema (batch 32, input 224, 100 classes, TITAN Xp). The stacked layers of one
    node share a signature, so their separately measured values merge into one entry (mean, median, std, and
    count = number of values merged)."""
    space = load_space(space) if isinstance(space, str) else space
    topology = build_topology(space)
    table, report = import_official_lut(path, space)
    sites = supernet_sites(space, topology, input_size=OFFICIAL_INPUT_SIZE, num_classes=OFFICIAL_NUM_CLASSES)
    values: dict[OpSite, list[float]] = defaultdict(list)
    for site, value in _site_values(table, sites, topology):
        values[site].append(value)
    entries = {
        site.signature(OFFICIAL_BATCH, "float32"): {
            "mean": statistics.fmean(vs), "std": statistics.stdev(vs) if len(vs) > 1 else 0.0,
            "median": statistics.median(vs), "count": len(vs),
        }
        for site, vs in values.items()
    }
    name = Path(report.path).name
    doc = {
        "schema_version": SCHEMA_VERSION, "space": space.name, "metric": "latency", "units": UNITS["latency"],
        "input_size": OFFICIAL_INPUT_SIZE, "batch": OFFICIAL_BATCH, "dtype": "float32",
        "num_classes": OFFICIAL_NUM_CLASSES, "device": {"type": "cuda", "name": OFFICIAL_DEVICE},
        "torch": None, "cuda": None, "threads": None, "warmup": OFFICIAL_WARMUP, "repeats": None,
        "measured_at": None,
        "source": f"official DenseNAS table {name} (JaminFong/DenseNAS e479206, Apache-2.0)",
        "entries": entries,
    }
    return doc, report


def _site_values(table: CostTable, sites: SupernetSites, topology: Topology) -> list[tuple[OpSite, float]]:
    pairs = [(sites.stem, table.stem), (sites.classifier, table.classifier)]
    for j in range(1, topology.final_node):
        for branch_sites, branch_costs in zip(sites.heads[j - 1], table.heads[j - 1].tolist(), strict=True):
            pairs += zip(branch_sites, branch_costs, strict=True)
        for layer_costs in table.stacks[j - 1].tolist():
            pairs += zip(sites.stacks[j - 1], layer_costs, strict=True)
    pairs += zip(sites.final, table.final.tolist(), strict=True)
    return pairs


def _parse(path: Path) -> Any:
    if not path.exists():
        raise DensenasError(f"{path}: official LUT file not found (shipped tables: {', '.join(OFFICIAL_TABLES)})")
    text = read_input_text(path, "official LUT file")
    try:
        return load_json_text(text, str(path), checks_numbers=True)  # _number names the row
    except DensenasError as exc:
        raise DensenasError(f"{exc}; not an official LUT (expected a JSON nested list)") from None


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise DensenasError(f"{where}: expected a non-negative number, got {value!r}")
    return float(value)


def _matrix(value: Any, rows: int | None, cols: int, where: str) -> torch.Tensor:
    """A rows×cols list of lists of numbers (``rows`` None: any number of rows) as a float64 tensor."""
    if not isinstance(value, list) or (rows is not None and len(value) != rows):
        raise DensenasError(f"{where}: expected {rows if rows is not None else 'a list of'} rows, got "
                            f"{len(value) if isinstance(value, list) else type(value).__name__}")
    for index, row in enumerate(value):
        if not isinstance(row, list) or len(row) != cols:
            raise DensenasError(f"{where}: row {index} must hold {cols} numbers, got "
                                f"{len(row) if isinstance(row, list) else type(row).__name__}")
    numbers = [[_number(v, f"{where}: row {i}") for v in row] for i, row in enumerate(value)]
    return torch.tensor(numbers, dtype=torch.float64).reshape(len(numbers), cols)


def _count_numbers(value: Any) -> int:
    return sum(_count_numbers(v) for v in value) if isinstance(value, list) else 1
