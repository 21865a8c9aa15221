"""The derived-architecture description (``net_config``): typed, JSON round-trip, official string format.

``derive`` writes it, the model zoo ships it, ``train``/``evaluate`` build networks from it. The official string
form (SPEC.md §7.3) is parsed as data (JSON after quote normalisation), never evaluated as code.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema

from densenas.errors import DensenasError
from densenas.input_files import load_json_text, read_input_text
from densenas.limits import max_model_params
from densenas.op_names import parse_op


@dataclass(frozen=True)
class BlockSpec:
    """One derived block: head op C_in→C_out at ``stride``, then ``stack_ops`` (C_out→C_out, stride 1)."""

    in_ch: int
    out_ch: int
    head_op: str
    stack_ops: tuple[str, ...]
    stride: int


@dataclass(frozen=True)
class NetConfig:
    """A stand-alone network. ``last_dim`` is the final 1x1 conv width (MBV2 only; None for ResNets)."""

    net_type: str
    blocks: tuple[BlockSpec, ...]
    last_dim: int | None = None
    num_classes: int = 1000
    node_path: tuple[int, ...] | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, Any]:
        blocks: list[dict[str, Any]] = [
            {"in_ch": b.in_ch, "out_ch": b.out_ch, "head_op": b.head_op, "stack_ops": list(b.stack_ops),
             "stride": b.stride}
            for b in self.blocks
        ]
        if self.last_dim is not None:
            blocks.append({"in_ch": self.blocks[-1].out_ch, "out_ch": self.last_dim, "op": "conv1_1"})
        out: dict[str, Any] = {"net_type": self.net_type, "num_classes": self.num_classes, "blocks": blocks}
        if self.last_dim is not None:
            out["last_dim"] = self.last_dim
        if self.node_path is not None:
            out["node_path"] = list(self.node_path)
        return out

    def to_official_string(self) -> str:
        """The official ``net_config`` text form: entries joined by '|', then a ``net_type`` line."""
        entries = [
            f"[[{b.in_ch}, {b.out_ch}], '{b.head_op}', [{', '.join(repr(op) for op in b.stack_ops)}], "
            f"{len(b.stack_ops)}, {b.stride}]"
            for b in self.blocks
        ]
        if self.last_dim is not None:
            entries.append(f"[[{self.blocks[-1].out_ch}, {self.last_dim}], 'conv1_1']")
        return "|\n".join(entries) + f"\nnet_type: {self.net_type}\n"


@cache
def net_config_schema() -> dict[str, Any]:
    return json.loads(resources.files("densenas.resources").joinpath("net_config.schema.json").read_text())


def net_config_from_dict(raw: Any, source: str = "net_config") -> NetConfig:
    """Validate ``raw`` against the schema and the block-chaining rules; return the typed config."""
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(net_config_schema()).iter_errors(raw))
    if error is not None:
        location = "/".join(str(p) for p in error.absolute_path) or "(top level)"
        raise DensenasError(f"{source}: {location}: {_short(error.message)}")
    entries = list(raw["blocks"])
    last_dim = raw.get("last_dim")
    if "op" in entries[-1]:
        final = entries.pop()
        if last_dim is not None and last_dim != final["out_ch"]:
            raise DensenasError(f"{source}: last_dim {last_dim} disagrees with the conv1_1 entry ({final['out_ch']})")
        last_dim = final["out_ch"]
        if entries and final["in_ch"] != entries[-1]["out_ch"]:
            raise DensenasError(
                f"{source}: conv1_1 entry takes {final['in_ch']} channels but the last block gives "
                f"{entries[-1]['out_ch']}"
            )
    if any("op" in e for e in entries):
        raise DensenasError(f"{source}: the conv1_1 entry must be the last block")
    if not entries:
        raise DensenasError(f"{source}: blocks: expected at least one block besides conv1_1")
    if raw["net_type"] == "mbv2" and last_dim is None:
        raise DensenasError(f"{source}: an mbv2 net_config needs a final conv1_1 entry or last_dim (SPEC §12 B2)")
    blocks = tuple(
        BlockSpec(e["in_ch"], e["out_ch"], e["head_op"], tuple(e["stack_ops"]), e["stride"]) for e in entries
    )
    for index, block in enumerate(blocks):
        for op in (block.head_op, *block.stack_ops):
            try:
                parse_op(op)
            except DensenasError as exc:
                raise DensenasError(f"{source}: blocks/{index}: {exc}") from None
        if "skip_connect" in block.stack_ops:
            raise DensenasError(f"{source}: blocks/{index}: derived blocks drop skip_connect layers")
        if index and block.in_ch != blocks[index - 1].out_ch:
            raise DensenasError(
                f"{source}: blocks/{index}: in_ch {block.in_ch} does not match the previous block's "
                f"out_ch {blocks[index - 1].out_ch}"
            )
    node_path = raw.get("node_path")
    config = NetConfig(
        net_type=raw["net_type"],
        blocks=blocks,
        last_dim=last_dim,
        num_classes=raw.get("num_classes", 1000),
        node_path=tuple(node_path) if node_path is not None else None,
    )
    weights, limit = estimated_weights(config), max_model_params()
    if weights > limit:
        raise DensenasError(f"{source}: about {weights / 1e6:,.0f} M weights, above the limit of {limit / 1e6:,.0f} M "
                            "(raise it with DENSENAS_MAX_MODEL_PARAMS_M); its widths or block count are implausible")
    return config


def estimated_weights(config: NetConfig) -> int:
    """The network's weights estimated from its widths alone (within a few per cent for the zoo: BN and the stem
    are left out), so that an absurd net_config is refused before torch tries to allocate it. MBConv: expand,
    depthwise, project; residual blocks: 9·(C_in+C_out)·C_out, about two 3x3 convs."""
    total = 0
    for block in config.blocks:
        layers = [(block.in_ch, block.head_op), *((block.out_ch, op) for op in block.stack_ops)]
        for c_in, op in layers:
            spec = parse_op(op)
            hidden = c_in * spec.expansion
            total += (c_in * hidden + hidden * spec.kernel**2 + hidden * block.out_ch if spec.family == "mbconv"
                      else 9 * (c_in + block.out_ch) * block.out_ch)
    features = config.last_dim or config.blocks[-1].out_ch
    if config.last_dim is not None:
        total += config.blocks[-1].out_ch * config.last_dim
    return total + features * config.num_classes


def load_net_config(path: str | Path) -> NetConfig:
    """Read a net_config file: JSON (``.json``) or the official text form."""
    path = Path(path)
    text = read_input_text(path, "net_config file")
    if path.suffix == ".json":
        return net_config_from_dict(load_json_text(text, str(path)), str(path))
    return parse_official_string(text, str(path))


_ENTRY_KEYS = ("in_ch", "out_ch")


def parse_official_string(text: str, source: str = "net_config string") -> NetConfig:
    """Parse the official ``[[C_in, C_out], 'op', [...], n, stride]|...`` form followed by ``net_type: X``."""
    body_lines, net_type = [], None
    for line in text.splitlines():
        line = line.strip()
        if "net_type" in line:
            net_type = line.split(":", 1)[-1].strip()
            break
        body_lines.append(line)
    body = "".join(body_lines)
    if net_type is None:
        raise DensenasError(f"{source}: missing the 'net_type: mbv2|res' line")
    if not body:
        raise DensenasError(f"{source}: no blocks before the net_type line")
    blocks = []
    for index, piece in enumerate(p for p in body.split("|") if p.strip()):
        entry = _parse_literal(piece, f"{source}: entry {index}")
        blocks.append(_official_entry_to_dict(entry, f"{source}: entry {index}"))
    return net_config_from_dict({"net_type": net_type, "blocks": blocks}, source)


def _parse_literal(piece: str, where: str) -> Any:
    if not re.fullmatch(r"[\s\[\]\d,'\"a-z_]*", piece):
        raise DensenasError(f"{where}: unexpected characters in {piece.strip()!r}")
    try:
        return json.loads(piece.replace("'", '"'))
    except json.JSONDecodeError:
        raise DensenasError(f"{where}: not a bracketed list: {piece.strip()!r}") from None


def _official_entry_to_dict(entry: Any, where: str) -> dict[str, Any]:
    shape_ok = isinstance(entry, list) and len(entry) in (2, 5) and isinstance(entry[0], list) and len(entry[0]) == 2
    if not shape_ok:
        raise DensenasError(f"{where}: expected [[C_in, C_out], op, [stack ops], n, stride], got {entry!r}")
    channels = dict(zip(_ENTRY_KEYS, entry[0], strict=True))
    if len(entry) == 2:
        return {**channels, "op": entry[1]}
    _, head_op, stack_ops, n_stack, stride = entry
    if not isinstance(stack_ops, list) or n_stack != len(stack_ops):
        raise DensenasError(f"{where}: stack-op count {n_stack!r} does not match the list {stack_ops!r}")
    return {**channels, "head_op": head_op, "stack_ops": stack_ops, "stride": stride}


def _short(message: str, limit: int = 160) -> str:
    return message if len(message) <= limit else message[: limit - 3] + "..."
