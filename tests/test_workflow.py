"""The workflow definitions: Snakemake lint is clean, and dvc.yaml declares the same DAG (commands and outputs)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
REDIRECT = re.compile(r"\s*>\s*\S+\s+2>&1\s*$")


def _snakemake(*args: str) -> str:
    result = subprocess.run([str(BIN / "snakemake"), *args], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


def test_snakemake_lint_is_clean() -> None:
    out = _snakemake("--lint")
    assert "Congratulations, your workflow is in a good condition!" in out, out[-3000:]


def _snakemake_jobs() -> dict[str, set[str]]:
    """Shell command (log redirection stripped) -> declared outputs, for every job of `all`."""
    jobs: dict[str, set[str]] = {}
    outputs: set[str] = set()
    for line in _snakemake("-n", "-p", "--forceall", "all").splitlines():
        if line.startswith("    output: "):
            outputs = {p.strip() for p in line.removeprefix("    output: ").split(",")}
        elif line.startswith("Shell command: ") and line != "Shell command: None":
            jobs[" ".join(REDIRECT.sub("", line.removeprefix("Shell command: ")).split())] = outputs
    return jobs


def _dvc_jobs() -> dict[str, set[str]]:
    from dvc.repo import Repo

    with Repo(str(REPO)) as repo:
        return {
            " ".join(stage.cmd.split()): {str(Path(out.fs_path).relative_to(REPO)) for out in stage.outs}
            for stage in repo.index.stages
        }


@pytest.fixture(scope="module")
def both() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    return _snakemake_jobs(), _dvc_jobs()


def test_dvc_and_snakemake_run_the_same_commands(both) -> None:
    snake, dvc = both
    assert len(snake) >= 40, f"expected the whole DAG, got {len(snake)} jobs"
    assert set(snake) - set(dvc) == set(), "commands only Snakemake runs"
    assert set(dvc) - set(snake) == set(), "commands only DVC runs"


def _covered(path: str, by: set[str]) -> bool:
    return any(path == other or path.startswith(other.rstrip("/") + "/") for other in by)


def test_dvc_and_snakemake_declare_the_same_outputs(both) -> None:
    """The same outputs, except the resume checkpoints: DVC keeps them (persist) and carries them through push and
    pull; Snakemake must not know them, or it deletes them before re-running a killed job."""
    snake, dvc = both
    for command, outputs in snake.items():
        declared = dvc[command]
        assert all(_covered(o, declared) for o in outputs), f"{command}: {outputs} vs DVC {declared}"
        dvc_only = {d for d in declared if not any(_covered(o, {d}) for o in outputs)}
        assert all(Path(d).name == "checkpoint.pt" for d in dvc_only), f"{command}: DVC only {dvc_only}"
        assert all(not o.endswith("checkpoint.pt") for o in outputs), f"{command}: Snakemake would delete {outputs}"


def test_dvc_keeps_every_resume_checkpoint() -> None:
    from dvc.repo import Repo

    with Repo(str(REPO)) as repo:
        outs = [out for stage in repo.index.stages for out in stage.outs]
    checkpoints = [out for out in outs if out.fs_path.endswith("checkpoint.pt")]
    assert len(checkpoints) >= 20 and all(out.persist for out in checkpoints)


@pytest.mark.parametrize("space", ["mbv2", "resnet"])
def test_dvc_table_depends_on_exactly_the_files_it_reads(space: str) -> None:
    """A table stage that depended on all of results/eval would make `dvc repro table_mbv2` run the ResNet search."""
    from dvc.repo import Repo

    from densenas.config import load_params
    from densenas.report import table_models

    params = load_params(REPO / "params.yaml")
    models = table_models(space, params)
    expected = {f"results/{stage}/{m}/metrics.json" for stage in ("eval", "train") for m in models}
    expected |= {f"results/search/{space}/{v}/metrics.json" for v in params.search.spaces[space].variants}
    expected.add(f"results/latency/{space}.json")
    with Repo(str(REPO)) as repo:
        stage = next(s for s in repo.index.stages if s.name == f"table_{space}")
        deps = {str(Path(dep.fs_path).relative_to(REPO)) for dep in stage.deps}
    assert deps == expected | {"densenas/report.py", "params.yaml"}  # params.yaml: the `params: [report]` entry


def test_official_lut_source_needs_no_lut_profiling_before_the_search() -> None:
    """The paper preset searches against the shipped TITAN-XP table: no `lut` job upstream of a latency search;
    the embedded default (measured) profiles one first."""
    target = "results/search/mbv2/lat_c/metrics.json"
    paper = _snakemake("-n", "--forceall", "--config", "preset=paper", "--", target)
    embedded = _snakemake("-n", "--forceall", "--", target)
    assert not re.search(r"^rule lut:", paper, re.M), paper[-2000:]
    assert re.search(r"^rule lut:", embedded, re.M), embedded[-2000:]


def _dry_run_jobs(*args: str) -> dict[str, dict[str, str]]:
    """rule name -> {"shell": command, "resources": the resources line} of a dry run."""
    jobs: dict[str, dict[str, str]] = {}
    rule = ""
    for line in _snakemake("-n", "-p", "--forceall", *args).splitlines():
        if line.startswith(("rule ", "localrule ")):
            rule = line.split()[1].rstrip(":")
            jobs[rule] = {"local": str(line.startswith("localrule "))}
        elif line.startswith("    resources: "):
            jobs[rule]["resources"] = line
        elif line.startswith("Shell command: "):
            jobs[rule]["shell"] = line
    return jobs


def test_command_line_config_wins_over_the_preset_in_every_stage() -> None:
    """`--config preset=paper 'workflow={gpus_per_job: 8}'`: the preset sets gpus_per_job too, yet the value of
    the command line reaches Snakemake's own resolution (torchrun with 8 ranks, job sizes from workflow.*) and,
    as `--set`, every stage's command; the latency table runs with the preset."""
    jobs = _dry_run_jobs("--config", "preset=paper", "workflow={gpus_per_job: 8}", "train={epochs: 3}", "--",
                         "results/train/densenas_c/metrics.json", "reports/table_latency.csv")
    train = jobs["train"]
    assert "densenas.launch --nnodes 1 --nproc-per-node 8 -- --params params.yaml --preset paper" in train["shell"]
    assert "--set workflow.gpus_per_job=8 --set train.epochs=3" in train["shell"], train["shell"]
    assert "gpu=8" in train["resources"] and "cpus_per_task=64" in train["resources"], train["resources"]
    assert "mem_mb=256000" in train["resources"] and "runtime=2880" in train["resources"], train["resources"]
    assert "--preset paper --set workflow.gpus_per_job=8" in jobs["prepare"]["shell"]
    latency = jobs["table_latency"]
    assert "latency_prediction.py --params params.yaml --preset paper" in latency["shell"], latency["shell"]
    assert "gpu=1" in latency["resources"], "the paper preset profiles latency on the GPU"


def test_light_rules_run_in_the_snakemake_process() -> None:
    """On a cluster, derive, random_arch, the tables and figures are seconds of work: local rules, not sbatch jobs;
    the stages that compute are jobs. (Read from the parsed workflow: a dry run does not show the difference.)"""
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import ResourceSettings

    with SnakemakeApi() as api:
        workflow = api.workflow(resource_settings=ResourceSettings(cores=1), snakefile=REPO / "Snakefile",
                                workdir=REPO)._workflow
        local = {rule.name for rule in workflow.rules if rule.name in workflow._localrules}
    assert {"derive", "random_arch", "table_mbv2", "table_resnet", "figures"} <= local, local
    assert not {"prepare", "lut", "search_warmup", "search", "train", "evaluate", "table_latency"} & local, local
