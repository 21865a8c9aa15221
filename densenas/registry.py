"""The model zoo: published DenseNAS architectures (shipped as data) and the torchvision baselines.

``create_model(name)`` builds any of them with the same interface, so retraining and evaluation treat the
paper's networks and its baselines alike (timm-style registry).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from densenas.errors import DensenasError
from densenas.net_config import NetConfig, load_net_config, net_config_from_dict

if TYPE_CHECKING:  # torch is imported by the builders only: the Snakemake process lists the zoo without it
    from torch import nn


@dataclass(frozen=True)
class ModelEntry:
    """A registered model: how to build it and which paper row it stands for."""

    name: str
    paper_name: str
    family: str                       # "densenas" or "baseline"
    space: str | None                 # search space of a DenseNAS-family model
    build: Callable[[int], nn.Module]  # num_classes -> network
    net_config: NetConfig | None = None


@cache
def published_archs() -> dict[str, Any]:
    """The shipped copy of ``published_archs.json`` (DenseNAS-A/B/C and reference architectures)."""
    return json.loads(resources.files("densenas.zoo").joinpath("published_archs.json").read_text())


def _net_config_entry(name: str, paper_name: str, raw: dict[str, Any], space: str) -> ModelEntry:
    config = net_config_from_dict(raw, f"published_archs.json: {name}")
    return ModelEntry(name, paper_name, "densenas", space, lambda n: _build_network(config, n), config)


def _build_network(config: NetConfig, num_classes: int) -> nn.Module:
    from densenas.models import build_network

    return build_network(config, num_classes)


def _torchvision(name: str, paper_name: str, factory: str, **kwargs: Any) -> ModelEntry:
    """A torchvision baseline, its ``torchvision.models`` factory named, not imported: torchvision's import (~2 s,
    torch._dynamo through torchvision.ops) is paid by the processes that build one, not by every Snakemake start."""
    def build(num_classes: int) -> nn.Module:
        import torchvision

        return getattr(torchvision.models, factory)(weights=None, num_classes=num_classes, **kwargs)

    return ModelEntry(name, paper_name, "baseline", None, build)


@cache
def _registry() -> dict[str, ModelEntry]:
    data = published_archs()
    entries = [
        _net_config_entry(key, model["name"], model["net_config"], "mbv2")
        for key, model in data["models"].items()
        if model["net_config"] is not None
    ]
    v1 = data["historical"]["densenas_c_arxiv_v1"]
    v1_config = {**v1["net_config"], "blocks": [*v1["net_config"]["blocks"], v1["appended_by_old_code"]]}
    entries.append(_net_config_entry("densenas_c_arxiv_v1", v1["name"], v1_config, "mbv2"))
    ref = data["non_published_reference"]["issue19_resnet_intermediate"]
    entries.append(_net_config_entry("resnet_space_issue19", ref["name"], ref["net_config"], "resnet"))
    entries += [
        _torchvision("mobilenet_v2", "1.0-MobileNetV2", "mobilenet_v2"),
        _torchvision("mobilenet_v2_140", "1.4-MobileNetV2", "mobilenet_v2", width_mult=1.4),
        _torchvision("mnasnet1_0", "MnasNet", "mnasnet1_0"),
        _torchvision("resnet18", "ResNet-18", "resnet18"),
        _torchvision("resnet34", "ResNet-34", "resnet34"),
        _torchvision("resnet50", "ResNet-50-B", "resnet50"),
    ]
    return {entry.name: entry for entry in entries}


def list_models() -> list[str]:
    return sorted(_registry())


def get_entry(name: str) -> ModelEntry:
    try:
        return _registry()[name]
    except KeyError:
        raise DensenasError(f"unknown model '{name}' (registered: {', '.join(list_models())})") from None


def create_model(name_or_path: str | Path, *, num_classes: int = 1000) -> nn.Module:
    """Build a registered model by name, or any net_config file by path."""
    if str(name_or_path) in _registry():
        return get_entry(str(name_or_path)).build(num_classes)
    path = Path(name_or_path)
    if path.suffix in (".json", ".txt") or path.exists():
        return _build_network(load_net_config(path), num_classes)
    return get_entry(str(name_or_path)).build(num_classes)
