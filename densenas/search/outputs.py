"""What a search run writes (DESIGN.md): per epoch ``arch_params.json`` and ``history.csv``; at the end
``metrics.json`` and, for a variant, ``net_config.json`` with its official string form ``net_config.txt``.

Rank 0 only. The history and the per-epoch snapshots also travel inside the checkpoint, so a resumed run
rewrites exactly the files an uninterrupted one would.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from densenas.arch import PathArch, to_net_config
from densenas.atomic import write_json
from densenas.chained_cost import architecture_cost
from densenas.complexity import complexity
from densenas.models import build_network
from densenas.search.derive import derive_arch
from densenas.search.records import (
    arch_snapshot,
    best_supernet_val_epochs,
    select_snapshot,
    write_arch_params,
    write_history,
    write_net_config,
)
from densenas.search.weight_step import ValResult, expected_cost_all_ops
from densenas.supernet import Supernet

if TYPE_CHECKING:
    from densenas.search.loop import Progress, SearchJob

PAPER_INPUT = 224       # derived-architecture figures as the paper reports them (SPEC §6.6)
PAPER_CLASSES = 1000


def derived_figures(arch: PathArch, job: SearchJob, model: Supernet) -> dict[str, float | None]:
    """Mult-adds and params of the derived network at 224 px with 1000 classes, and its cost in the search's
    cost table (stem + chosen ops + final branch + classifier, §5.3) when the run has one."""
    network = build_network(to_net_config(arch, job.space, model.topology, PAPER_CLASSES), PAPER_CLASSES)
    figures = complexity(network, input_size=PAPER_INPUT)
    cost = None
    if job.cost_table is not None:
        space = job.space
        cost = architecture_cost(model.topology, job.cost_table, arch.path,
                                 [space.head_ops.index(op) for op in arch.head_ops],
                                 [[space.stack_ops.index(op) for op in ops] for ops in arch.stack_ops])
    return {"derived_mult_adds_m": figures.mult_adds_m, "derived_params_m": figures.params_m,
            "derived_cost": cost}


class SearchOutputs:
    """The history rows and α/β snapshots of a run, and the files made from them."""

    def __init__(self, job: SearchJob, model: Supernet) -> None:
        self.job, self.model = job, model
        self.history: list[dict[str, Any]] = []
        self.snapshots: list[dict[str, Any]] = []

    def derive(self) -> PathArch:
        arch = self.model.arch
        return derive_arch(arch.beta, arch.alpha_head, arch.alpha_stack, self.job.space, self.model.topology)

    def record_snapshot(self, epoch: int, supernet_val_top1: float | None = None) -> dict[str, Any]:
        arch = self.derive()
        cost = None if self.job.cost_table is None else expected_cost_all_ops(self.model, self.job.cost_table)
        figures = {**derived_figures(arch, self.job, self.model), "expected_cost": cost}
        self.snapshots.append(arch_snapshot(epoch, self.model.arch, arch,
                                            {**figures, "supernet_val_top1": supernet_val_top1}))
        return figures

    def end_epoch(self, epoch: int, stage: str, progress: Progress, val: ValResult | None, *, lr: float) -> None:
        # Only search epochs compete for best_supernet_val (the warm-up's validation is a progress report).
        figures = self.record_snapshot(epoch, val.top1 if val is not None and stage == "search" else None)
        sums = progress.sums
        row: dict[str, Any] = {"epoch": epoch, "stage": stage, "lr": lr, **figures,
                               "epoch_seconds": progress.epoch_seconds}
        for phase, keys in (("weight", ("loss", "top1")), ("arch", ("loss", "ce", "top1", "cost"))):
            count = sums.get(f"{phase}_n", 0.0)
            prefix = "train" if phase == "weight" else "arch"
            for key in keys:
                row[f"{prefix}_{key}"] = sums[f"{phase}_{key}"] / count if count else None
        if val is not None:
            row.update(val_loss=val.loss, val_top1=val.top1, val_top5=val.top5)
        self.history.append(row)

    def write_epoch_files(self) -> None:
        out, job = self.job.out_dir, self.job
        header = {"space": job.space.name, "variant": job.variant, "head_ops": list(job.space.head_ops),
                  "stack_ops": list(job.space.stack_ops), "temperature": job.space.temperature,
                  "num_classes": job.net_num_classes, "cost_source": job.info.get("cost_source")}
        write_arch_params(out / "arch_params.json", header, self.snapshots)
        write_history(out / "history.csv", self.history)

    def finish(self, total_steps: int) -> None:
        """Final files: everything of the last epoch, the net_config (variants) of the epoch that
        ``search.retrain_epoch`` selects (as ``densenas derive`` does) and metrics.json."""
        self.write_epoch_files()
        job, last = self.job, self.snapshots[-1]
        chosen = select_snapshot({"epochs": self.snapshots}, job.retrain_epoch, str(job.out_dir))
        arch = PathArch(tuple(chosen["path"]), tuple(chosen["head_ops"]),
                        tuple(tuple(s) for s in chosen["stack_ops"]))
        if job.objective is not None:
            write_net_config(job.out_dir / "net_config.json",
                             to_net_config(arch, job.space, self.model.topology, job.net_num_classes))
        write_json(job.out_dir / "metrics.json", self._metrics(last, total_steps))

    def _metrics(self, last: dict[str, Any], total_steps: int) -> dict[str, Any]:
        job, rows = self.job, self.history
        validated = [r for r in rows if r.get("val_top1") is not None]  # warm-up: its last epoch only
        warmup_val = [r for r in validated if r["stage"] == "warmup"]
        search_val = [r for r in validated if r["stage"] == "search"]
        best = best_supernet_val_epochs(self.snapshots)
        hours = sum(r["epoch_seconds"] for r in rows) / 3600
        warmup_hours = sum(r["epoch_seconds"] for r in rows if r["stage"] == "warmup") / 3600
        unit = job.cost_table.unit if job.cost_table is not None else None
        cost = last["derived_cost"]
        return {
            "space": job.space.name,
            "variant": job.variant,
            "objective": None if job.objective is None else {
                "type": job.objective.objective, "lambda": job.objective.lambda_, "tau": job.objective.tau},
            "cost_unit": unit,
            "epochs": len(rows),
            "expected_cost": _finite(last["expected_cost"]),
            "warmup_supernet_val_top1": warmup_val[-1]["val_top1"] if warmup_val else None,
            "warmup_supernet_val_top5": warmup_val[-1]["val_top5"] if warmup_val else None,
            "supernet_val_top1": search_val[-1]["val_top1"] if search_val else None,
            "supernet_val_top5": search_val[-1]["val_top5"] if search_val else None,
            "best_supernet_val": [{"epoch": s["epoch"], "val_top1": s["supernet_val_top1"], "path": s["path"]}
                                  for s in best],
            # the epoch `derive` takes for each search.retrain_epoch setting (None: no validated search epoch)
            "retrain_epochs": {"last": last["epoch"], "best_supernet_val": best[0]["epoch"] if best else None},
            "retrain_epoch": job.retrain_epoch,   # the setting net_config.json was derived with
            "derived": {
                "path": last["path"],
                "mult_adds_m_224": last["derived_mult_adds_m"],
                "params_m": last["derived_params_m"],
                "cost": cost,
                "lut_latency_ms": cost if unit == "ms" else None,
            },
            "search_hours": hours,
            "warmup_hours": warmup_hours,
            "device": job.device_label,
            "world_size": job.world_size,
            "device_hours": hours * job.world_size,
            "weight_steps_total": total_steps,
            **job.info,
        }


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else value
