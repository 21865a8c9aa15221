"""`densenas search` / `densenas derive` end to end on the embedded data at smoke size (CPU): every output, a
derived net that builds and runs, kill/resume to identical files, the shared warm-up, and the cost term at work."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from search_fixtures import REPO, env, prepare_tiny, run_cli, search_args

from densenas.models import build_network
from densenas.net_config import load_net_config

pytestmark = pytest.mark.e2e
OUTPUTS = ("checkpoint.pt", "arch_params.json", "history.csv", "metrics.json", "net_config.json", "net_config.txt")
SMOKE_BUDGET_S = 180


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return prepare_tiny(tmp_path_factory.mktemp("search"))


@pytest.fixture(scope="module")
def reference(data: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    """An uninterrupted smoke search of variant lat_c: 1 warm-up epoch + 1 search epoch."""
    out = tmp_path_factory.mktemp("reference") / "lat_c"
    start = time.perf_counter()
    run_cli(*search_args(*data, out))
    return out, time.perf_counter() - start


def _history(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def _final_arch(path: Path) -> dict[str, object]:
    last = json.loads(path.read_text())["epochs"][-1]
    return {key: last[key] for key in ("beta", "alpha_head", "alpha_stack", "path", "head_ops", "stack_ops")}


def test_smoke_search_writes_every_output_in_time(reference: tuple[Path, float]) -> None:
    out, seconds = reference
    assert seconds < SMOKE_BUDGET_S, f"smoke search took {seconds:.0f} s, budget {SMOKE_BUDGET_S} s"
    missing = [name for name in OUTPUTS if not (out / name).is_file()]
    assert not missing, f"missing outputs: {missing}"
    rows = _history(out / "history.csv")
    assert [(r["epoch"], r["stage"]) for r in rows] == [("0", "warmup"), ("1", "search")]
    assert rows[0]["arch_loss"] == "" and rows[1]["arch_loss"] != "", "architecture steps only after warm-up"
    assert rows[0]["val_top1"] != "" and rows[1]["val_top1"] != "", "validation after warm-up and from epoch 1"
    arch_params = json.loads((out / "arch_params.json").read_text())
    assert [e["epoch"] for e in arch_params["epochs"]] == [-1, 0, 1]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["derived"]["path"] == arch_params["epochs"][-1]["path"]
    assert metrics["warmup_supernet_val_top1"] == pytest.approx(float(rows[0]["val_top1"]))
    assert metrics["supernet_val_top1"] == pytest.approx(float(rows[1]["val_top1"]))
    assert [b["epoch"] for b in metrics["best_supernet_val"]] == [1], "best-val epochs are search epochs only"
    assert metrics["retrain_epochs"] == {"last": 1, "best_supernet_val": 1} and metrics["retrain_epoch"] == "last"
    assert arch_params["epochs"][1]["supernet_val_top1"] is None, "the warm-up's validation does not compete"
    assert metrics["derived"]["lut_latency_ms"] > 0 and metrics["expected_cost"] > 0
    assert metrics["search_hours"] > 0 and metrics["device"].startswith("1 x cpu")
    assert metrics["lut_source"] == "measured" and metrics["cost_source"]["lut_source"] == "measured"
    checkpoint = torch.load(out / "checkpoint.pt", weights_only=True, map_location="cpu")
    assert checkpoint["identity"]["variant"] == "lat_c" and checkpoint["progress"]["epoch"] == 2


def test_derived_net_config_builds_runs_and_rederives(reference: tuple[Path, float], tmp_path: Path) -> None:
    out, _ = reference
    config = load_net_config(out / "net_config.json")
    network = build_network(config, config.num_classes).eval()
    with torch.no_grad():
        logits = network(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 10) and torch.isfinite(logits).all()
    run_cli("derive", "--arch-params", str(out / "arch_params.json"), "--out", str(tmp_path / "net_config.json"))
    for name in ("net_config.json", "net_config.txt"):
        assert (tmp_path / name).read_text() == (out / name).read_text(), f"derive must reproduce {name}"


def test_a_checkpoint_of_another_variant_is_refused(data: tuple[Path, Path], reference: tuple[Path, float]) -> None:
    out, _ = reference
    before = (out / "checkpoint.pt").stat().st_mtime_ns
    result = subprocess.run([sys.executable, "-m", "densenas.cli", *search_args(*data, out, variant="lat_b")],
                            cwd=REPO, capture_output=True, text=True, timeout=300, env=env())
    assert result.returncode == 2, result.stderr[-2000:]
    assert "checkpoint was made for variant='lat_c', expected variant='lat_b'" in result.stderr, result.stderr[-2000:]
    assert (out / "checkpoint.pt").stat().st_mtime_ns == before


EVERY_TWO = {"search.checkpoint_every_steps": 2}


def _signal_after_step_two(data: tuple[Path, Path], out: Path, stop: signal.Signals) -> tuple[int, str]:
    """Run the smoke search (checkpoints every 2 steps), send ``stop`` once its architecture pass has saved step 2;
    return its exit code and everything it printed."""
    command = [sys.executable, "-m", "densenas.cli", *search_args(*data, out, overrides=EVERY_TWO)]
    process = subprocess.Popen(command, cwd=REPO, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True)
    assert process.stderr is not None
    seen = []
    for line in process.stderr:
        seen.append(line)
        if "checkpoint: epoch 1, arch phase, step 2" in line:
            process.send_signal(stop)
    process.wait(timeout=60)
    return process.returncode, "".join(seen)


def _resume_and_compare(data: tuple[Path, Path], out: Path, reference_out: Path, resumed_at: str) -> None:
    """Re-run the interrupted search: it says it resumed at ``resumed_at`` and ends with the reference's files."""
    assert not (out / "net_config.json").exists()
    resumed = run_cli(*search_args(*data, out, overrides=EVERY_TWO))
    assert "resumed from" in resumed.stderr and resumed_at in resumed.stderr
    for name in ("arch_params.json", "net_config.json", "net_config.txt"):
        assert (out / name).read_text() == (reference_out / name).read_text(), f"{name} differs after resume"


def test_killed_search_resumes_to_identical_files(data: tuple[Path, Path], reference: tuple[Path, float],
                                                  tmp_path: Path) -> None:
    """SIGKILL in the architecture pass (after its step-2 checkpoint), re-run: the same final files as the
    reference run, which checkpointed only at pass ends (the checkpoint frequency must not change results)."""
    out = tmp_path / "lat_c"
    code, printed = _signal_after_step_two(data, out, signal.SIGKILL)
    assert code == -signal.SIGKILL, f"the search ended before the kill: {printed[-2000:]}"
    reference_out, _ = reference
    _resume_and_compare(data, out, reference_out, "arch phase")
    timeless = [{k: v for k, v in row.items() if k != "epoch_seconds"} for row in _history(out / "history.csv")]
    assert timeless == [{k: v for k, v in row.items() if k != "epoch_seconds"}
                        for row in _history(reference_out / "history.csv")]


def test_a_preempted_search_saves_its_step_and_resumes_to_identical_files(
        data: tuple[Path, Path], reference: tuple[Path, float], tmp_path: Path) -> None:
    """SIGTERM (slurm's preemption, `scancel --signal=TERM`) in the architecture pass: the search saves the step it
    is at and exits 75 (the slurm profile retries it); the re-run resumes there and ends as the reference run."""
    out = tmp_path / "lat_c"
    code, message = _signal_after_step_two(data, out, signal.SIGTERM)
    assert code == 75, message[-2000:]
    assert "stopped by SIGTERM at epoch 1, arch phase, step 3" in message, message[-2000:]
    saved = torch.load(out / "checkpoint.pt", weights_only=True, map_location="cpu")["progress"]
    assert (saved["epoch"], saved["phase"], saved["phase_step"]) == (1, "arch", 3)
    _resume_and_compare(data, out, reference[0], "(epoch 1, arch phase, step 3)")


def test_variants_share_the_warmup_checkpoint(data: tuple[Path, Path], reference: tuple[Path, float],
                                              tmp_path: Path) -> None:
    prepared, lut = data
    warmup = tmp_path / "warmup"
    run_cli(*search_args(prepared, None, warmup, variant=None))
    assert (warmup / "checkpoint.pt").is_file() and not (warmup / "net_config.json").exists()
    out = tmp_path / "lat_c"
    run_cli(*search_args(prepared, lut, out, "--warmup-from", str(warmup / "checkpoint.pt")))
    reference_out, _ = reference
    assert _final_arch(out / "arch_params.json") == _final_arch(reference_out / "arch_params.json"), \
        "warm-up + architecture phase must equal the whole search"
    assert (out / "net_config.json").read_text() == (reference_out / "net_config.json").read_text()
    # the warm-up leaves the architecture optimiser out: the same warm-up serves another α/β learning rate
    faster = tmp_path / "lat_c_lr"
    raised = {"search.spaces.mbv2.arch": "{alpha_lr: 0.05, beta_lr: 0.02, betas: [0.5, 0.999], weight_decay: 0.001}"}
    run_cli(*search_args(prepared, lut, faster, "--warmup-from", str(warmup / "checkpoint.pt"), overrides=raised))
    adam = torch.load(faster / "checkpoint.pt", weights_only=True, map_location="cpu")["arch_optimizer"]
    assert [group["lr"] for group in adam["param_groups"]] == [0.05, 0.02], "Adam keeps this run's settings"
    assert _final_arch(faster / "arch_params.json")["beta"] != _final_arch(out / "arch_params.json")["beta"]


def test_a_larger_lambda_derives_a_faster_architecture(data: tuple[Path, Path], tmp_path: Path) -> None:
    """Same seed and warm-up; λ = 0 (accuracy only) against a large λ: the cost term must lower the LUT latency of
    the derived architecture and the expected cost. On this tiny problem the CE gradients on α/β are about 1e4
    times those of λ·log_τ(cost) at λ = 1 (the non-affine supernet amplifies them towards the stem), so within
    one short architecture epoch (10 steps at a raised architecture lr) only a λ of that order shows the effect."""
    prepared, lut = data
    overrides = {"search.spaces.mbv2.batch_size": 8, "search.spaces.mbv2.val_start_epoch": 2,
                 "search.spaces.mbv2.weight": "{lr: 0.02, min_lr: 1.0e-5, momentum: 0.9, weight_decay: 4.0e-5}",
                 "search.spaces.mbv2.arch": "{alpha_lr: 0.05, beta_lr: 0.05, betas: [0.5, 0.999], "
                                            "weight_decay: 0.001}",
                 "search.spaces.mbv2.variants.lambda_0": "{objective: latency, lambda: 0.0, tau: 15.0}",
                 "search.spaces.mbv2.variants.lambda_1e4": "{objective: latency, lambda: 1.0e+4, tau: 15.0}"}
    warmup = tmp_path / "warmup"
    run_cli(*search_args(prepared, None, warmup, variant=None, overrides=overrides))
    metrics = {}
    for variant in ("lambda_0", "lambda_1e4"):
        out = tmp_path / variant
        run_cli(*search_args(prepared, lut, out, "--warmup-from", str(warmup / "checkpoint.pt"),
                             overrides=overrides, variant=variant))
        metrics[variant] = json.loads((out / "metrics.json").read_text())
    latency = {v: m["derived"]["lut_latency_ms"] for v, m in metrics.items()}
    expected = {v: m["expected_cost"] for v, m in metrics.items()}
    assert latency["lambda_1e4"] < latency["lambda_0"], f"derived LUT latency (ms): {latency}"
    assert expected["lambda_1e4"] < expected["lambda_0"], f"expected cost (ms): {expected}"
