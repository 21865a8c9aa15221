"""Load params.yaml, merge a preset over it, validate against the schema and return typed objects.

The CLI is the only caller; stages receive the typed objects, never the YAML (STYLE.md: one config).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from densenas.errors import DensenasError
from densenas.input_files import load_yaml_file, load_yaml_text


@dataclass(frozen=True)
class DataParams:
    source: str
    raw_dir: str
    num_search_classes: int
    class_list: str | None
    search_train_fraction: float
    max_images_per_class: int | None
    max_search_images_per_class: int | None
    input_size: int
    eval_resize: int
    min_scale: float
    pack_short_side: int | None
    on_corrupt: str
    workers: int
    pin_memory: bool


@dataclass(frozen=True)
class LutParams:
    source: str      # measured (the LUT stage's table) or official (the shipped TITAN-XP table): what the search uses
    device: str
    batch: int
    warmup: int
    repeats: int
    threads: int
    dtype: str
    method: str      # calibrated (isolated timings fitted to whole networks measured here) or isolated
    calibration_archs: int
    calibration_rounds: int


@dataclass(frozen=True)
class VariantParams:
    objective: str
    lambda_: float
    tau: float
    paper_row: str | None = None   # the paper-table row this variant is compared with (e.g. DenseNAS-R1)


@dataclass(frozen=True)
class WeightOptimParams:
    lr: float
    min_lr: float
    momentum: float
    weight_decay: float
    update_unsampled: bool   # momentum and decay also move the ops a step did not sample (official behaviour)


@dataclass(frozen=True)
class ArchOptimParams:
    alpha_lr: float
    beta_lr: float
    betas: tuple[float, float]
    weight_decay: float


@dataclass(frozen=True)
class SpaceSearchParams:
    epochs: int
    warmup_epochs: int
    val_start_epoch: int
    batch_size: int
    bn_group_size: int | None   # images per training-mode BN statistic (ghost BN); None: the per-process batch
    width_mult: float           # fraction of every op's channels the supernet's weights have (1: the paper's)
    weight_sample_num: int
    arch_sample_num: int
    arch_policy: str            # prob: arch_sample_num ops drawn from softmax(α) (official); all: every op
    sample_policy: str
    warmup_policy: str
    skip_reg: bool
    weight: WeightOptimParams
    arch: ArchOptimParams
    variants: dict[str, VariantParams]


@dataclass(frozen=True)
class SearchParams:
    space: str
    retrain_epoch: str   # last or best_supernet_val: the epoch whose architecture is derived and retrained
    amp: bool
    channels_last: bool
    checkpoint_every_steps: int
    spaces: dict[str, SpaceSearchParams]


@dataclass(frozen=True)
class TrainParams:
    epochs: int
    batch_size: int
    lr: float
    reference_batch: int
    scale_lr: bool
    min_lr: float
    momentum: float
    weight_decay: float
    label_smoothing: float
    bn_momentum: float | None
    zero_init_residual: bool
    amp: bool
    channels_last: bool
    compile: bool
    val_start_epoch: int        # first (0-based) epoch validated; the last is always validated (Q11 over the rest)

    @property
    def effective_lr(self) -> float:
        """Peak lr after the optional linear scaling with the global batch."""
        return self.lr * self.batch_size / self.reference_batch if self.scale_lr else self.lr


@dataclass(frozen=True)
class EvaluateParams:
    latency_device: str
    latency_batch: int
    latency_warmup: int
    latency_repeats: int
    latency_rounds: int


@dataclass(frozen=True)
class QuirkParams:
    """Switches for the official code's behavioural quirks (SPEC §12 A). Every default is the official behaviour,
    so ``QuirkParams()`` reproduces the official code (what library callers get without params.yaml)."""

    normalise_incoming_paths: bool = False   # Q2
    final_node_softmax: bool = True          # Q3
    affine_flag_exceptions: bool = True      # Q6


@dataclass(frozen=True)
class ReportParams:
    mbv2_published: list[str]
    mbv2_baselines: list[str]
    resnet_baselines: list[str]
    random_search_variant: str
    random_search_tolerance: float
    decimals: int
    latency_table_archs: int


@dataclass(frozen=True)
class WorkflowParams:
    gpus_per_job: int
    nodes_per_job: int
    cpus_per_gpu: int
    mem_mb_per_gpu: int
    mem_mb: int
    runtime_min: dict[str, int]


@dataclass(frozen=True)
class TrackingParams:
    enabled: bool
    uri: str


@dataclass(frozen=True)
class Params:
    preset: str | None
    seed: int
    dataset: str
    data: DataParams
    lut: LutParams
    search: SearchParams
    train: TrainParams
    evaluate: EvaluateParams
    quirks: QuirkParams
    report: ReportParams
    workflow: WorkflowParams
    tracking: TrackingParams
    raw: dict[str, Any] = dataclasses.field(compare=False, repr=False)

    @property
    def digest(self) -> str:
        """Short hash of the resolved params, recorded beside outputs and in MLflow tags."""
        return params_digest(self.raw)


def params_digest(raw: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(raw, sort_keys=True).encode()).hexdigest()[:12]


@cache
def params_schema() -> dict[str, Any]:
    return yaml.safe_load(resources.files("densenas.resources").joinpath("params.schema.yaml").read_text())


def load_params(path: str | Path = "params.yaml", preset: str | None = None,
                overrides: dict[str, Any] | None = None) -> Params:
    """Read ``path``, merge the preset (argument, else the file's ``preset`` key) and ``overrides``; validate."""
    raw = _read_yaml(Path(path))
    if overrides:
        raw = deep_merge(raw, overrides)
    preset_name = preset if preset is not None else raw.get("preset")
    source = str(path)
    if preset_name:
        raw = deep_merge(raw, _read_preset(str(preset_name), Path(path)))
        raw["preset"] = str(preset_name)
        if overrides:
            raw = deep_merge(raw, overrides)
        source += f" with preset '{preset_name}'"  # a bad value may come from either file
    return params_from_dict(raw, source)


def params_from_dict(raw: dict[str, Any], source: str = "params") -> Params:
    validate_params(raw, source)
    return _build(Params, {**raw, "raw": raw})


def validate_params(raw: Any, source: str = "params") -> None:
    _check_finite(raw, source, ())
    validator = jsonschema.Draft202012Validator(params_schema())
    error = jsonschema.exceptions.best_match(validator.iter_errors(raw))
    if error is None:
        return
    key = ".".join(str(p) for p in error.absolute_path) or "(top level)"
    raise DensenasError(f"{source}: {key}: {_explain(error)}")


def _check_finite(value: Any, source: str, key: tuple[str, ...]) -> None:
    """NaN and ±inf pass every ``minimum`` of the schema (NaN compares false), so they are refused here by key."""
    if isinstance(value, float) and not math.isfinite(value):
        raise DensenasError(f"{source}: {'.'.join(key) or '(top level)'}: expected a finite number, got {value!r}")
    if isinstance(value, dict):
        for name, item in value.items():
            _check_finite(item, source, (*key, str(name)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_finite(item, source, (*key, str(index)))


def parse_set_items(items: Sequence[str]) -> dict[str, Any]:
    """``--set a.b=3`` pairs into a nested mapping (values parsed as YAML, by the same loader as params files)."""
    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        parts = key.split(".")
        if not sep or not all(parts):
            raise DensenasError(f"--set {item!r}: expected KEY.PATH=VALUE (dot-separated keys, none empty)")
        node = overrides
        for depth, part in enumerate(parts[:-1]):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise DensenasError(f"--set {item!r}: an earlier --set gave {'.'.join(parts[:depth + 1])} a value, "
                                    f"so it has no key '{parts[depth + 1]}'")
        node[parts[-1]] = load_yaml_text(value, f"--set {key}")
    return overrides


def set_items(overrides: dict[str, Any], prefix: str = "") -> list[str]:
    """The inverse of :func:`parse_set_items`: one ``KEY.PATH=VALUE`` per leaf, the value as JSON (valid YAML)."""
    items = []
    for key, value in overrides.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            items += set_items(value, f"{path}.")
        else:
            items.append(f"{path}={json.dumps(value)}")
    return items


def command_line_overrides(overwrite_config: Mapping[str, Any]) -> dict[str, Any]:
    """Snakemake's ``--config`` / ``--configfile`` values as params overrides (everything but ``preset``), so that
    they win over the preset as ``--set`` does. Snakemake reads nested ``--config`` values as plain strings
    (``--config 'workflow={gpus_per_job: 8}'`` gives ``"8"``); strings are read again as YAML here."""
    def typed(value: Any, key: str) -> Any:
        if isinstance(value, Mapping):
            return {str(k): typed(v, f"{key}.{k}") for k, v in value.items()}
        return load_yaml_text(value, f"--config {key}") if isinstance(value, str) else value
    return {str(k): typed(v, str(k)) for k, v in overwrite_config.items() if k != "preset"}


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Recursively merge ``update`` over a copy of ``base`` (mappings merge, everything else replaces)."""
    merged = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _read_yaml(path: Path) -> dict[str, Any]:
    raw = load_yaml_file(path, "params file")
    if not isinstance(raw, dict):
        raise DensenasError(f"{path}: expected a mapping of params, got {type(raw).__name__}")
    return raw


def _read_preset(name: str, params_path: Path) -> dict[str, Any]:
    shipped = resources.files("densenas.presets").joinpath(f"{name}.yaml")
    if shipped.is_file():
        raw = load_yaml_text(shipped.read_text(), f"preset '{name}'")
    else:
        candidate = Path(name) if Path(name).is_absolute() else params_path.parent / name
        if not candidate.is_file():
            names = sorted(p.name.removesuffix(".yaml") for p in resources.files("densenas.presets").iterdir()
                           if p.name.endswith(".yaml"))
            raise DensenasError(f"preset '{name}': not a shipped preset ({', '.join(names)}) nor a file")
        raw = _read_yaml(candidate)
    if not isinstance(raw, dict):
        raise DensenasError(f"preset '{name}': expected a mapping of params")
    if "preset" in raw:
        raise DensenasError(f"preset '{name}': key 'preset' is not allowed inside a preset")
    return raw


def _explain(error: jsonschema.ValidationError) -> str:
    validator, value = error.validator, error.instance
    schema = error.schema
    if validator == "additionalProperties":
        allowed = sorted(schema.get("properties", {}))
        extra = sorted(set(value) - set(allowed)) if isinstance(value, dict) else []
        return f"unknown key '{extra[0] if extra else '?'}' (expected one of: {', '.join(allowed)})"
    if validator == "required":
        return error.message.replace("is a required property", "is required but missing")
    if validator == "type":
        return f"expected {schema['type']}, got {type(value).__name__} {value!r}"
    if validator == "enum":
        return f"expected one of {schema['enum']}, got {value!r}"
    if validator in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        return f"expected a value with {validator} {schema[validator]}, got {value!r}"
    if validator in ("oneOf", "anyOf") and error.context:  # name each alternative, not "valid under none"
        return "; or ".join(dict.fromkeys(_explain(sub) for sub in error.context))
    return error.message


def _build(cls: Any, data: Any) -> Any:
    """Instantiate dataclass ``cls`` from validated ``data`` (``lambda`` maps to ``lambda_``)."""
    if dataclasses.is_dataclass(cls):
        hints = typing.get_type_hints(cls)
        kwargs = {}
        for f in dataclasses.fields(cls):
            key = "lambda" if f.name == "lambda_" else f.name
            if key not in data and f.default is not dataclasses.MISSING:
                continue
            kwargs[f.name] = data[key] if f.name == "raw" else _build(hints[f.name], data[key])
        return cls(**kwargs)
    origin = typing.get_origin(cls)
    if origin is dict:
        _, value_type = typing.get_args(cls)
        return {k: _build(value_type, v) for k, v in data.items()}
    if origin is tuple:
        return tuple(data)
    if origin in (typing.Union, types.UnionType):
        return data
    if cls is float and isinstance(data, int):
        return float(data)
    return data
