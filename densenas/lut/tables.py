"""CostTables for the chained cost (SPEC.md §5.1): from a LUT file, from the FLOPs counter, with ``skip_reg``.

A LUT is keyed by op signature; here the supernet layout of the space asks for each slot's signature, so a file
measured for another space, input size or batch cannot be used by mistake.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch

from densenas.cost_table import CostTable
from densenas.errors import DensenasError
from densenas.lut.lut_file import UNITS, read_lut
from densenas.lut.profile import count_flops
from densenas.lut.sites import OpSite, SupernetSites, supernet_sites
from densenas.spaces.space import SearchSpace
from densenas.spaces.topology import Topology, build_topology

SKIP = "skip_connect"


def cost_table_from_sites(sites: SupernetSites, cost: Callable[[OpSite], float], unit: str) -> CostTable:
    """Fill the CostTable layout with ``cost(site)``; every stacked layer of node j gets node j's stack row."""
    return CostTable(
        stem=cost(sites.stem),
        heads=tuple(torch.tensor([[cost(s) for s in branch] for branch in node], dtype=torch.float64)
                    for node in sites.heads),
        stacks=tuple(  # a node without stacked layers gets a 0-row matrix and its ops are never looked up
            torch.tensor([[cost(s) for s in row] if layers else [0.0] * len(row)], dtype=torch.float64)
            .expand(layers, len(row)).clone()
            for row, layers in zip(sites.stacks, sites.stacked_layers, strict=True)
        ),
        final=torch.tensor([cost(s) for s in sites.final], dtype=torch.float64),
        classifier=cost(sites.classifier),
        unit=unit,
    )


def load_cost_table(
    path: str | os.PathLike[str], space: SearchSpace, topology: Topology, *, input_size: int, batch: int,
    metric: str | None = None, skip_reg: bool = False, statistic: str = "mean",
) -> CostTable:
    """The CostTable of ``space`` from the LUT file ``path`` (each entry's ``statistic``: mean, as the official
    tables, median or min); refuses a file for another space, input size, batch or metric, and one that lacks an
    op of the supernet or the statistic, naming the file and the mismatch."""
    if statistic not in ("mean", "median", "min"):
        raise DensenasError(f"LUT statistic '{statistic}': expected mean, median or min")
    doc = read_lut(path)
    wanted = {"space": space.name, "input_size": input_size, "batch": batch}
    if metric is not None:
        wanted["metric"] = metric
    for key, value in wanted.items():
        if doc[key] != value:
            raise DensenasError(f"{path}: LUT has {key} {doc[key]!r}, expected {value!r}")
    sites = supernet_sites(space, topology, input_size=input_size, num_classes=doc["num_classes"])
    entries = doc["entries"]
    missing = [s.signature(batch, doc["dtype"]) for s in sites.distinct()
               if statistic not in entries.get(s.signature(batch, doc["dtype"]), {})]
    if missing:
        raise DensenasError(f"{path}: LUT lacks the {statistic} of {len(missing)} op(s) of the {space.name} "
                            f"supernet, e.g. '{missing[0]}'")
    table = cost_table_from_sites(sites, lambda s: entries[s.signature(batch, doc["dtype"])][statistic],
                                  doc["units"])
    table.check_layout(topology, len(space.head_ops), len(space.stack_ops), str(path))
    return apply_skip_reg(table, space) if skip_reg else table


def flops_cost_table(
    space: SearchSpace, *, input_size: int = 224, num_classes: int = 100, skip_reg: bool = False,
) -> CostTable:
    """Mult-adds (M, batch 1) of every supernet op, computed on the fly as the official search does (SPEC §5.1)."""
    topology = build_topology(space)
    sites = supernet_sites(space, topology, input_size=input_size, num_classes=num_classes)
    flops = count_flops(sites.distinct(), space)
    table = cost_table_from_sites(sites, flops.__getitem__, UNITS["flops"])
    return apply_skip_reg(table, space) if skip_reg else table


def apply_skip_reg(table: CostTable, space: SearchSpace) -> CostTable:
    """Official ``skip_reg`` (SPEC Q13): a skip layer costs a tenth of the first op of the same layer."""
    if SKIP not in space.stack_ops:
        return table
    column = space.stack_ops.index(SKIP)
    stacks = []
    for rows in table.stacks:
        rows = rows.clone()
        rows[:, column] = rows[:, 0] / 10
        stacks.append(rows)
    return CostTable(table.stem, table.heads, tuple(stacks), table.final, table.classifier, table.unit)
