"""The report stage: the paper's tables beside this run's measurements, and the figures. Files only, no MLflow.

Paper columns are copied verbatim from the shipped reference tables; measured columns come from the
``results/eval``, ``results/train``, ``results/search`` and ``results/latency`` JSON/CSV files of this run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd

from densenas.atomic import atomic_path
from densenas.config import Params
from densenas.errors import DensenasError
from densenas.input_files import load_json_file
from densenas.registry import list_models

# paper row -> registered model retrained here with the same recipe
PAPER_ROW_MODELS = {
    "mbv2": {
        "DenseNAS-A": "densenas_a", "DenseNAS-B": "densenas_b", "DenseNAS-C": "densenas_c",
        "1.0-MobileNetV2": "mobilenet_v2", "1.4-MobileNetV2": "mobilenet_v2_140", "MnasNet": "mnasnet1_0",
        "Random Search": "mbv2-random",
    },
    "resnet": {"ResNet-18": "resnet18", "ResNet-34": "resnet34", "ResNet-50-B": "resnet50"},
}
PAPER_TABLE_FILES = {"mbv2": "paper_tables.csv", "resnet": "paper_tables_resnet.csv"}
# (paper column, this run's column in the paper's units, difference column = ours - paper's), in table order. The
# latency that lines up with the paper's TITAN-XP figures is the path sum over the official TITAN-XP table.
COMPARED = {
    "mbv2": (("flops_m", "mult_adds_m_224", "diff_mult_adds_m"), ("params_m", "params_m_224", "diff_params_m"),
             ("gpu_latency_ms", "lut_titanxp_ms", "diff_lut_titanxp_ms"), ("top1", "top1", "diff_top1"),
             ("search_gpu_hours", "search_device_hours", "diff_search_gpu_hours")),
    "resnet": (("flops_g", "flops_g_224", "diff_flops_g"), ("params_m", "params_m_224", "diff_params_m"),
               ("top1", "top1", "diff_top1")),
}


@dataclass(frozen=True)
class ResultPaths:
    root: Path = Path("results")

    def eval_metrics(self, model: str) -> Path:
        return self.root / "eval" / model / "metrics.json"

    def train_metrics(self, model: str) -> Path:
        return self.root / "train" / model / "metrics.json"

    def train_history(self, model: str) -> Path:
        return self.root / "train" / model / "history.csv"

    def search_dir(self, space: str, variant: str) -> Path:
        return self.root / "search" / space / variant

    def model_source(self, model: str) -> str:
        """A zoo name, or the net_config file of a searched or random-search model (``{space}-{variant}``)."""
        if model in list_models():
            return model
        space, variant = model.split("-", 1)
        return str(self.search_dir(space, variant) / "net_config.json")

    def latency(self, space: str) -> Path:
        """The latency stage's file: every table model of ``space`` timed in one job."""
        return self.root / "latency" / f"{space}.json"


def table_models(space: str, params: Params) -> list[str]:
    """The retrained models a space's table compares: published, baselines, searched variants, random search."""
    searched = [f"{space}-{variant}" for variant in sorted(params.search.spaces[space].variants)]
    if space == "mbv2":
        return [*params.report.mbv2_published, *params.report.mbv2_baselines, *searched, f"{space}-random"]
    return [*params.report.resnet_baselines, *searched]


def paper_table(space: str) -> pd.DataFrame:
    source = resources.files("densenas.resources.paper").joinpath(PAPER_TABLE_FILES[space])
    with source.open() as handle:
        return pd.read_csv(handle, dtype={"model": str})


def _read_json(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise DensenasError(f"{path}: missing (run the stage that writes it first)")
    return load_json_file(path, "metrics file")


def _get(record: dict[str, Any], dotted: str) -> Any:
    node: Any = record
    for part in dotted.split("."):
        if not isinstance(node, dict) or node.get(part) is None:
            return None
        node = node[part]
    return node


def read_latency(space: str, paths: ResultPaths) -> dict[str, Any]:
    """The latency stage's record of ``space``'s table, with the file it came from (for error messages)."""
    return {**_read_json(paths.latency(space)), "file": str(paths.latency(space))}


def measured_columns(model: str, paths: ResultPaths, params: Params, latency: dict[str, Any]) -> dict[str, Any]:
    """What this run measured for one retrained model (eval + train + search files, and ``latency``: the
    latency stage's record of the model's table)."""
    ev = _read_json(paths.eval_metrics(model))
    tr = _read_json(paths.train_metrics(model))
    models = latency.get("models")
    timed = models.get(model) if isinstance(models, dict) else None
    if not isinstance(timed, dict):
        raise DensenasError(f"{latency['file']}: no latency of model '{model}' (re-run the latency stage)")
    row = {
        "top1": _get(ev, "top1"),
        "top5": _get(ev, "top5"),
        "top1_last_epoch": _get(tr, "last.top1"),
        "mult_adds_m_224": _get(ev, "mult_adds_m_224"),
        "params_m_224": _get(ev, "params_m_224"),
        "latency_ms": _get(timed, "mean_ms"),
        "latency_round_spread_pct": _get(timed, "round_spread_pct"),
        "latency_batch": _get(latency, "protocol.batch"),
        "latency_device": _get(latency, "protocol.device_name"),
        "lut_latency_ms": _get(ev, "lut_latency.latency_ms"),
        "lut_input_size": _get(ev, "lut_latency.input_size"),  # the LUT's own input: 32 px in the embedded run
        "lut_titanxp_ms": _get(ev, "lut_titanxp_ms"),
        "dataset": _get(ev, "dataset"),
        "input_size": _get(ev, "input_size"),
        "train_epochs": _get(tr, "epochs"),
        "train_device": _get(tr, "device"),
    }
    if "-" in model:
        space, variant = model.split("-", 1)
        search = paths.search_dir(space, variant) / "metrics.json"
        if search.is_file():
            record = _read_json(search)
            setting = params.search.retrain_epoch
            row.update({
                "search_hours": _get(record, "search_hours"),          # wall clock
                "search_device_hours": _get(record, "device_hours"),   # wall clock x world size: the GPU-hours
                "search_device": _get(record, "device"),
                "search_world_size": _get(record, "world_size"),
                "search_lut_source": _get(record, "lut_source"),
                "retrain_epoch": setting,
                "retrain_epoch_number": _get(record, f"retrain_epochs.{setting}"),
            })
    return row


def build_table(space: str, models: list[str], paths: ResultPaths, params: Params) -> pd.DataFrame:
    """Every paper row (paper columns verbatim, measured columns where a model maps to it). A searched variant
    with a ``paper_row`` fills that row when no published model is retrained for it (DenseNAS-R1/R2), else gets
    its own row right below it (DenseNAS-A/B/C), with the paper row's columns to compare against; the others
    come last. Each compared quantity stands as paper | ours | ours - paper (``COMPARED``)."""
    paper = paper_table(space)
    latency = read_latency(space, paths)
    mapping = dict(PAPER_ROW_MODELS[space])
    below: dict[str, list[str]] = {}
    for variant, settings in sorted(params.search.spaces[space].variants.items()):
        if not settings.paper_row:
            continue
        if settings.paper_row in mapping:
            below.setdefault(settings.paper_row, []).append(f"{space}-{variant}")
        else:
            mapping[settings.paper_row] = f"{space}-{variant}"
    rows = []
    for record in paper.to_dict("records"):
        paper_columns = {f"paper_{k}": v for k, v in record.items() if k not in ("model", "source")}
        model = mapping.get(record["model"])
        measured = measured_columns(model, paths, params, latency) if model in models else {}
        rows.append({"model": record["model"], "this_run_model": model if measured else None, **paper_columns,
                     **measured})
        for searched in below.get(record["model"], []):
            if searched in models:
                rows.append({"model": f"(this run) {searched}", "this_run_model": searched,
                             "compared_with": record["model"], **paper_columns,
                             **measured_columns(searched, paths, params, latency)})
    placed = set(mapping.values()) | {m for group in below.values() for m in group}
    for model in models:
        if model not in placed:
            rows.append({"model": f"(this run) {model}", "this_run_model": model,
                         **measured_columns(model, paths, params, latency)})
    return _with_differences(pd.DataFrame(rows), space).round(params.report.decimals)


def _with_differences(table: pd.DataFrame, space: str) -> pd.DataFrame:
    """Add ours - paper's for every compared pair and order the columns: identity, the compared triples, the rest."""
    if space == "resnet" and "mult_adds_m_224" in table:  # the ResNet table gives G FLOPs (= G mult-adds)
        table["flops_g_224"] = pd.to_numeric(table["mult_adds_m_224"], errors="coerce") / 1000
    ordered = [c for c in ("model", "this_run_model", "compared_with") if c in table]
    for paper_key, ours, diff in COMPARED[space]:
        paper_column = f"paper_{paper_key}"
        if paper_column in table and ours in table:
            table[diff] = pd.to_numeric(table[ours], errors="coerce") - table[paper_column]
            ordered += [paper_column, ours, diff]
    return table[ordered + [c for c in table.columns if c not in ordered]]


def write_table(table: pd.DataFrame, out: Path) -> None:
    with atomic_path(out) as tmp:
        table.to_csv(tmp, index=False)


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def figure_accuracy_vs_latency(space: str, models: list[str], paths: ResultPaths, params: Params, out: Path) -> None:
    """Paper points (TITAN-XP, batch 32) and this run's points (this device) side by side: the hardware and data
    differ, so the panels share no axis."""
    plt = _pyplot()
    fig, (ax_paper, ax_ours) = plt.subplots(1, 2, figsize=(11, 4.5))
    paper = paper_table(space).dropna(subset=["gpu_latency_ms", "top1"])
    for record in paper.to_dict("records"):
        ours = record["model"].startswith("DenseNAS")
        ax_paper.scatter(record["gpu_latency_ms"], record["top1"], color="C3" if ours else "C0")
        ax_paper.annotate(record["model"], (record["gpu_latency_ms"], record["top1"]), fontsize=7)
    ax_paper.set(title="paper (TITAN-XP, batch 32, ImageNet)", xlabel="latency (ms)", ylabel="top-1 (%)")
    latency = read_latency(space, paths)
    for model in models:
        measured = measured_columns(model, paths, params, latency)
        if _finite(measured["latency_ms"]) and _finite(measured["top1"]):
            family = "C3" if model.startswith(("densenas", f"{space}-")) else "C0"
            ax_ours.scatter(measured["latency_ms"], measured["top1"], color=family)
            ax_ours.annotate(model, (measured["latency_ms"], measured["top1"]), fontsize=7)
    ax_ours.set(title=f"this run ({params.dataset}, {params.data.input_size} px)",
                xlabel="measured latency (ms, this device)", ylabel="top-1 (%)")
    _save(fig, out)


def figure_beta_evolution(arch_params: Path, out: Path) -> None:
    """softmax(β) of every edge per epoch of one search: how the path distribution settles."""
    plt = _pyplot()
    history = _read_json(arch_params)["epochs"]
    fig, ax = plt.subplots(figsize=(9, 5))
    epochs = [record["epoch"] for record in history]
    for node, _ in enumerate(history[0]["path_probs"]):
        for position in range(len(history[0]["path_probs"][node])):
            if len(history[0]["path_probs"][node]) > 1:
                series = [record["path_probs"][node][position] for record in history]
                ax.plot(epochs, series, linewidth=0.8)
    ax.set(title=f"path probabilities softmax(β) per edge — {arch_params.parent.name}", xlabel="epoch",
           ylabel="transition probability")
    _save(fig, out)


def figure_training_curves(models: list[str], paths: ResultPaths, out: Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 5))
    for model in models:
        history = pd.read_csv(paths.train_history(model))
        validated = history.dropna(subset=["val_top1"])  # train.val_start_epoch skips the early epochs
        ax.plot(validated["epoch"], validated["val_top1"], label=model, linewidth=1, marker="o", markersize=3)
    ax.set(title="validation top-1 during retraining", xlabel="epoch", ylabel="top-1 (%)")
    ax.legend(fontsize=7)
    _save(fig, out)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, out: Path) -> None:
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    _pyplot().close(fig)
