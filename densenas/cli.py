"""The ``densenas`` command: one sub-command per pipeline stage; the only bridge between params and library.

Expected user errors (:class:`DensenasError`, and OS errors about a named file: missing, in the way, not
permitted, disk full) print one line on stderr and exit with code 2, no traceback. Anything else is a bug in
densenas: its traceback is printed, followed by a line that says so, and the exit code is 1.
"""

from __future__ import annotations

import argparse
import errno
import json
import math
import os
import sys
import traceback
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from densenas import limits
from densenas.atomic import check_writable, check_writable_dir
from densenas.config import Params, load_params, parse_set_items
from densenas.errors import DensenasError
from densenas.preemption import EXIT_PREEMPTED, Preempted
from densenas.tracking import StageRecord, log_stage

EXIT_USER_ERROR = 2
EXIT_INTERNAL_ERROR = 1
_ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


def _bounded_int(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: a whole number in [low, high], so a size is refused before anything is allocated."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected {low} to {high}, got {value}")
        return value
    return parse


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (math.isfinite(value) and 0 < value < 1):
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1 (exclusive), got {text}")
    return value


_INPUT_SIZE = _bounded_int(16, limits.MAX_INPUT_SIZE)
_CLASSES = _bounded_int(1, limits.MAX_CLASSES)
_BATCH = _bounded_int(1, limits.MAX_BATCH)


def _params(args: argparse.Namespace) -> Params:
    return load_params(args.params, preset=args.preset, overrides=parse_set_items(args.set))


def _stage_params(args: argparse.Namespace) -> Params:
    """Params for a stage that logs to MLflow: an unreachable tracking store fails now, not after the work."""
    from densenas.tracking import check_tracking

    params = _params(args)
    check_tracking(params)
    return params


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2))


def cmd_info(args: argparse.Namespace) -> None:
    from densenas.complexity import complexity
    from densenas.registry import create_model

    model = create_model(args.model, num_classes=args.num_classes)
    cost = complexity(model, input_size=args.input_size)
    _print_json({
        "model": args.model,
        "input_size": args.input_size,
        "num_classes": args.num_classes,
        "params": cost.params,
        "params_m": round(cost.params_m, 3),
        "mult_adds": cost.mult_adds,
        "mult_adds_m": round(cost.mult_adds_m, 2),
    })


def cmd_zoo(args: argparse.Namespace) -> None:
    from densenas.complexity import complexity
    from densenas.registry import create_model, get_entry, list_models

    print(f"{'model':<22} {'paper name':<34} {'family':<9} {'params (M)':>10} {'mult-adds (M)':>13}")
    for name in list_models():
        entry = get_entry(name)
        cost = complexity(create_model(name), input_size=args.input_size)
        print(f"{name:<22} {entry.paper_name[:34]:<34} {entry.family:<9} {cost.params_m:>10.3f} "
              f"{cost.mult_adds_m:>13.2f}")


def cmd_params(args: argparse.Namespace) -> None:
    params = _params(args)
    print(yaml.safe_dump(params.raw, sort_keys=False), end="")


def cmd_prepare(args: argparse.Namespace) -> None:
    import time

    from densenas.data import prepare

    params = _stage_params(args)
    out = Path(args.out or f"data/prepared/{params.dataset}")
    start = time.perf_counter()
    manifest = prepare(args.source or [params.data.raw_dir], out, params.data)
    counts = ", ".join(f"{name} {split['count']} ({split['num_classes']} classes, {len(split['skipped'])} skipped)"
                       for name, split in manifest["splits"].items())
    print(f"prepare {params.data.source}: {counts}; {time.perf_counter() - start:.1f} s -> {out}", file=sys.stderr)
    log_stage(params, StageRecord(stage="prepare", manifest_file=out / "manifest.json",
                                  artifacts=[out / "manifest.json"]))


def cmd_random_arch(args: argparse.Namespace) -> None:
    from densenas.arch import sample_arch_near, to_net_config
    from densenas.atomic import write_json
    from densenas.complexity import count_mult_adds
    from densenas.models import build_network
    from densenas.net_config import load_net_config
    from densenas.spaces import build_topology, load_space

    params = _stage_params(args)
    check_writable(args.out)
    space = load_space(args.space)
    topology = build_topology(space)
    target = count_mult_adds(build_network(load_net_config(args.match)), (1, 3, 224, 224))
    arch, mult_adds = sample_arch_near(space, topology, target, tolerance=args.tolerance, seed=params.seed)
    write_json(args.out, to_net_config(arch, space, topology).to_dict())
    print(f"random architecture {list(arch.path)}: {mult_adds / 1e6:.2f} M mult-adds "
          f"(target {target / 1e6:.2f} M ±{args.tolerance:.0%})", file=sys.stderr)
    log_stage(params, StageRecord(stage="random_arch", space=space.name, model=f"{space.name}-random",
                                  artifacts=[Path(args.out)],
                                  extra_params={"mult_adds_m": mult_adds / 1e6, "target_mult_adds_m": target / 1e6}))


def _or(value: Any, default: Any) -> Any:
    """A command-line value when given (0 included), else the params default."""
    return default if value is None else value


def cmd_lut(args: argparse.Namespace) -> None:
    import time

    from densenas.lut import build_lut, write_lut
    from densenas.lut.lut_file import CalibrationSettings
    from densenas.official_lut import official_lut_document
    from densenas.spaces import load_space

    check_writable(args.out)
    space = load_space(args.space)
    if args.from_official:
        doc, report = official_lut_document(args.from_official, space)
        write_lut(args.out, doc)
        print(f"lut {space.name}: {len(doc['entries'])} signatures from {report.used_values} of {report.values} "
              f"official values ({report.surplus_values} surplus, not used) -> {args.out}", file=sys.stderr)
        return
    params = _stage_params(args)
    start = time.perf_counter()
    doc = build_lut(
        space, metric=args.metric, input_size=_or(args.input_size, params.data.input_size),
        batch=_or(args.batch, params.lut.batch), dtype=_or(args.dtype, params.lut.dtype),
        num_classes=args.num_classes, device=_or(args.device, params.lut.device), warmup=params.lut.warmup,
        repeats=params.lut.repeats, threads=params.lut.threads,
        calibration=(CalibrationSettings(params.lut.calibration_archs, params.lut.calibration_rounds, params.seed)
                     if params.lut.method == "calibrated" and args.metric == "latency" else None),
    )
    write_lut(args.out, doc)
    fit = doc.get("calibration")
    how = (f"calibrated on {fit['archs']} networks (+{fit['per_op_ms']:.4f} ms per op, +{fit['offset_ms']:.3f} ms "
           f"per network, fit MAPE {fit['fit_mape_pct']:.1f} %)" if fit else "isolated ops")
    print(f"lut {space.name}: {len(doc['entries'])} ops, {doc['metric']} in {doc['units']}, {how}, on "
          f"{doc['device']['name']}, {time.perf_counter() - start:.1f} s -> {args.out}", file=sys.stderr)
    log_stage(params, StageRecord(stage="lut", space=space.name, artifacts=[Path(args.out)],
                                  extra_params={"metric": doc["metric"], "device": doc["device"]["name"],
                                                "method": doc.get("method", "analytic")}))


def cmd_search(args: argparse.Namespace) -> None:
    from densenas.distributed import init_distributed, shutdown
    from densenas.search.job import make_job
    from densenas.search.loop import WARMUP, run_search

    params = _stage_params(args)
    space = args.space or params.search.space
    variant = None if args.warmup else args.variant
    data_dir = Path(args.data or f"data/prepared/{params.dataset}")
    out = Path(args.out or f"results/search/{space}/{variant or WARMUP}")
    check_writable_dir(out)
    if args.lut and params.lut.source == "official":
        print(f"search: lut.source is official: searching against the shipped TITAN-XP table, not {args.lut}",
              file=sys.stderr)
    ctx = init_distributed(args.device)
    try:
        job = make_job(params, ctx, space_name=space, variant=variant, lut=Path(args.lut) if args.lut else None,
                       prepared_dir=data_dir, out_dir=out,
                       warmup_from=Path(args.warmup_from) if args.warmup_from else None)
        run_search(job, ctx)
    finally:
        shutdown(ctx)
    if not ctx.is_main:
        return
    metrics = json.loads((out / "metrics.json").read_text())
    derived = metrics["derived"]
    print(f"search {space}/{job.variant}: {metrics['epochs']} epochs, {metrics['search_hours'] * 60:.1f} min on "
          f"{metrics['device']}; derived path {derived['path']}, {derived['mult_adds_m_224']:.1f} M mult-adds at "
          f"224 -> {out}", file=sys.stderr)
    log_stage(params, StageRecord(
        stage="search", space=space, variant=job.variant, metrics_file=out / "metrics.json",
        history_file=out / "history.csv", manifest_file=data_dir / "manifest.json",
        artifacts=[out / "arch_params.json", out / "net_config.json", out / "net_config.txt"],
        extra_params={"lut_source": metrics["lut_source"]},
    ))


def cmd_derive(args: argparse.Namespace) -> None:
    from densenas.search.records import derive_from_arch_params, write_net_config

    params = _stage_params(args)
    out = Path(args.out or Path(args.arch_params).with_name("net_config.json"))
    check_writable(out)
    check_writable(out.with_suffix(".txt"))
    config = derive_from_arch_params(Path(args.arch_params), args.epoch or params.search.retrain_epoch)
    write_net_config(out, config)
    print(f"derive: path {list(config.node_path or ())}, {len(config.blocks)} blocks -> {out} "
          f"(+ {out.with_suffix('.txt').name})", file=sys.stderr)
    space = "mbv2" if config.net_type == "mbv2" else "resnet"
    log_stage(params, StageRecord(stage="derive", space=space, variant=out.parent.name,
                                  model=f"{space}-{out.parent.name}", artifacts=[out, out.with_suffix(".txt")]))


def cmd_report(args: argparse.Namespace) -> None:
    from densenas import report

    params = _stage_params(args)
    paths = report.ResultPaths(Path(args.results))
    models = report.table_models(args.space, params)
    out = Path(args.out)
    if args.what == "table":
        check_writable(out)
        report.write_table(report.build_table(args.space, models, paths, params), out)
        written = [out]
    else:
        check_writable_dir(out)
        written = [out / f"{name}.png" for name in ("accuracy_vs_latency", "beta_evolution", "training_curves")]
        report.figure_accuracy_vs_latency(args.space, models, paths, params, written[0])
        variant = params.report.random_search_variant
        report.figure_beta_evolution(paths.search_dir(args.space, variant) / "arch_params.json", written[1])
        report.figure_training_curves(models, paths, written[2])
    log_stage(params, StageRecord(stage=f"report_{args.what}", space=args.space, artifacts=written))


def cmd_convert_official(args: argparse.Namespace) -> None:
    from densenas.official_weights import convert_official, read_official_state_dict, write_converted

    source = Path(args.checkpoint)
    net = convert_official(read_official_state_dict(source), args.model, str(source))
    write_converted(net, Path(args.out), source, args.model)
    print(f"convert-official {args.model}: {len(net.state_dict())} tensors from {source} -> {args.out} (evaluate "
          f"with `densenas evaluate --model {args.model} --checkpoint {args.out}` on 1000-class ImageNet val)",
          file=sys.stderr)


def cmd_train(args: argparse.Namespace) -> None:
    from densenas.registry import list_models
    from densenas.train.stage import run_name, run_training, space_of

    params = _stage_params(args)
    name = args.name or run_name(args.model)
    data_dir = Path(args.data or f"data/prepared/{params.dataset}")
    out = Path(args.out or f"results/train/{name}")
    check_writable_dir(out)
    metrics = run_training(args.model, params, name=name, data_dir=data_dir, out_dir=out, device=args.device)
    if int(os.environ.get("RANK", "0")) != 0:
        return
    best, last = metrics["best"], metrics["last"]
    print(f"train {name}: best val top-1 {best['top1']:.2f} (epoch {best['epoch']}), last {last['top1']:.2f}; "
          f"{metrics['wall_s']:.1f} s -> {out}", file=sys.stderr)
    network = None
    if params.tracking.enabled and args.model not in list_models():  # a searched (derived) or random-search net
        from densenas.evaluate import load_trained

        network, _ = load_trained(args.model, out / "best.pt", metrics["num_classes"])
    log_stage(params, StageRecord(stage="train", space=space_of(args.model), model=name,
                                  metrics_file=out / "metrics.json", history_file=out / "history.csv",
                                  manifest_file=data_dir / "manifest.json", network=network,
                                  network_input_size=params.data.input_size))


def cmd_evaluate(args: argparse.Namespace) -> None:
    import torch

    from densenas.atomic import write_json
    from densenas.data import build_loader
    from densenas.evaluate import evaluate_model
    from densenas.train.stage import num_classes_of, run_name, space_of

    params = _stage_params(args)
    torch.set_num_threads(params.lut.threads)  # the LUT's threads, so measured and predicted latency compare
    name = args.name or run_name(args.model)
    out = Path(args.out or f"results/eval/{name}/metrics.json")
    check_writable(out)  # before the evaluation, which can take an hour on ImageNet
    data_dir = Path(args.data or f"data/prepared/{params.dataset}")
    val_loader = build_loader(data_dir, "val", params.data, train=False, batch_size=params.train.batch_size,
                              seed=params.seed)
    device = args.device if args.device != "auto" else ("cuda" if _cuda_available() else "cpu")
    metrics = evaluate_model(
        args.model, name=name, checkpoint=Path(args.checkpoint or f"results/train/{name}/best.pt"),
        val_loader=val_loader, num_classes=num_classes_of(data_dir), params=params, device=device,
        lut=Path(args.lut) if args.lut else None, time_latency=args.latency,
    )
    write_json(out, metrics)
    latency = metrics["latency"]
    timed = (f"latency {latency['mean_ms']:.2f} ms ({latency['protocol']['device']}, batch "
             f"{latency['protocol']['batch']})" if latency else "latency not timed")
    print(f"evaluate {name}: top-1 {metrics['top1']:.2f} top-5 {metrics['top5']:.2f}, "
          f"{metrics['mult_adds_m_224']:.2f} M mult-adds at 224, {timed} -> {out}", file=sys.stderr)
    log_stage(params, StageRecord(stage="evaluate", space=space_of(args.model), model=name, metrics_file=out,
                                  manifest_file=data_dir / "manifest.json"))


def cmd_latency(args: argparse.Namespace) -> None:
    import torch

    from densenas.atomic import write_json
    from densenas.report import ResultPaths, table_models
    from densenas.table_latency import table_latency

    params = _stage_params(args)
    torch.set_num_threads(params.lut.threads)  # as `evaluate` times: the LUT's threads
    paths = ResultPaths(Path(args.results))
    out = Path(args.out or paths.latency(args.space))
    check_writable(out)
    record = table_latency(table_models(args.space, params), paths, params)
    write_json(out, record)
    rows = ", ".join(f"{model} {timed['mean_ms']:.2f}" for model, timed in record["models"].items())
    print(f"latency {args.space} (ms, {record['protocol']['device']}, batch {record['protocol']['batch']}, "
          f"{record['protocol']['rounds']} rounds): {rows} -> {out}", file=sys.stderr)
    log_stage(params, StageRecord(stage="latency", space=args.space, metrics_file=out))


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


class _Parser(argparse.ArgumentParser):
    """A usage error is one line too (argparse prints the usage block first), with where to look for more."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="densenas",
        description="DenseNAS reproduction pipeline. Stages: prepare, lut, search, derive, train, evaluate, report.",
    )
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    parser.add_argument("--preset", default=None, help="preset merged over params (e.g. paper); overrides the file's")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override one param, e.g. --set train.epochs=2 (repeatable)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    info = sub.add_parser("info", help="params and mult-adds of a registered model or a net_config file (JSON)")
    info.add_argument("model", help="registered model name (see `densenas zoo`) or a net_config path")
    info.add_argument("--input-size", type=_INPUT_SIZE, default=224)
    info.add_argument("--num-classes", type=_CLASSES, default=1000)
    info.set_defaults(func=cmd_info)

    zoo = sub.add_parser("zoo", help="summary of every registered model (params, mult-adds)")
    zoo.add_argument("--input-size", type=_INPUT_SIZE, default=224)
    zoo.set_defaults(func=cmd_zoo)

    prep = sub.add_parser("prepare", help="raw ImageNet or the embedded Fashion-MNIST -> packed search/train splits")
    prep.add_argument("--source", nargs="+", default=None, metavar="DIR_OR_FILES",
                      help="a folder (ImageFolder tree, official archives, Fashion-MNIST IDX files) or the three "
                           "ILSVRC2012 archives (default: params data.raw_dir; the kind is data.source)")
    prep.add_argument("--out", default=None, help="output folder (default: data/prepared/{params dataset})")
    prep.set_defaults(func=cmd_prepare)

    rand = sub.add_parser("random-arch", help="the Random Search baseline: a random architecture of the space "
                          "whose mult-adds match a given net_config")
    rand.add_argument("--space", required=True, choices=["mbv2", "resnet"])
    rand.add_argument("--match", required=True, help="net_config whose mult-adds (224, 1000 classes) to match")
    rand.add_argument("--tolerance", type=_fraction, default=0.05, help="relative tolerance (default 0.05)")
    rand.add_argument("--out", required=True, help="net_config.json to write")
    rand.set_defaults(func=cmd_random_arch)

    lut = sub.add_parser("lut", help="per-op cost table of a search space's supernet (latency or FLOPs), or an "
                         "official table converted to the LUT format")
    lut.add_argument("--space", required=True, choices=["mbv2", "resnet"])
    lut.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: params lut.device")
    lut.add_argument("--batch", type=_BATCH, default=None, help="default: params lut.batch (FLOPs: always 1)")
    lut.add_argument("--input-size", type=_INPUT_SIZE, default=None, help="default: params data.input_size")
    lut.add_argument("--dtype", choices=["float32", "bfloat16"], default=None, help="default: params lut.dtype")
    lut.add_argument("--metric", choices=["latency", "flops"], default="latency")
    lut.add_argument("--num-classes", type=_CLASSES, default=100,
                     help="classes of the costed classifier (default 100: the search head, SPEC Q12)")
    lut.add_argument("--from-official", metavar="FILE", default=None,
                     help="convert an official nested-list table (a path, or a shipped name such as "
                          "lat_list_densenas_mbv2_xp32) instead of measuring; other options are ignored")
    lut.add_argument("--out", required=True, help="LUT JSON to write (pipeline: results/luts/{space}/{tag}.json)")
    lut.set_defaults(func=cmd_lut)

    search = sub.add_parser("search", help="DenseNAS search of one space: the shared warm-up (--warmup) or a variant's "
                            "architecture search (resumable; run under torchrun for DDP)")
    search.add_argument("--space", choices=["mbv2", "resnet"], default=None, help="default: params search.space")
    which = search.add_mutually_exclusive_group(required=True)
    which.add_argument("--variant", help="a variant of params search.spaces.<space>.variants (its λ, τ, objective)")
    which.add_argument("--warmup", action="store_true", help="run only the weights-only warm-up epochs")
    search.add_argument("--warmup-from", default=None, metavar="CHECKPOINT",
                        help="start the variant's architecture phase from this finished warm-up checkpoint")
    search.add_argument("--lut", default=None, help="latency LUT JSON (latency variants; from `densenas lut`); not "
                        "used under lut.source: official, which reads the shipped TITAN-XP table")
    search.add_argument("--data", default=None, help="prepared dataset (default: data/prepared/{params dataset})")
    search.add_argument("--out", default=None, help="output folder (default: results/search/{space}/{variant})")
    search.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    search.set_defaults(func=cmd_search)

    derive = sub.add_parser("derive", help="net_config (JSON + official string .txt) from a search's arch_params.json")
    derive.add_argument("--arch-params", required=True, help="arch_params.json written by `densenas search`")
    derive.add_argument("--epoch", default=None, help="last, best_supernet_val (the search epoch with the best "
                        "supernet val top-1), init, or an epoch number (default: params search.retrain_epoch)")
    derive.add_argument("--out", default=None, help="net_config.json to write (default: beside the arch params)")
    derive.set_defaults(func=cmd_derive)

    rep = sub.add_parser("report", help="the paper's tables beside this run's results; figures")
    rep.add_argument("what", choices=["table", "figures"])
    rep.add_argument("--space", required=True, choices=["mbv2", "resnet"])
    rep.add_argument("--results", default="results", help="results folder (default: results)")
    rep.add_argument("--out", required=True, help="CSV file (table) or folder (figures)")
    rep.set_defaults(func=cmd_report)

    train = sub.add_parser("train", help="retrain a model with the paper's recipe (SPEC §8); resumes from "
                           "checkpoint.pt; run under torchrun for DDP")
    train.add_argument("--model", required=True, help="registered model name (see `densenas zoo`) or a net_config path")
    train.add_argument("--name", default=None, help="run name (default: the model name, or {space}-{variant} for "
                       "results/search/{space}/{variant}/net_config.json)")
    train.add_argument("--data", default=None, help="prepared dataset (default: data/prepared/{params dataset})")
    train.add_argument("--out", default=None, help="output folder (default: results/train/{name})")
    train.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    train.set_defaults(func=cmd_train)

    evaluate = sub.add_parser("evaluate", help="top-1/top-5 on val, params, mult-adds, measured and LUT-predicted "
                              "latency of a trained model")
    evaluate.add_argument("--model", required=True, help="registered model name or a net_config path")
    evaluate.add_argument("--name", default=None, help="run name (default: as for train)")
    evaluate.add_argument("--checkpoint", default=None, help="default: results/train/{name}/best.pt")
    evaluate.add_argument("--data", default=None, help="prepared dataset (default: data/prepared/{params dataset})")
    evaluate.add_argument("--lut", default=None, help="per-op latency LUT of the model's search space: adds the "
                          "chained-cost prediction (DenseNAS-family models)")
    evaluate.add_argument("--out", default=None, help="default: results/eval/{name}/metrics.json")
    evaluate.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                          help="where the accuracy is computed (latency: params evaluate.latency_device)")
    evaluate.add_argument("--no-latency", dest="latency", action="store_false",
                          help="do not time the network (the pipeline times a table's networks in one `latency` job)")
    evaluate.set_defaults(func=cmd_evaluate)

    latency = sub.add_parser("latency", help="measured end-to-end latency of every model of a table, timed in one "
                             "job in interleaved rounds (params evaluate.latency_*)")
    latency.add_argument("--space", required=True, choices=["mbv2", "resnet"])
    latency.add_argument("--results", default="results", help="results folder with the searched net_configs "
                         "(default: results)")
    latency.add_argument("--out", default=None, help="default: {results}/latency/{space}.json")
    latency.set_defaults(func=cmd_latency)

    convert = sub.add_parser("convert-official", help="map an official DenseNAS-A/B/C checkpoint (the authors' "
                             "published weights) onto the zoo model, as a checkpoint `densenas evaluate` accepts")
    convert.add_argument("checkpoint", help="official state dict (.pth; `module.` prefix and a wrapping dict are "
                         "accepted); loaded with weights_only=True")
    convert.add_argument("--model", required=True, help="densenas_a, densenas_b or densenas_c")
    convert.add_argument("--out", required=True, help="checkpoint to write (e.g. results/train/densenas_c_official/"
                         "best.pt)")
    convert.set_defaults(func=cmd_convert_official)

    show = sub.add_parser("params", help="print the resolved, validated params (preset and --set applied)")
    show.set_defaults(func=cmd_params)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], None] = args.func
    try:
        func(args)
    except Preempted as exc:
        print(f"densenas: {exc} (exit {EXIT_PREEMPTED}: run again to resume)", file=sys.stderr)
        return EXIT_PREEMPTED
    except DensenasError as exc:
        return _user_error(str(exc))
    except OSError as exc:
        if exc.filename is None and exc.errno not in _ENVIRONMENT_ERRNOS:
            return _internal_error()
        where = f"{exc.filename}: " if exc.filename is not None else ""
        return _user_error(f"{where}{exc.strerror or exc.__class__.__name__}")
    except Exception:
        return _internal_error()
    return 0


def _user_error(message: str) -> int:
    print(f"densenas: error: {' '.join(message.splitlines())}", file=sys.stderr)
    return EXIT_USER_ERROR


def _internal_error() -> int:
    """A failure no input check foresaw: the traceback is the bug report, the last line says so."""
    traceback.print_exc()
    print("densenas: internal error: this is a bug in densenas, not a problem with your input; please report it "
          "with the traceback above", file=sys.stderr)
    return EXIT_INTERNAL_ERROR


if __name__ == "__main__":
    sys.exit(main())
