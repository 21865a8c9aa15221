"""The train stage: a registered model or a net_config, a prepared dataset and params in; ``results/train/{model}/``.

Sizes the classifier from the dataset's manifest, builds the loaders for this process's rank and runs ``fit``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from densenas.checkpoint import seed_everything
from densenas.config import Params, params_digest
from densenas.data import build_loader, read_manifest
from densenas.distributed import init_distributed, per_rank_batch, shutdown
from densenas.net_config import load_net_config
from densenas.registry import create_model, get_entry, list_models
from densenas.train.residual_init import zero_init_residual_bn
from densenas.train.trainer import TrainSetup, fit

RECIPE_SECTIONS = ("seed", "dataset", "data", "train")  # what shapes a training run; a resume must match them
# ...except these, which do not change the retraining results (the search cap shapes only the search splits)
RUNTIME_DATA_KEYS = ("raw_dir", "workers", "pin_memory", "max_search_images_per_class")
SPACE_OF_NET_TYPE = {"mbv2": "mbv2", "res": "resnet"}


def run_name(model_source: str) -> str:
    """Name of a run: the registered name, ``{space}-{variant}`` for a searched ``.../{space}/{variant}/
    net_config.json`` (DESIGN.md), else the file's stem."""
    if model_source in list_models():
        return model_source
    path = Path(model_source)
    if path.name == "net_config.json" and path.parent.parent.name:
        return f"{path.parent.parent.name}-{path.parent.name}"
    return path.stem


def space_of(model_source: str) -> str:
    """The search space (MLflow experiment, report table) a model belongs to; baselines go with the table that
    compares them: ResNets with the ResNet space, the mobile networks with MBV2."""
    if model_source in list_models():
        entry = get_entry(model_source)
        return entry.space or ("resnet" if model_source.startswith("resnet") else "mbv2")
    return SPACE_OF_NET_TYPE.get(load_net_config(model_source).net_type, "mbv2")


def recipe_digest(params: Params) -> str:
    recipe = {key: params.raw[key] for key in RECIPE_SECTIONS}
    recipe["data"] = {k: v for k, v in recipe["data"].items() if k not in RUNTIME_DATA_KEYS}
    return params_digest(recipe)


def num_classes_of(prepared_dir: Path) -> int:
    return int(read_manifest(prepared_dir)["splits"]["train"]["num_classes"])


def set_bn_momentum(net: nn.Module, momentum: float) -> None:
    """One BN momentum for every network the recipe retrains, whatever its definition ships."""
    for module in net.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.momentum = momentum


def run_training(model_source: str, params: Params, *, name: str, data_dir: Path, out_dir: Path,
                 device: str = "auto") -> dict[str, Any]:
    """Train ``model_source`` with ``params.train`` on ``data_dir``'s train split, validating on its val split."""
    ctx = init_distributed(device)
    try:
        num_classes = num_classes_of(data_dir)
        seed_everything(params.seed)  # identical initial weights for every rank and every run
        net = create_model(model_source, num_classes=num_classes)
        if params.train.bn_momentum is not None:
            set_bn_momentum(net, params.train.bn_momentum)
        if params.train.zero_init_residual:
            zero_init_residual_bn(net)
        batch = per_rank_batch(params.train.batch_size, ctx)
        train_loader = build_loader(data_dir, "train", params.data, train=True, batch_size=batch, seed=params.seed,
                                    distributed=ctx)
        # Validation runs on rank 0 over the whole split: sharding would pad it with repeated images.
        val_loader = build_loader(data_dir, "val", params.data, train=False, batch_size=batch, seed=params.seed)
        setup = TrainSetup(
            name=name, recipe=params.train, seed=params.seed, out_dir=out_dir,
            recipe_digest=recipe_digest(params),
            info={"source": model_source, "dataset": params.dataset, "num_classes": num_classes,
                  "input_size": params.data.input_size, "train_images": len(train_loader.dataset),
                  "val_images": len(val_loader.dataset), "params_digest": params.digest},
        )
        return fit(net, train_loader, val_loader, setup, ctx)
    finally:
        shutdown(ctx)
