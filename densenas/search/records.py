"""The search's file formats (DESIGN.md): ``arch_params.json`` and ``history.csv`` written and read back, and the
derived ``net_config.json`` with its official string form ``net_config.txt``.

``arch_params.json`` holds, under ``epochs``, α and β of every epoch exactly (float32 values survive the JSON
round trip), softmax(β) as ``path_probs``, the derived architecture and the supernet val top-1 of validated search
epochs, so ``densenas derive`` recomputes any epoch's architecture, the best-val one included, from the file alone.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

import torch

from densenas.arch import PathArch, to_net_config
from densenas.atomic import write_json, write_text
from densenas.errors import DensenasError
from densenas.input_files import load_json_file
from densenas.net_config import NetConfig
from densenas.search.derive import derive_arch, transition_probs
from densenas.spaces import build_topology, load_space
from densenas.supernet import ArchParameters

ARCH_PARAMS_FORMAT = "densenas-arch-params/1"
INITIAL_EPOCH = -1  # the snapshot of the initial α, β, taken before the first epoch

HISTORY_COLUMNS = (
    "epoch", "stage", "lr", "train_loss", "train_top1", "arch_loss", "arch_ce", "arch_top1", "arch_cost",
    "expected_cost", "val_loss", "val_top1", "val_top5", "derived_mult_adds_m", "derived_params_m",
    "derived_cost", "epoch_seconds",
)


def arch_snapshot(epoch: int, params: ArchParameters, arch: PathArch,
                  figures: dict[str, float | None]) -> dict[str, Any]:
    """α, β and the derived architecture of one epoch, with its figures (mult-adds, params, table cost)."""
    return {
        "epoch": epoch,
        "path_probs": transition_probs(params.beta),
        "beta": [b.detach().float().cpu().tolist() for b in params.beta],
        "alpha_head": [a.detach().float().cpu().tolist() for a in params.alpha_head],
        "alpha_stack": [a.detach().float().cpu().tolist() for a in params.alpha_stack],
        "path": list(arch.path),
        "head_ops": list(arch.head_ops),
        "stack_ops": [list(ops) for ops in arch.stack_ops],
        **figures,
    }


def write_arch_params(path: Path, header: dict[str, Any], snapshots: list[dict[str, Any]]) -> None:
    write_json(path, {"format": ARCH_PARAMS_FORMAT, **header, "epochs": snapshots})


def load_arch_params(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    data = load_json_file(path, "arch params file")
    if not isinstance(data, dict) or data.get("format") != ARCH_PARAMS_FORMAT:
        raise DensenasError(f"{path}: expected an arch params file with format '{ARCH_PARAMS_FORMAT}'")
    if not data.get("epochs"):
        raise DensenasError(f"{path}: key 'epochs' is empty; the search has not logged an epoch yet")
    return data


RETRAIN_EPOCHS = ("last", "best_supernet_val")  # the choices of params search.retrain_epoch


def best_supernet_val_epochs(snapshots: list[dict[str, Any]], count: int = 2) -> list[dict[str, Any]]:
    """The ``count`` search epochs with the best supernet val top-1, best first (ties: the earlier epoch), as the
    official search keeps them (SPEC §6.6). Warm-up and unvalidated epochs carry no ``supernet_val_top1``."""
    validated = [s for s in snapshots if s.get("supernet_val_top1") is not None]
    return sorted(validated, key=lambda s: -s["supernet_val_top1"])[:count]


def select_snapshot(data: dict[str, Any], epoch: str, source: str) -> dict[str, Any]:
    """``last``, ``best_supernet_val`` (the search epoch with the best supernet val top-1), ``init`` (before the
    first epoch) or an epoch number."""
    snapshots = data["epochs"]
    if epoch == "last":
        return snapshots[-1]
    if epoch == "best_supernet_val":
        best = best_supernet_val_epochs(snapshots, 1)
        if not best:
            raise DensenasError(f"{source}: no search epoch has a supernet val top-1 (validation starts at "
                                "search.spaces.<space>.val_start_epoch), so best_supernet_val has nothing to choose "
                                "from; use last")
        return best[0]
    wanted = INITIAL_EPOCH if epoch == "init" else _epoch_number(epoch)
    for snapshot in snapshots:
        if snapshot["epoch"] == wanted:
            return snapshot
    logged = ", ".join(str(s["epoch"]) for s in snapshots)
    raise DensenasError(f"{source}: no snapshot for epoch {epoch} (logged: {logged})")


def _epoch_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise DensenasError(f"--epoch: expected 'last', 'best_supernet_val', 'init' or an epoch number, got "
                            f"{text!r}") from None


def snapshot_tensors(snapshot: dict[str, Any]) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
    """(β, α_head, α_stack) as the float32 tensors the supernet held; empty stack matrices keep their width."""
    def matrices(rows: list[Any]) -> list[torch.Tensor]:
        return [torch.tensor(m, dtype=torch.float32) if m else torch.zeros(0, 0) for m in rows]

    beta = [torch.tensor(b, dtype=torch.float32) for b in snapshot["beta"]]
    return beta, matrices(snapshot["alpha_head"]), matrices(snapshot["alpha_stack"])


def write_history(path: Path, rows: list[dict[str, Any]]) -> None:
    """One row per epoch; missing or non-finite figures are empty cells."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=HISTORY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: _cell(row.get(key)) for key in HISTORY_COLUMNS})
    write_text(path, buffer.getvalue())


def _cell(value: Any) -> Any:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


def write_net_config(path: Path, config: NetConfig) -> None:
    """``path`` (JSON) and the official string form beside it, ``path`` with suffix ``.txt`` (SPEC §7.3)."""
    write_json(path, config.to_dict())
    write_text(path.with_suffix(".txt"), config.to_official_string())


def derive_from_arch_params(path: Path, epoch: str = "last") -> NetConfig:
    """The net_config of one logged epoch, re-derived from its α and β (``densenas derive``)."""
    data = load_arch_params(path)
    snapshot = select_snapshot(data, epoch, str(path))
    space = load_space(data["space"])
    topology = build_topology(space)
    beta, alpha_head, alpha_stack = snapshot_tensors(snapshot)
    try:
        arch = derive_arch(beta, alpha_head, alpha_stack, space, topology)
    except (IndexError, KeyError, RuntimeError) as exc:
        raise DensenasError(f"{path}: α/β of epoch {snapshot['epoch']} do not fit space '{space.name}' "
                            f"({exc.__class__.__name__})") from None
    return to_net_config(arch, space, topology, int(data["num_classes"]))
