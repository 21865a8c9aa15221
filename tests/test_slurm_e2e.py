"""The slurm profile against a real slurm: a one-node cluster on this machine (workflow/cluster/slurm-local.sh)
runs the smoke pipeline through `--profile workflow/profiles/slurm`; the computing rules are sbatch jobs, the light
ones run in the Snakemake process, a search job told to stop by `scancel --signal=TERM` saves, exits 75 and is
submitted again (the profile's retries) to resume, and the outputs equal those of a local run."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest
from conftest import BIN, REPO, workflow_env
from workflow_fixtures import LUT, SEARCH, clone, outputs, write_preset

pytestmark = pytest.mark.e2e
CLUSTER = REPO / "workflow" / "cluster" / "slurm-local.sh"
NO_SLURM = 3  # the script's exit code when slurm is missing and cannot be installed
# No periodic checkpoints (in both runs: the params digest is in the outputs), so a search resumed mid-pass can
# only have been saved by its TERM handler; also a --config value that must reach the stages past the preset.
CONFIG = ["--config", "search={checkpoint_every_steps: 0}", "--"]
SLURM_ARGS = ["--profile", "workflow/profiles/slurm", "--jobs", "2", "--slurm-keep-successful-logs",
              # no accounting database on the local cluster: job states from squeue; the plugin waits 1 s, then
              # 10 s longer each round until a job ends (1, 12, 33 s: a ~25 s smoke job is seen at 33 s, not 45 s)
              "--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "1"]
IN_ARCH_PASS = re.compile(r"epoch 1 arch: .*\| [1-4]/5 ")  # tqdm: a step of the 5-step architecture pass done
TARGETS = [LUT, f"{SEARCH}/net_config.json"]  # through the search and derive (retraining adds no new kind of job)
JOB_RULES = {"prepare", "lut", "search_warmup", "search"}
LOCAL_RULES = {"derive"}


@pytest.fixture(scope="module")
def cluster() -> None:
    started = subprocess.run(["bash", str(CLUSTER), "start"], capture_output=True, text=True, timeout=900)
    if started.returncode == NO_SLURM:
        print(started.stderr)
        pytest.skip(f"no local slurm: {started.stderr.strip()}")
    assert started.returncode == 0, started.stdout + started.stderr
    yield
    subprocess.run(["bash", str(CLUSTER), "stop"], capture_output=True, timeout=120)


def _search_job_id() -> str | None:
    """The slurm job id of the running search variant (the plugin's comment names the rule)."""
    queue = subprocess.run(["squeue", "-h", "-t", "RUNNING", "-o", "%i %k"], capture_output=True, text=True,
                           check=True).stdout
    return next((line.split()[0] for line in queue.splitlines() if " rule_search_" in line), None)


@pytest.fixture(scope="module")
def runs(cluster: None, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """(local clone, slurm clone, the slurm output); the search job is sent TERM inside its architecture pass."""
    preset = write_preset(tmp_path_factory.mktemp("preset"))
    local, on_slurm = (clone(tmp_path_factory.mktemp(name), preset) for name in ("local", "slurm"))
    reference = subprocess.Popen([str(BIN / "snakemake"), "--cores", "1", *CONFIG, *TARGETS], cwd=local,
                                 env=workflow_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = on_slurm / "snakemake.out"
    try:
        with log.open("w") as out:
            process = subprocess.Popen([str(BIN / "snakemake"), *SLURM_ARGS, *CONFIG, *TARGETS], cwd=on_slurm,
                                       env=workflow_env(), stdout=out, stderr=subprocess.STDOUT)
            stage_log, deadline = on_slurm / "logs/search/mbv2/flops_c.log", time.monotonic() + 900
            while not (stage_log.is_file() and IN_ARCH_PASS.search(stage_log.read_text().replace("\r", "\n"))
                       and (job := _search_job_id())):
                assert process.poll() is None, log.read_text()[-4000:]
                assert time.monotonic() < deadline, "the search job never reached its architecture pass"
                time.sleep(0.1)
            subprocess.run(["scancel", "--signal=TERM", job], check=True)
            assert process.wait(timeout=900) == 0, log.read_text()[-4000:]
        assert reference.wait(timeout=900) == 0
    finally:
        reference.kill()
        subprocess.run(["scancel", "--user", "root"], capture_output=True)  # nothing of a failed run left queued
    return local, on_slurm, log.read_text()


def _slurm_jobs_of(work: Path) -> dict[str, list[Path]]:
    """Rule name -> the plugin's per-job slurm logs (one file per submitted job)."""
    logs = work / ".snakemake" / "slurm_logs"
    return {folder.name.removeprefix("rule_"): sorted(folder.rglob("*.log")) for folder in logs.glob("rule_*")}


def test_computing_rules_ran_as_slurm_jobs_and_light_ones_locally(runs: tuple[Path, Path, str]) -> None:
    _, on_slurm, output = runs
    jobs = _slurm_jobs_of(on_slurm)
    assert JOB_RULES <= set(jobs), sorted(jobs)
    assert not LOCAL_RULES & set(jobs), f"light rules were submitted: {sorted(LOCAL_RULES & set(jobs))}"
    assert all(f"localrule {rule}:" in output for rule in LOCAL_RULES), output[-3000:]
    assert (on_slurm / SEARCH / "net_config.json").is_file(), "derive ran (locally)"


def test_a_terminated_search_is_resubmitted_and_resumes(runs: tuple[Path, Path, str]) -> None:
    _, on_slurm, _ = runs
    assert len(_slurm_jobs_of(on_slurm)["search"]) == 2, "one TERMed job and its retry"
    resumed = re.search(r"resumed from \S+ \(epoch 1, arch phase, step (\d+)\)",
                        (on_slurm / "logs/search/mbv2/flops_c.log").read_text())
    assert resumed and int(resumed.group(1)) > 0, "the retry resumed inside the pass its TERM handler saved"


def test_slurm_outputs_equal_the_local_run(runs: tuple[Path, Path, str]) -> None:
    local, on_slurm, _ = runs
    expected, got = outputs(local), outputs(on_slurm)
    assert sorted(got) == sorted(expected) and len(expected) >= 15
    differing = [name for name in expected if got[name] != expected[name]]
    assert not differing, f"outputs differ between slurm and local runs: {differing}"
