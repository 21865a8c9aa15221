"""Resumable checkpoints: atomic save, ``weights_only`` load, RNG states, an identity and an integrity check on load.

A checkpoint records what produced it (kind, model/space identity, params digest) and is refused, by name,
when loaded for something else. It also carries the sha256 of its own content (every tensor's bytes and every
value, in order): torch's zip format does not check its CRCs on load, so a flipped bit would otherwise go unseen.
The digest sits inside the file rather than in a sidecar so that it can never be stale (a kill between writing
two files, or ``dvc checkout`` restoring only the checkpoint).
"""

from __future__ import annotations

import hashlib
import random
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from densenas.atomic import atomic_path
from densenas.errors import DensenasError


def rng_state() -> dict[str, Any]:
    state = {
        "python": random.getstate(),
        "numpy": _numpy_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_as_python_state(state["python"]))
    np.random.set_state(_numpy_state_tuple(state["numpy"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _numpy_state() -> dict[str, Any]:
    """numpy's MT19937 state as tensors and ints, so ``weights_only`` loading can read it back."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached": float(cached)}


def _numpy_state_tuple(state: dict[str, Any]) -> tuple:
    keys = state["keys"].numpy().astype(np.uint32)
    return (state["name"], keys, state["pos"], state["has_gauss"], state["cached"])


def _as_python_state(state: Any) -> tuple:
    """``random`` wants nested tuples; a weights_only load may hand back lists."""
    version, internal, gauss = state
    return (version, tuple(internal), gauss)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


INTEGRITY = "content_sha256"


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` (which must hold an ``identity`` mapping) atomically, with the digest of its content."""
    if "identity" not in payload:
        raise ValueError("a checkpoint payload needs an 'identity' mapping")
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        # through a Python file object, so a full disk raises OSError (ENOSPC) rather than torch's RuntimeError
        torch.save({**payload, INTEGRITY: content_digest(payload)}, handle)


class CheckpointMismatch(DensenasError):
    """A readable, intact checkpoint made for something else: ``key`` is the first identity entry that differs."""

    def __init__(self, message: str, key: str) -> None:
        super().__init__(message)
        self.key = key


def load_checkpoint(path: str | Path, identity: dict[str, Any]) -> dict[str, Any]:
    """Load with ``weights_only=True``; refuse a checkpoint whose identity differs from ``identity``."""
    path = Path(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise DensenasError(f"{path}: checkpoint not found") from None
    except Exception as exc:  # a truncated or foreign file: name it, do not unpickle anything
        raise DensenasError(f"{path}: not a readable checkpoint ({exc.__class__.__name__})") from None
    if not isinstance(payload, dict) or "identity" not in payload:
        raise DensenasError(f"{path}: not a densenas checkpoint (no identity record)")
    recorded = payload.pop(INTEGRITY, None)
    if recorded is None:
        raise DensenasError(f"{path}: checkpoint has no {INTEGRITY} (written by an older densenas); delete it to "
                            "start the stage over")
    if recorded != content_digest(payload):
        raise DensenasError(f"{path}: content differs from its recorded {INTEGRITY} (the file is corrupted or was "
                            "edited); delete it to start the stage over")
    for key, expected in identity.items():
        got = payload["identity"].get(key)
        if got != expected:
            raise CheckpointMismatch(f"{path}: checkpoint was made for {key}={got!r}, expected {key}={expected!r}", key)
    return payload


def load_resume_checkpoint(path: Path, identity: dict[str, Any], *, settings_key: str) -> dict[str, Any] | None:
    """A stage's own checkpoint to resume from, or None to start over: when there is none, or when it was made with
    other params (only ``settings_key`` differs, the case of a workflow re-running a stage after a params change;
    it is overwritten at the next save). A checkpoint of another model, space or variant is refused."""
    if not path.exists():
        return None
    try:
        return load_checkpoint(path, identity)
    except CheckpointMismatch as exc:
        if exc.key != settings_key:
            raise
        print(f"densenas: {path} was made with other params ({exc.key} differs): starting over", file=sys.stderr)
        return None


def content_digest(payload: Any) -> str:
    """sha256 over the structure, values and tensor bytes of ``payload``; lists and tuples hash alike, because
    a ``weights_only`` load may give back either."""
    digest = hashlib.sha256()
    _feed(digest, payload)
    return digest.hexdigest()


def _feed(digest: Any, value: Any) -> None:
    if isinstance(value, torch.Tensor):
        flat = value.detach().cpu().reshape(-1).contiguous()
        digest.update(f"T{value.dtype}{tuple(value.shape)}".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")
    elif isinstance(value, dict):
        digest.update(f"D{len(value)}".encode())
        for key, item in value.items():
            _feed(digest, key)
            _feed(digest, item)
    elif isinstance(value, list | tuple):
        digest.update(f"L{len(value)}".encode())
        for item in value:
            _feed(digest, item)
    else:
        digest.update(f"{type(value).__name__}:{value!r};".encode())
