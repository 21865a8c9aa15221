"""The evaluate stage: accuracy of a trained model on val, its cost, and its latency measured and LUT-predicted.

Accuracy is single centre crop (SPEC.md §8.3); mult-adds follow SPEC §10.2 and are given at the evaluation
resolution and, as in the paper, at 224 px with 1000 classes; latency follows the protocol of SPEC §10.1.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from torch import nn

from densenas.chained_cost import architecture_cost
from densenas.checkpoint import load_checkpoint
from densenas.complexity import count_mult_adds, count_params
from densenas.config import EvaluateParams, Params
from densenas.cost_table import CostTable
from densenas.errors import DensenasError
from densenas.latency import measure_latency
from densenas.lut import load_cost_table, read_lut
from densenas.lut.profile import device_info
from densenas.net_config import NetConfig, load_net_config
from densenas.official_lut import official_cost_table
from densenas.registry import create_model, get_entry, list_models, published_archs
from densenas.spaces import build_topology, load_space
from densenas.spaces.space import SearchSpace
from densenas.spaces.topology import Topology
from densenas.train.accuracy import evaluate_accuracy
from densenas.train.stage import SPACE_OF_NET_TYPE
from densenas.train.trainer import architecture_digest

PAPER_INPUT_SIZE = 224
PAPER_NUM_CLASSES = 1000
SKIP = "skip_connect"


def load_trained(model_source: str, checkpoint: Path, num_classes: int) -> tuple[nn.Module, dict[str, Any]]:
    """The network of ``model_source`` with the weights of a train-stage checkpoint (best.pt or checkpoint.pt)."""
    net = create_model(model_source, num_classes=num_classes)
    payload = load_checkpoint(checkpoint, {"kind": "train", "arch": architecture_digest(net)})
    net.load_state_dict(payload["model"])
    return net, payload


def measured_latency(net: nn.Module, evaluate: EvaluateParams) -> dict[str, Any]:
    """End-to-end latency of ``net`` at 224 px (the paper's setting) under SPEC §10.1's protocol: eval mode, no
    grad, random input, FP32, default memory format, cudnn.benchmark on CUDA, warm-up dropped, mean in ms."""
    device = evaluate.latency_device
    if device == "cuda" and not torch.cuda.is_available():
        raise DensenasError("evaluate.latency_device is 'cuda' but CUDA is not available on this machine")
    previous = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        with torch.random.fork_rng(devices=[]):
            shape = (evaluate.latency_batch, 3, PAPER_INPUT_SIZE, PAPER_INPUT_SIZE)
            stats = measure_latency(net.to(device), shape, device=device, warmup=evaluate.latency_warmup,
                                    repeats=evaluate.latency_repeats)
    finally:
        torch.backends.cudnn.benchmark = previous
        net.cpu()
    return {
        "mean_ms": stats.mean_ms,
        "std_ms": stats.std_ms,
        "median_ms": stats.median_ms,
        "protocol": {
            "device": device,
            "device_name": device_info(device)["name"],
            "batch": evaluate.latency_batch,
            "input_size": PAPER_INPUT_SIZE,
            "num_classes": PAPER_NUM_CLASSES,
            "dtype": "float32",
            "memory_format": "contiguous",
            "cudnn_benchmark": device == "cuda",
            "threads": torch.get_num_threads(),
            "warmup": evaluate.latency_warmup,
            "repeats": stats.count,
            "statistic": "mean",
            "torch": torch.__version__,
        },
    }


def evaluate_model(model_source: str, *, name: str, checkpoint: Path, val_loader: Any, num_classes: int,
                   params: Params, device: str, lut: Path | None = None, time_latency: bool = True) -> dict[str, Any]:
    """The record of ``results/eval/{name}/metrics.json``; ``time_latency`` False leaves the measured latency
    (None) to the pipeline's latency job (:mod:`densenas.table_latency`)."""
    predicted = None if lut is None else predicted_latency(model_source, lut)  # first: a bad LUT fails fast
    net, payload = load_trained(model_source, checkpoint, num_classes)
    accuracy = evaluate_accuracy(net.to(device), val_loader, device=torch.device(device))
    input_size = params.data.input_size
    net_224 = create_model(model_source, num_classes=PAPER_NUM_CLASSES)  # the paper's figures: 1000 classes, 224 px
    return {
        "model": name,
        "checkpoint": str(checkpoint),
        "checkpoint_epoch": payload.get("epoch", payload.get("state", {}).get("epoch")),
        "dataset": params.dataset,
        "split": "val",
        "images": accuracy.count,
        "top1": accuracy.top1,
        "top5": accuracy.top5,
        "crop": f"resize {params.data.eval_resize} + centre crop {input_size}",
        "num_classes": num_classes,
        "params": count_params(net),
        "params_m": count_params(net) / 1e6,
        "input_size": input_size,
        "mult_adds_m": count_mult_adds(net.cpu(), (1, 3, input_size, input_size)) / 1e6,
        "params_m_224": count_params(net_224) / 1e6,
        "mult_adds_m_224": count_mult_adds(net_224, (1, 3, PAPER_INPUT_SIZE, PAPER_INPUT_SIZE)) / 1e6,
        "latency": measured_latency(net_224, params.evaluate) if time_latency else None,
        "lut_latency": predicted,
        "lut_titanxp_ms": titanxp_latency_ms(model_source),
        "params_digest": params.digest,
    }


def predicted_latency(model_source: str, lut: Path) -> dict[str, Any]:
    """The chained-cost prediction (SPEC §5.3) of a DenseNAS-family network from a per-op latency LUT: p = 1 along
    the net_config's node path, one-hot op weights, and the skip layers the net_config dropped (Q16) placed after
    its kept ops. Recorded with the LUT's own input size, batch, classes (Q12) and device."""
    config = _net_config(model_source)
    space, topology = _space_of(config)
    doc = read_lut(lut)
    table = load_cost_table(lut, space, topology, input_size=doc["input_size"], batch=doc["batch"], metric="latency")
    value = _path_cost(model_source, config, space, topology, table)
    return {"latency_ms": value, "unit": doc["units"], "lut": str(lut), "skip_placement": "after the kept ops",
            "input_size": doc["input_size"], "batch": doc["batch"], "num_classes": doc["num_classes"],
            "dtype": doc["dtype"], "device": doc["device"].get("name")}


def titanxp_latency_ms(model_source: str) -> float | None:
    """The path sum of an MBV2 DenseNAS-family network over the official TITAN-XP batch-32 table, every stacked
    layer with its own row (SPEC §5.3: DenseNAS-A/B/C 13.646 / 15.817 / 18.012 ms): the one latency figure that
    lines up with the paper's, whatever device this run measured on. None for other networks."""
    if model_source in list_models() and get_entry(model_source).net_config is None:
        return None  # a torchvision baseline
    config = _net_config(model_source)
    if config.net_type != "mbv2" or config.node_path is None:
        return None
    space, topology = _space_of(config)
    table, _ = official_cost_table(space)
    return _path_cost(model_source, config, space, topology, table)


def _space_of(config: NetConfig) -> tuple[SearchSpace, Topology]:
    space = load_space(SPACE_OF_NET_TYPE.get(config.net_type, config.net_type))
    return space, build_topology(space)


def _path_cost(model_source: str, config: NetConfig, space: SearchSpace, topology: Topology,
               table: CostTable) -> float:
    """p = 1 along the node path, one-hot ops, dropped layers as skips after the kept ops (Q16)."""
    path = config.node_path
    if path is None:
        raise DensenasError(f"{model_source}: the net_config has no node_path, so its LUT latency cannot be predicted")
    routing = config.blocks[1:] if space.family == "mbv2" else config.blocks  # MBV2: blocks[0] is the fixed block
    if len(routing) != len(path) - 2:
        raise DensenasError(f"{model_source}: {len(routing)} routing blocks but node_path {list(path)}")
    stack_ops = []
    for spec, node in zip(routing, path[1:-1], strict=True):
        skips = topology.stacked_layers[node] - len(spec.stack_ops)
        stack_ops.append([space.stack_ops.index(op) for op in (*spec.stack_ops, *[SKIP] * skips)])
    return architecture_cost(topology, table, path, [space.head_ops.index(s.head_op) for s in routing], stack_ops)


def _net_config(model_source: str) -> NetConfig:
    """A net_config file, or a registered DenseNAS model with the node path published beside it."""
    if model_source not in list_models():
        return load_net_config(model_source)
    config = get_entry(model_source).net_config
    if config is None:
        raise DensenasError(f"{model_source}: not a DenseNAS-family model, it has no LUT latency")
    published = published_archs()["models"].get(model_source, {})
    if config.node_path is None and published.get("node_path") is not None:
        config = dataclasses.replace(config, node_path=tuple(published["node_path"]))
    return config
