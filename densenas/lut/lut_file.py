"""LUT files: build the JSON document of one space's per-op costs, validate it, write it atomically, read it.

Layout and field meanings: ``densenas/resources/lut.schema.json``. The ``lut`` stage writes these files; the
search reads them back through :func:`densenas.lut.tables.load_cost_table`. Each file carries the sha256 of its
own content, so a LUT edited or damaged after it was measured is refused instead of steering a search.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import torch

from densenas.atomic import write_json
from densenas.errors import DensenasError
from densenas.input_files import load_json_file
from densenas.lut.profile import count_flops, device_info, profile_latency
from densenas.lut.sites import SupernetSites, supernet_sites
from densenas.spaces.space import SearchSpace
from densenas.spaces.topology import Topology, build_topology

SCHEMA_VERSION = 1
INTEGRITY = "content_sha256"
UNITS = {"latency": "ms", "flops": "M mult-adds"}


@cache
def lut_schema() -> dict[str, Any]:
    return json.loads(resources.files("densenas.resources").joinpath("lut.schema.json").read_text())


@dataclass(frozen=True)
class CalibrationSettings:
    """How many random networks the calibrated method measures end to end (see densenas.lut.calibrate)."""
    archs: int
    rounds: int
    seed: int


def build_lut(
    space: SearchSpace, *, metric: str, input_size: int, batch: int, dtype: str, num_classes: int, device: str,
    warmup: int, repeats: int, threads: int, progress: bool = True, calibration: CalibrationSettings | None = None,
) -> dict[str, Any]:
    """The LUT document of ``space``: every distinct op site measured once (latency) or counted (FLOPs, always
    batch 1 as in SPEC §5.1, whatever ``batch`` says). With ``calibration``, latency entries are corrected by a
    fit on that many random networks measured end to end (``method: calibrated``), else ``method: isolated``."""
    for key, value, minimum in (("batch", batch, 1), ("num_classes", num_classes, 1), ("warmup", warmup, 0),
                                ("repeats", repeats, 1), ("threads", threads, 1)):
        if value < minimum:
            raise DensenasError(f"LUT {key} must be >= {minimum}, got {value}")
    topology = build_topology(space)
    layout = supernet_sites(space, topology, input_size=input_size, num_classes=num_classes)
    sites = layout.distinct()
    header: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "space": space.name, "metric": metric,
                              "units": UNITS[metric], "input_size": input_size}
    if metric == "flops":
        costs = count_flops(sites, space)
        entries = {site.signature(1, dtype): _point_entry(value) for site, value in costs.items()}
        return {**header, "batch": 1, "dtype": dtype, "num_classes": num_classes,
                "device": {"type": "analytic", "name": "mult-add counter (densenas.complexity, SPEC §10.2)"},
                "torch": torch.__version__, "cuda": None, "threads": None, "warmup": None, "repeats": None,
                "measured_at": _today(), "source": "analytic", "entries": entries}
    if metric != "latency":
        raise DensenasError(f"metric '{metric}': expected one of {sorted(UNITS)}")
    stats = profile_latency(sites, space, batch=batch, device=device, dtype=dtype, warmup=warmup, repeats=repeats,
                            threads=threads, progress=progress)
    entries = {
        site.signature(batch, dtype): {"mean": s.mean_ms, "std": s.std_ms, "median": s.median_ms, "min": s.min_ms,
                                       "count": s.count}
        for site, s in stats.items()
    }
    doc = {**header, "batch": batch, "dtype": dtype, "num_classes": num_classes, "device": device_info(device),
           "torch": torch.__version__, "cuda": torch.version.cuda if device.startswith("cuda") else None,
           "threads": threads, "warmup": warmup, "repeats": repeats, "measured_at": _today(),
           "source": "measured", "method": "isolated", "entries": entries}
    if calibration is None:
        return doc
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _calibrated(doc, space, topology, layout, calibration, device=device)
    finally:
        torch.set_num_threads(previous)


def _calibrated(doc: dict[str, Any], space: SearchSpace, topology: Topology, layout: SupernetSites,
                settings: CalibrationSettings, *, device: str) -> dict[str, Any]:
    from densenas.lut import calibrate

    batch, dtype, entries = doc["batch"], doc["dtype"], doc["entries"]
    archs = calibrate.calibration_archs(space, topology, settings.archs, settings.seed)
    measured = calibrate.measure_networks(archs, space, topology, num_classes=doc["num_classes"],
                                          input_size=doc["input_size"], batch=batch, device=device, dtype=dtype,
                                          warmup=doc["warmup"], repeats=doc["repeats"], rounds=settings.rounds)
    terms = [calibrate.arch_terms(layout, entries, space, topology, arch, batch=batch, dtype=dtype)
             for arch in archs]
    fitted = calibrate.fit_calibration([t[0] for t in terms], [t[1] for t in terms], measured)
    errors = [abs(fitted.predict(*t) / m - 1) for t, m in zip(terms, measured, strict=True)]
    record = calibrate.calibration_record(fitted, archs=settings.archs, rounds=settings.rounds, seed=settings.seed,
                                          fit_mape_pct=100 * sum(errors) / len(errors))
    return {**doc, "method": "calibrated", "calibration": record, "isolated_entries": entries,
            "entries": calibrate.calibrated_entries(layout, entries, fitted, batch=batch, dtype=dtype)}


def validate_lut(doc: Any, source: str) -> None:
    """Raise a DensenasError naming ``source`` and the offending key unless ``doc`` follows the LUT schema."""
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(lut_schema()).iter_errors(doc))
    if error is not None:
        location = "/".join(str(p) for p in error.absolute_path) or "(top level)"
        raise DensenasError(f"{source}: not a valid LUT file: {location}: {error.message[:200]}")


def content_sha256(doc: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of every field but the checksum itself (JSON floats round-trip exactly)."""
    content = {key: value for key, value in doc.items() if key != INTEGRITY}
    return hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def with_content_sha256(doc: dict[str, Any]) -> dict[str, Any]:
    return {**doc, INTEGRITY: content_sha256(doc)}


def write_lut(path: str | os.PathLike[str], doc: dict[str, Any]) -> None:
    """Validate ``doc``, stamp its content checksum and write it atomically."""
    doc = with_content_sha256(doc)
    validate_lut(doc, str(path))
    write_json(path, doc)


def read_lut(path: str | os.PathLike[str]) -> dict[str, Any]:
    source = Path(path)
    doc = load_json_file(source, "LUT file")
    validate_lut(doc, str(source))
    if doc[INTEGRITY] != content_sha256(doc):
        raise DensenasError(f"{source}: content differs from its {INTEGRITY} (the file was edited or damaged "
                            "after `densenas lut` wrote it); measure or convert it again")
    return doc


def device_tag(*, device: str, batch: int, input_size: int, dtype: str) -> str:
    """File stem under ``results/luts/{space}/``, e.g. ``cpu-b1-r32-float32`` (the same rule as ``lut_tag`` in
    workflow/rules/common.smk): what changes the entries and is known from params before measuring; the machine
    itself is recorded inside the file."""
    return f"{device.replace(':', '')}-b{batch}-r{input_size}-{dtype}"


def _point_entry(value: float) -> dict[str, float | int]:
    return {"mean": value, "std": 0.0, "median": value, "min": value, "count": 1}


def _today() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
