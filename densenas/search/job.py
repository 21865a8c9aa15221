"""Resolve typed params and command-line paths into a :class:`SearchJob`: space, variant, cost table, identities.

The warm-up identity covers only what the warm-up depends on (data, seed, quirks, the space's schedule and
optimisers), so every variant of a space can start from the same warm-up checkpoint; a variant's identity adds
its objective and the checksum of its LUT. ``lut.source`` picks that LUT: the file the LUT stage measured, or the
official TITAN-XP table shipped for the space (the one the paper's λ and τ were tuned against).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from densenas.atomic import sha256_file
from densenas.config import Params, VariantParams, params_digest
from densenas.cost_table import CostTable
from densenas.data import read_manifest
from densenas.distributed import DistContext, per_rank_batch
from densenas.errors import DensenasError
from densenas.official_lut import official_cost_table
from densenas.search.loop import WARMUP, SearchJob
from densenas.spaces import build_topology, load_space
from densenas.spaces.space import SearchSpace

FLOPS_INPUT_SIZE = 224  # FLOPs are costed at the paper's resolution whatever the search input (SPEC §5.1)


# What only the search epochs use: the warm-up leaves these out of its digest, the search puts them in its own.
_SEARCH_ONLY = ("arch", "arch_sample_num", "arch_policy", "sample_policy")


def warmup_digest(params: Params, space: str) -> str:
    """Digest of everything the warm-up epochs depend on; the variants, the architecture optimiser and the sampling
    after the warm-up (no warm-up step uses them) are left out on purpose, so one warm-up serves every λ,
    architecture learning rate and architecture-step sample size."""
    raw = params.raw
    settings = {k: v for k, v in raw["search"]["spaces"][space].items() if k not in ("variants", *_SEARCH_ONLY)}
    return params_digest({"seed": raw["seed"], "dataset": raw["dataset"], "data": raw["data"],
                          "quirks": raw["quirks"], "amp": raw["search"]["amp"],
                          "channels_last": raw["search"]["channels_last"], "space": settings})


def make_job(params: Params, ctx: DistContext, *, space_name: str, variant: str | None, lut: Path | None,
             prepared_dir: Path, out_dir: Path, warmup_from: Path | None) -> SearchJob:
    """The search of ``variant`` of ``space_name`` (None: the shared warm-up run only)."""
    space = load_space(space_name)
    settings = params.search.spaces[space_name]
    if params.lut.source == "official":
        lut = None  # the shipped table replaces the measured one (the caller reports a --lut it was given)
    objective = _check_request(params, space_name, variant, lut, warmup_from)
    if settings.bn_group_size is not None:
        _check_bn_groups(settings.bn_group_size, per_rank_batch(settings.batch_size, ctx), space_name,
                         ctx.world_size)
    base = warmup_digest(params, space_name)
    warmup_identity = {"kind": "search", "space": space_name, "variant": WARMUP, "digest": base}
    manifest = read_manifest(prepared_dir)
    num_classes = int(manifest["splits"]["search_train"]["num_classes"])
    table, cost_source, identity = None, None, warmup_identity
    if objective is not None:
        table, cost_source = _cost_table(objective.objective, space, settings.skip_reg, lut, num_classes,
                                         params.lut.source)
        # The LUT counts by content, not by where it lies.
        cost_key = {k: v for k, v in cost_source.items() if k != "lut"}
        space_raw = params.raw["search"]["spaces"][space_name]
        identity = {"kind": "search", "space": space_name, "variant": variant,
                    "digest": params_digest({"warmup": base, "objective": space_raw["variants"][variant],
                                             "search_epochs": {k: space_raw[k] for k in _SEARCH_ONLY},
                                             "cost": cost_key})}
    info: dict[str, Any] = {"params_digest": params.digest, "search_digest": identity["digest"],
                            "lut_source": (cost_source or {}).get("lut_source"), "cost_source": cost_source}
    return SearchJob(
        space=space, settings=settings, variant=variant or WARMUP, objective=objective, cost_table=table,
        prepared_dir=prepared_dir, data=params.data, quirks=params.quirks, seed=params.seed, out_dir=out_dir,
        identity=identity, warmup_identity=warmup_identity, num_classes=num_classes,
        net_num_classes=int(manifest["splits"]["train"]["num_classes"]), warmup_from=warmup_from,
        amp=params.search.amp, channels_last=params.search.channels_last,
        checkpoint_every_steps=params.search.checkpoint_every_steps, info=info,
        device_label=device_label(ctx), world_size=ctx.world_size, retrain_epoch=params.search.retrain_epoch,
    )


def _check_bn_groups(group: int, batch: int, space: str, world_size: int) -> None:
    """Ghost BN groups live inside one process's batch: groups spanning devices would need a cross-rank BN."""
    if batch < group:
        raise DensenasError(f"search.spaces.{space}.bn_group_size {group} exceeds the per-process batch {batch} "
                            f"(batch_size over {world_size} processes): a BN group cannot span processes; run on "
                            f"at most {max(world_size * batch // group, 1)} process(es) or lower bn_group_size")
    if batch % group:
        raise DensenasError(f"search.spaces.{space}.bn_group_size {group} does not divide the per-process batch "
                            f"{batch} (batch_size over {world_size} process(es)); pick a divisor or null")


def _check_request(params: Params, space: str, variant: str | None, lut: Path | None,
                   warmup_from: Path | None) -> VariantParams | None:
    """The variant's objective (None for the warm-up run), after the checks that need no data."""
    settings = params.search.spaces[space]
    if variant is None:
        if settings.warmup_epochs == 0:
            raise DensenasError(f"search.spaces.{space}.warmup_epochs is 0: there is no warm-up to run")
        if lut is not None or warmup_from is not None:
            raise DensenasError("--warmup runs the weights-only epochs: it takes neither --lut nor --warmup-from")
        return None
    if variant == WARMUP:
        raise DensenasError(f"variant name '{WARMUP}' is reserved for the shared warm-up run (use --warmup)")
    if variant not in settings.variants:
        raise DensenasError(f"search.spaces.{space}.variants: no variant '{variant}' (expected one of: "
                            f"{', '.join(sorted(settings.variants))})")
    objective = settings.variants[variant]
    if params.search.retrain_epoch == "best_supernet_val" and max(settings.val_start_epoch,
                                                                   settings.warmup_epochs) >= settings.epochs:
        raise DensenasError(f"search.retrain_epoch is best_supernet_val but search.spaces.{space}.val_start_epoch "
                            f"({settings.val_start_epoch}) leaves no validated search epoch before epochs "
                            f"({settings.epochs}); lower val_start_epoch or use retrain_epoch: last")
    if objective.objective == "latency" and lut is None and params.lut.source == "measured":
        raise DensenasError(f"variant '{variant}' optimises latency and needs a LUT: pass --lut "
                            f"results/luts/{space}/<device>.json (made by `densenas lut`)")
    if objective.objective == "flops" and lut is not None:
        raise DensenasError(f"variant '{variant}' optimises FLOPs, which are counted on the fly: drop --lut")
    return objective


def _cost_table(objective: str, space: SearchSpace, skip_reg: bool, lut: Path | None, num_classes: int,
                lut_source: str) -> tuple[CostTable, dict[str, Any]]:
    """Latency: the measured LUT file or the official table (each at the input size and batch it was measured
    with); FLOPs: counted on the fly."""
    from densenas.lut import apply_skip_reg, flops_cost_table, load_cost_table, read_lut

    if objective == "flops":
        table = flops_cost_table(space, input_size=FLOPS_INPUT_SIZE, num_classes=num_classes, skip_reg=skip_reg)
        return table, {"type": "flops", "input_size": FLOPS_INPUT_SIZE, "skip_reg": skip_reg}
    if lut_source == "official":
        table, record = official_cost_table(space)
        return (apply_skip_reg(table, space) if skip_reg else table), {
            "type": "latency", "lut_source": "official", **record, "skip_reg": skip_reg}
    assert lut is not None, "checked by _check_request"
    doc = read_lut(lut)
    table = load_cost_table(lut, space, build_topology(space), input_size=doc["input_size"], batch=doc["batch"],
                            metric="latency", skip_reg=skip_reg)
    return table, {"type": "latency", "lut_source": "measured", "lut": str(lut), "lut_sha256": sha256_file(lut),
                   "skip_reg": skip_reg, "input_size": doc["input_size"], "batch": doc["batch"],
                   "device": doc["device"].get("name")}


def device_label(ctx: DistContext) -> str:
    """e.g. ``4 x NVIDIA H100 80GB HBM3`` or ``1 x cpu (AMD EPYC ...)``."""
    from densenas.lut.profile import device_info

    info = device_info(str(ctx.device))
    name = info["name"] if info["type"] == "cuda" else f"cpu ({info['name']})"
    return f"{ctx.world_size} x {name}"
