"""Load and validate a search-space definition (widths, resolutions, stages, layers, candidate ops).

The definition is immutable data; the topology is computed from it (``topology.py``), never stored in it,
so building a space twice gives the same result (the official code appends to its config lists in place).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from densenas.errors import DensenasError
from densenas.input_files import load_yaml_text, read_input_text
from densenas.op_names import is_known_op

_SPACE_FILES = {"mbv2": "mbv2.yaml", "resnet": "resnet.yaml"}
_FAMILIES = ("mbv2", "res")


@dataclass(frozen=True)
class BNSpec:
    """BatchNorm momentum and eps shared by every BN of a space or derived network."""

    momentum: float
    eps: float


@dataclass(frozen=True)
class SearchSpace:
    """One DenseNAS search space. Node ``i`` has ``widths[i]`` channels at ``resolutions[i]`` (224 input)."""

    name: str
    family: str
    stem_width: int
    head_width: int | None
    last_dim: int
    widths: tuple[int, ...]
    resolutions: tuple[int, ...]
    stages: tuple[int, ...]
    stacked_layers: tuple[int, ...]
    connections_per_stage: tuple[int, ...]
    head_ops: tuple[str, ...]
    stack_ops: tuple[str, ...]
    temperature: float
    bn: BNSpec

    @property
    def num_blocks(self) -> int:
        """Number of routing blocks N (nodes 1..N); node 0 is the stem side, N+1 the final node."""
        return len(self.widths) - 1

    @property
    def final_node(self) -> int:
        return len(self.widths)


def list_spaces() -> list[str]:
    return sorted(_SPACE_FILES)


def load_space(name_or_path: str | Path) -> SearchSpace:
    """Load a shipped space by name (``mbv2``, ``resnet``) or any space YAML file by path."""
    if str(name_or_path) in _SPACE_FILES:
        source = resources.files("densenas.spaces").joinpath(_SPACE_FILES[str(name_or_path)])
        label = f"space '{name_or_path}'"
        text = source.read_text()
    else:
        path = Path(name_or_path)
        if not path.exists():
            raise DensenasError(
                f"search space '{name_or_path}': not a shipped space ({', '.join(list_spaces())}) nor a file"
            )
        label, text = str(path), read_input_text(path, "search-space file")
    return _space_from_dict(load_yaml_text(text, label), label)


def _space_from_dict(raw: object, label: str) -> SearchSpace:
    if not isinstance(raw, dict):
        raise DensenasError(f"{label}: expected a mapping of space keys, got {type(raw).__name__}")
    expected = set(SearchSpace.__dataclass_fields__)
    unknown = sorted(set(raw) - expected)
    missing = sorted(expected - set(raw))
    if unknown:
        raise DensenasError(f"{label}: unknown key '{unknown[0]}' (expected one of {sorted(expected)})")
    if missing:
        raise DensenasError(f"{label}: missing key '{missing[0]}'")
    bn = raw["bn"]
    if not isinstance(bn, dict) or set(bn) != {"momentum", "eps"}:
        raise DensenasError(f"{label}: key 'bn' must be a mapping with 'momentum' and 'eps', got {bn!r}")
    space = SearchSpace(
        name=str(raw["name"]),
        family=str(raw["family"]),
        stem_width=_positive_int(raw["stem_width"], label, "stem_width"),
        head_width=None if raw["head_width"] is None else _positive_int(raw["head_width"], label, "head_width"),
        last_dim=_positive_int(raw["last_dim"], label, "last_dim"),
        widths=_int_tuple(raw["widths"], label, "widths", minimum=1),
        resolutions=_int_tuple(raw["resolutions"], label, "resolutions", minimum=1),
        stages=_int_tuple(raw["stages"], label, "stages", minimum=0),
        stacked_layers=_int_tuple(raw["stacked_layers"], label, "stacked_layers", minimum=0),
        connections_per_stage=_int_tuple(raw["connections_per_stage"], label, "connections_per_stage", minimum=1),
        head_ops=tuple(str(op) for op in raw["head_ops"]),
        stack_ops=tuple(str(op) for op in raw["stack_ops"]),
        temperature=float(raw["temperature"]),
        bn=BNSpec(momentum=float(bn["momentum"]), eps=float(bn["eps"])),
    )
    _check_consistency(space, label)
    return space


def _check_consistency(space: SearchSpace, label: str) -> None:
    n = len(space.widths)
    if space.family not in _FAMILIES:
        raise DensenasError(f"{label}: key 'family' must be one of {list(_FAMILIES)}, got '{space.family}'")
    for key, expected_len in (("resolutions", n), ("stacked_layers", n), ("stages", n + 1)):
        got = len(getattr(space, key))
        if got != expected_len:
            raise DensenasError(f"{label}: key '{key}' must have {expected_len} entries (widths has {n}), got {got}")
    for res in space.resolutions:  # each node halves the previous resolution zero or more times
        ratio = space.resolutions[0] / res
        if res > space.resolutions[0] or not ratio.is_integer() or int(ratio) & (int(ratio) - 1):
            raise DensenasError(f"{label}: key 'resolutions': {res} is not {space.resolutions[0]} (node 0) divided "
                                "by a power of two")
    if max(space.stages) >= len(space.connections_per_stage) + 1:
        raise DensenasError(f"{label}: key 'connections_per_stage' needs an entry for every stage but the last")
    if space.temperature <= 0:
        raise DensenasError(f"{label}: key 'temperature' must be > 0, got {space.temperature}")
    for key in ("head_ops", "stack_ops"):
        ops = getattr(space, key)
        if not ops:
            raise DensenasError(f"{label}: key '{key}' must list at least one op")
        for op in ops:
            if not is_known_op(op):
                raise DensenasError(f"{label}: key '{key}': unknown op '{op}'")
    if "skip_connect" in space.head_ops:
        raise DensenasError(f"{label}: key 'head_ops': skip_connect cannot change shape, so it is no head op")


def _positive_int(value: object, label: str, key: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise DensenasError(f"{label}: key '{key}' must be a positive integer, got {value!r}")
    return value


def _int_tuple(value: object, label: str, key: str, minimum: int) -> tuple[int, ...]:
    if not isinstance(value, list) or not value:
        raise DensenasError(f"{label}: key '{key}' must be a non-empty list of integers, got {value!r}")
    for item in value:
        if not isinstance(item, int) or isinstance(item, bool) or item < minimum:
            raise DensenasError(f"{label}: key '{key}' must hold integers >= {minimum}, got {item!r}")
    return tuple(value)
