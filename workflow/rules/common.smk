# Shared helpers: the resolved params (preset merged, validated by densenas.config), the CLI prefix every rule
# uses, and the paths of the stage contracts (DESIGN.md).
import os
import shlex
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError

from densenas.config import command_line_overrides, load_params, set_items
from densenas.registry import list_models
from densenas.report import ResultPaths, table_models

# Rules call `densenas` and `python`: use the ones of the environment Snakemake itself runs in (e.g. .venv).
os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"

# One order everywhere: params.yaml < preset < `--config`/`--configfile` (as `--set` on the CLI). The stages get
# the preset and every command-line value as flags, so they resolve the same params as this file.
OVERRIDES = command_line_overrides(workflow.config_settings.overwrite_config)
P = load_params("params.yaml", preset=config.get("preset"), overrides=OVERRIDES)
DATASET = P.dataset
PREPARED = f"data/prepared/{DATASET}"
# `--config preset=X` on the command line must reach the stages too; a preset set in params.yaml they read themselves.
PRESET_FLAG = f" --preset {P.preset}" if P.preset != load_params("params.yaml").preset else ""
PARAMS_FLAGS = f"--params params.yaml{PRESET_FLAG}" + "".join(
    f" --set {shlex.quote(item)}" for item in set_items(OVERRIDES)
)
CLI = f"densenas {PARAMS_FLAGS}"
ZOO = set(list_models())


def lut_tag():
    """Device tag of the measured LUT: device, batch, input size and dtype it was profiled with."""
    return f"{P.lut.device}-b{P.lut.batch}-r{P.data.input_size}-{P.lut.dtype}"


def lut_file(space):
    return f"results/luts/{space}/{lut_tag()}.json"


def variants(space):
    return sorted(P.search.spaces[space].variants)


def searched_models(space):
    return [f"{space}-{v}" for v in variants(space)]


def mbv2_models():
    return table_models("mbv2", P)


def resnet_models():
    return table_models("resnet", P)


def model_source(model):
    """A zoo name, or the net_config file of a searched (`{space}-{variant}`) or random-search model."""
    return ResultPaths(Path("results")).model_source(model)


def table_models_of(space):
    return mbv2_models() if space == "mbv2" else resnet_models()


def table_net_configs(wildcards):
    """The net_config files of a table's searched and random-search networks (the latency job times them)."""
    return [model_source(m) for m in table_models_of(wildcards.space) if m not in ZOO]


def model_net_config(wildcards):
    """The net_config file a searched or random-search model is built from (zoo models need none)."""
    source = model_source(wildcards.model)
    return [] if source in ZOO else [source]


def space_of(model):
    if model in ZOO:
        return "resnet" if model.startswith("resnet") else "mbv2"
    return model.split("-", 1)[0]


def section(name):
    """One params section as a plain dict: the rule's `params:` so Snakemake reruns it when the section changes."""
    return P.raw[name]


GPUS = P.workflow.gpus_per_job
# Snakemake exports OMP_NUM_THREADS={threads} to every job. On CPU, `--cores` above the real core count (e.g.
# `--cores 8` on a laptop) runs more jobs than cores, and multi-threaded OpenMP then spin-waits: a supernet step
# took 29 s instead of 1.5 s with four 2-thread jobs on 2 cores. One thread per job uses the cores through job
# parallelism instead. A GPU job asks for workflow.cpus_per_gpu cores per GPU (its ranks' loader workers).
JOB_THREADS = 1 if GPUS == 0 else GPUS * P.workflow.cpus_per_gpu
JOB_MEM_MB = P.workflow.mem_mb if GPUS == 0 else GPUS * P.workflow.mem_mb_per_gpu
RUNTIME = P.workflow.runtime_min
# End-to-end CPU latency (the `latency` job, the latency table) is measured with every core Snakemake has reserved,
# so no other job disturbs the timing (in a table run beside nine other jobs, DenseNAS-A measured 39.9 ms one time
# and 10.3 ms another). The stages time with lut.threads torch threads whatever the reservation.
try:
    CORES = workflow.cores
except WorkflowError:  # --report, --unlock, --lint: modes that run no job and get no core count
    CORES = 1
LATENCY_THREADS = CORES if P.evaluate.latency_device == "cpu" else P.lut.threads
# Heavy stages run under torchrun when a job gets several GPUs or nodes (DDP inside the job, Snakemake across
# jobs), launched by densenas.launch: --standalone on one node; on several, slurm starts one launcher per node
# (the job's `srun`) and they meet at a c10d rendezvous on the first node. torchrun keeps an exported
# OMP_NUM_THREADS: each rank gets 2 threads, not the job's whole core count.
NODES = P.workflow.nodes_per_job
LAUNCH = f"python -m densenas.launch --nnodes {NODES} --nproc-per-node {max(GPUS, 1)} -- {PARAMS_FLAGS}"
if NODES > 1:
    DIST_CLI = f"OMP_NUM_THREADS=2 srun --ntasks-per-node=1 --ntasks={NODES} {LAUNCH}"
    # the slurm plugin's multi-task job: no srun of its own around the command, one task per node
    DIST_RESOURCES = {"nodes": NODES, "tasks": NODES, "tasks_per_gpu": 0, "mpi": "srun"}
else:
    DIST_CLI = f"OMP_NUM_THREADS=2 {LAUNCH}" if GPUS > 1 else CLI
    DIST_RESOURCES = {}


ENV = "../envs/densenas.yaml"


def search_lut(wildcards):
    """The measured LUT a latency variant optimises against; FLOPs variants compute their table on the fly, and
    `lut.source: official` reads the table shipped in the package (no LUT profiling before the search)."""
    variant = P.search.spaces[wildcards.space].variants[wildcards.variant]
    measured = variant.objective == "latency" and P.lut.source == "measured"
    return lut_file(wildcards.space) if measured else []


def lut_flag(wildcards, input):
    return f"--lut {input.lut}" if input.lut else ""


def eval_lut(wildcards):
    """DenseNAS-family MBV2 models also get their LUT-predicted latency."""
    model = wildcards.model
    family = model not in ZOO or model.startswith("densenas")
    return lut_file("mbv2") if family and space_of(model) == "mbv2" else []


def eval_metrics(models):
    return [f"results/eval/{m}/metrics.json" for m in models]


def search_metrics(space):
    return [f"results/search/{space}/{v}/metrics.json" for v in variants(space)]


# Only declared variants are searched: keeps `warmup` and `random` out of the variant wildcard.
VARIANT = "|".join(sorted({v for space in P.search.spaces for v in variants(space)}))
