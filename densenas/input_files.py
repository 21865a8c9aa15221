"""The one reader of the user's YAML and JSON inputs (params, presets, --set values, spaces, net_configs, LUTs,
manifests): every way such a file can be wrong becomes a one-line :class:`DensenasError` naming the file.

Beyond ``yaml.safe_load`` and ``json.loads`` it refuses duplicate keys (they would silently keep the last value),
non-finite numbers, non-string YAML keys, nesting deeper than :data:`MAX_NESTING`, alias bombs and files above the
size limit (they would hang or exhaust memory instead of failing), and bytes that are not UTF-8.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import yaml

from densenas.errors import DensenasError
from densenas.limits import MAX_NESTING, MAX_VALUES, max_input_bytes


def read_input_text(path: str | Path, what: str) -> str:
    """The text of the ``what`` file at ``path``: a regular file, within the size limit, UTF-8."""
    path = Path(path)
    if path.is_dir():
        raise DensenasError(f"{path}: is a folder, expected {_a(what)}")
    if not path.exists():
        raise DensenasError(f"{path}: {what} not found")
    if not path.is_file():
        raise DensenasError(f"{path}: not a regular file, expected {_a(what)}")
    size, limit = path.stat().st_size, max_input_bytes()
    if size > limit:
        raise DensenasError(f"{path}: {size / 2**20:.1f} MiB, above the {limit // 2**20} MiB limit for {_a(what)} "
                            "(raise it with DENSENAS_MAX_INPUT_MB)")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DensenasError(f"{path}: cannot read the {what} ({exc.strerror})") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DensenasError(f"{path}: not UTF-8 text (byte {data[exc.start]:#04x} at offset {exc.start}); "
                            f"expected {_a(what)}") from None


def load_yaml_file(path: str | Path, what: str) -> Any:
    return load_yaml_text(read_input_text(path, what), str(path))


def load_json_file(path: str | Path, what: str) -> Any:
    return load_json_text(read_input_text(path, what), str(path))


class _Refused(Exception):
    """A limit or rule of the strict loaders; carries the one-line reason."""


class _StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that also refuses duplicate and non-string keys, non-finite floats and deep nesting."""

    _depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > MAX_NESTING:
                raise _Refused(f"nested deeper than {MAX_NESTING} levels{_at(self.peek_event().start_mark)}")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            seen: set[Any] = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # `<<: *base` merges, and the keys written beside it override on purpose
                key = self.construct_object(key_node, deep=True)
                if not isinstance(key, str):
                    raise _Refused(f"key {key!r}{_at(key_node.start_mark)}: expected a string key, got "
                                   f"{type(key).__name__}")
                if key in seen:
                    raise _Refused(f"duplicate key '{key}'{_at(key_node.start_mark)}")
                seen.add(key)
        return super().construct_mapping(node, deep)

    def construct_finite_float(self, node: Any) -> float:
        value = self.construct_yaml_float(node)
        if not math.isfinite(value):
            raise _Refused(f"{node.value!r}{_at(node.start_mark)}: expected a finite number")
        return value


_StrictLoader.add_constructor("tag:yaml.org,2002:float", _StrictLoader.construct_finite_float)
# YAML 1.1 (PyYAML) reads exponents without a dot, `1e-05`, as strings; YAML 1.2 and JSON read them as numbers.
# json.dumps writes small floats that way, so without this `--set` values from `set_items` came back as text.
_StrictLoader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+$"),
                                    list("-+0123456789"))


def load_yaml_text(text: str, source: str) -> Any:
    """Parse one YAML document from ``text`` (``source`` names it in errors) with the strict loader."""
    loader = None
    try:
        loader = _StrictLoader(text)  # the reader already refuses control characters here
        node = loader.get_single_node()
        if node is None:
            return None
        _count_values(node)
        return loader.construct_document(node)
    except _Refused as exc:
        raise DensenasError(f"{source}: {exc}") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise DensenasError(f"{source}: not valid YAML{_at(mark)}: {_one_line(exc.problem or exc.context)}") from None
    except yaml.YAMLError as exc:
        raise DensenasError(f"{source}: not valid YAML ({_one_line(exc)})") from None
    except ValueError as exc:  # an integer with more digits than Python converts (int_max_str_digits)
        raise DensenasError(f"{source}: not valid YAML ({_one_line(exc)})") from None
    finally:
        if loader is not None:
            loader.dispose()


def _count_values(root: Any) -> None:
    """Refuse a node graph that aliases expand beyond :data:`MAX_VALUES` values or :data:`MAX_NESTING` levels, or
    that contains itself: each would make every later walk over the data (merging, validating, hashing) hang or
    overflow the stack."""
    shapes: dict[int, tuple[int, int]] = {}  # id(node) -> (values, depth) once expanded
    open_nodes: set[int] = set()

    def shape(node: Any) -> tuple[int, int]:
        key = id(node)
        if key in shapes:
            return shapes[key]
        if key in open_nodes:
            raise _Refused(f"an alias refers to the node that contains it{_at(node.start_mark)}")
        open_nodes.add(key)
        children = node.value if isinstance(node, yaml.SequenceNode) else (
            [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else [])
        inner = [shape(child) for child in children]
        open_nodes.discard(key)
        values, depth = 1 + sum(v for v, _ in inner), 1 + max((d for _, d in inner), default=0)
        if values > MAX_VALUES:
            raise _Refused(f"expands to more than {MAX_VALUES} values (aliases counted at every use)")
        if depth > MAX_NESTING + 1:
            raise _Refused(f"nested deeper than {MAX_NESTING} levels once aliases are expanded")
        shapes[key] = values, depth
        return shapes[key]

    shape(root)


def load_json_text(text: str, source: str, *, checks_numbers: bool = False) -> Any:
    """Parse JSON from ``text`` (``source`` names it in errors): no duplicate keys, no NaN/Infinity, no number that
    overflows to infinity, at most :data:`MAX_NESTING` levels. A caller that ``checks_numbers`` itself, naming
    where each bad one sits, gets NaN and infinities through to its check."""
    numbers: dict[str, Any] = {} if checks_numbers else {"parse_constant": _no_constant, "parse_float": _finite}
    try:
        doc = json.loads(text, object_pairs_hook=_unique_keys, **numbers)
    except _Refused as exc:
        raise DensenasError(f"{source}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise DensenasError(f"{source}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    except RecursionError:
        raise DensenasError(f"{source}: nested deeper than {MAX_NESTING} levels") from None
    except ValueError as exc:  # an integer with more digits than Python converts (int_max_str_digits)
        raise DensenasError(f"{source}: not valid JSON ({_one_line(exc)})") from None
    if _depth(doc) > MAX_NESTING:
        raise DensenasError(f"{source}: nested deeper than {MAX_NESTING} levels")
    return doc


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    for key, value in pairs:
        if key in doc:
            raise _Refused(f"duplicate key '{key}'")
        doc[key] = value
    return doc


def _no_constant(name: str) -> float:
    raise _Refused(f"{name}: expected a finite number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Refused(f"{text}: expected a finite number (it overflows a float)")
    return value


def _depth(doc: Any) -> int:
    """Nesting depth of parsed JSON, without recursion (the parser already bounds it by the interpreter's stack)."""
    deepest, stack = 0, [(doc, 1)]
    while stack:
        value, level = stack.pop()
        if isinstance(value, dict | list):
            deepest = max(deepest, level)
            if level <= MAX_NESTING:
                stack += [(v, level + 1) for v in (value.values() if isinstance(value, dict) else value)]
    return deepest


def _a(what: str) -> str:
    return f"{'an' if what[0] in 'aeiou' else 'a'} {what}"


def _at(mark: Any) -> str:
    return f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""


def _one_line(value: Any) -> str:
    return " ".join(str(value).split())
