"""The ``densenas`` command: one sub-command per pipeline stage; the only bridge between params and library.

Expected user errors (:class:`DensenasError`) print one line on stderr and exit with code 2, no traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from densenas.config import Params, load_params
from densenas.errors import DensenasError

EXIT_USER_ERROR = 2


def _parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``--set a.b=3`` pairs into a nested mapping (values parsed as YAML scalars)."""
    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise DensenasError(f"--set {item!r}: expected KEY.PATH=VALUE")
        node = overrides
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)
    return overrides


def _params(args: argparse.Namespace) -> Params:
    return load_params(args.params, preset=args.preset, overrides=_parse_overrides(args.set))


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


def cmd_random_arch(args: argparse.Namespace) -> None:
    from densenas.arch import sample_arch_near, to_net_config
    from densenas.atomic import write_json
    from densenas.complexity import count_mult_adds
    from densenas.models import build_network
    from densenas.net_config import load_net_config
    from densenas.spaces import build_topology, load_space

    params = _params(args)
    space = load_space(args.space)
    topology = build_topology(space)
    target = count_mult_adds(build_network(load_net_config(args.match)), (1, 3, 224, 224))
    arch, mult_adds = sample_arch_near(space, topology, target, tolerance=args.tolerance, seed=params.seed)
    write_json(args.out, to_net_config(arch, space, topology).to_dict())
    print(f"random architecture {list(arch.path)}: {mult_adds / 1e6:.2f} M mult-adds "
          f"(target {target / 1e6:.2f} M ±{args.tolerance:.0%})", file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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
    info.add_argument("--input-size", type=int, default=224)
    info.add_argument("--num-classes", type=int, default=1000)
    info.set_defaults(func=cmd_info)

    zoo = sub.add_parser("zoo", help="summary of every registered model (params, mult-adds)")
    zoo.add_argument("--input-size", type=int, default=224)
    zoo.set_defaults(func=cmd_zoo)

    rand = sub.add_parser("random-arch", help="the Random Search baseline: a random architecture of the space "
                          "whose mult-adds match a given net_config")
    rand.add_argument("--space", required=True, choices=["mbv2", "resnet"])
    rand.add_argument("--match", required=True, help="net_config whose mult-adds (224, 1000 classes) to match")
    rand.add_argument("--tolerance", type=float, default=0.05, help="relative tolerance (default 0.05)")
    rand.add_argument("--out", required=True, help="net_config.json to write")
    rand.set_defaults(func=cmd_random_arch)

    show = sub.add_parser("params", help="print the resolved, validated params (preset and --set applied)")
    show.set_defaults(func=cmd_params)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], None] = args.func
    try:
        func(args)
    except DensenasError as exc:
        print(f"densenas: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except FileNotFoundError as exc:
        print(f"densenas: error: {Path(exc.filename or '')}: file not found", file=sys.stderr)
        return EXIT_USER_ERROR
    return 0


if __name__ == "__main__":
    sys.exit(main())
