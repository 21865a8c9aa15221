"""Convert the authors' published DenseNAS-A/B/C checkpoints into checkpoints `densenas evaluate` accepts.

The official derived network (``MBV2_Net``) names its tensors differently from ours (``input_block`` vs ``stem``,
``head_layer._expand_conv`` vs ``0.body``), but registers them in the same order with the same shapes; the
official names and shapes ship in ``resources/paper/official_state_dict_names.json``. A checkpoint is mapped
position by position only after every official name and shape has been checked, so a tensor can never land in
the wrong place silently. Loading stays ``weights_only``: nothing in the file is executed.
"""

from __future__ import annotations

import json
import re
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import nn

from densenas.checkpoint import save_checkpoint
from densenas.errors import DensenasError
from densenas.registry import create_model
from densenas.train.trainer import architecture_digest

PREFIX = "module."                 # nn.DataParallel's, as the published checkpoints were saved
WRAPPER_KEYS = ("state_dict", "model", "net", "weights")   # dicts the state dict may be wrapped in
NUM_CLASSES = 1000
SHOWN = 3                          # names listed per kind of mismatch


@cache
def official_names() -> dict[str, Any]:
    text = resources.files("densenas.resources.paper").joinpath("official_state_dict_names.json").read_text()
    return json.loads(text)


def convertible_models() -> list[str]:
    return sorted(k for k in official_names() if k != "about")


def read_official_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of an official checkpoint: a state dict, maybe under one of ``WRAPPER_KEYS``, maybe with the
    ``module.`` prefix of DataParallel; ``num_batches_tracked`` counters dropped (the official list omits them)."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise DensenasError(f"{path}: checkpoint not found") from None
    except Exception as exc:  # weights_only names the first global it refuses; anything else is not a checkpoint
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        if found is None:
            raise DensenasError(f"{path}: not a readable torch checkpoint ({exc.__class__.__name__})") from None
        raise DensenasError(f"{path}: refused: it cannot be loaded with weights_only=True (it pickles Python objects, "
                            f"e.g. {found[1]}); re-save its state dict alone with torch.save(model.state_dict(), "
                            "...)") from None
    state = _unwrap(payload, path)
    if all(name.startswith(PREFIX) for name in state):
        state = {name.removeprefix(PREFIX): tensor for name, tensor in state.items()}
    return {name: tensor for name, tensor in state.items() if not name.endswith("num_batches_tracked")}


def _unwrap(payload: Any, path: Path) -> dict[str, torch.Tensor]:
    if _is_state_dict(payload):
        return payload
    if isinstance(payload, dict):
        for key in WRAPPER_KEYS:
            if _is_state_dict(payload.get(key)):
                return payload[key]
        keys = ", ".join(map(str, list(payload)[:8]))
        raise DensenasError(f"{path}: no state dict found (expected a mapping of tensor names to tensors, or one "
                            f"under {', '.join(WRAPPER_KEYS)}; the file holds keys: {keys})")
    raise DensenasError(f"{path}: expected a state dict, got {type(payload).__name__}")


def _is_state_dict(value: Any) -> bool:
    return (isinstance(value, dict) and bool(value)
            and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items()))


def convert_official(state: dict[str, torch.Tensor], model: str, source: str) -> nn.Module:
    """The zoo network ``model`` (1000 classes) holding the official tensors; refuses, by name, any missing, extra
    or mis-shaped tensor."""
    if model not in convertible_models():
        raise DensenasError(f"--model {model}: no official tensor list for it (expected one of: "
                            f"{', '.join(convertible_models())})")
    expected = [(name, tuple(shape)) for name, shape in official_names()[model]["tensors"]]
    _check_names(state, dict(expected), source)
    net = create_model(model, num_classes=NUM_CLASSES)
    ours = [name for name in net.state_dict() if not name.endswith("num_batches_tracked")]
    own_shapes = {name: tuple(t.shape) for name, t in net.state_dict().items()}
    if [own_shapes[n] for n in ours] != [shape for _, shape in expected]:  # the order both sides rely on
        raise DensenasError(f"{model}: this zoo network's tensors do not follow the official order and shapes")
    mapped = {our: state[official] for our, (official, _) in zip(ours, expected, strict=True)}
    net.load_state_dict({**net.state_dict(), **mapped})  # the BN step counters stay ours
    return net


def _check_names(state: dict[str, torch.Tensor], expected: dict[str, tuple[int, ...]], source: str) -> None:
    problems = []
    missing = [n for n in expected if n not in state]
    extra = [n for n in state if n not in expected]
    shapes = [f"{n} {tuple(state[n].shape)} (expected {expected[n]})" for n in expected
              if n in state and tuple(state[n].shape) != expected[n]]
    for label, names in (("missing", missing), ("unexpected", extra), ("mis-shaped", shapes)):
        if names:
            more = f" and {len(names) - SHOWN} more" if len(names) > SHOWN else ""
            problems.append(f"{len(names)} {label}: {', '.join(names[:SHOWN])}{more}")
    if problems:
        raise DensenasError(f"{source}: not an official checkpoint of this model: {'; '.join(problems)}")


def write_converted(net: nn.Module, out: Path, source: Path, model: str) -> None:
    """A train-stage checkpoint (identity kind ``train`` and the network's architecture digest), as `evaluate`
    loads it; ``epoch`` is None: the weights were not trained here."""
    save_checkpoint(out, {"identity": {"kind": "train", "model": model, "arch": architecture_digest(net)},
                          "model": net.state_dict(), "epoch": None, "converted_from": str(source)})
