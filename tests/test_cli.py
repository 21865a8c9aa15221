"""CLI: `densenas info` figures, `--help` lists the stages, and bad input gives one line + exit 2."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO

from densenas import cli
from densenas.atomic import write_json
from densenas.errors import DensenasError
from densenas.net_config import load_net_config


@pytest.mark.parametrize(
    ("model", "mult_adds_m", "params_m"),
    [("densenas_a", 251.33, 4.768), ("densenas_b", 313.58, 5.584), ("densenas_c", 360.81, 6.134)],
)
def test_info_reports_published_counts(run_cli, model: str, mult_adds_m: float, params_m: float) -> None:
    result = run_cli("info", model, "--input-size", "224")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert abs(info["mult_adds_m"] - mult_adds_m) <= 0.01
    assert abs(info["params_m"] - params_m) <= 0.001


def test_help_lists_the_stages(run_cli) -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    for stage in ("prepare", "lut", "search", "derive", "train", "evaluate", "latency", "report"):
        assert stage in result.stdout


def _params_file(tmp_path: Path, mutate) -> str:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    mutate(raw)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def _net_config(tmp_path: Path, text: str, name: str = "bad.json") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


C_BLOCKS = json.dumps([
    {"in_ch": 16, "out_ch": 16, "head_op": "mbconv_k3_t1", "stack_ops": [], "stride": 1},
    {"in_ch": 16, "out_ch": 24, "head_op": "mbconv_k3_t6", "stack_ops": [], "stride": 2},
])

BAD_INPUTS = {
    "params: unknown top-level key": (
        lambda t: ["--params", _params_file(t, lambda r: r.update(sead=1)), "params"], "unknown key 'sead'"),
    "params: wrong type": (
        lambda t: ["--params", _params_file(t, lambda r: r["train"].update(lr="fast")), "params"], "train.lr"),
    "params: out of range": (
        lambda t: ["--params", _params_file(t, lambda r: r["data"].update(input_size=4)), "params"],
        "data.input_size"),
    "params: missing file": (lambda t: ["--params", str(t / "nope.yaml"), "params"], "params file not found"),
    "params: not YAML": (
        lambda t: ["--params", _net_config(t, "a: [1, 2", "p.yaml"), "params"], "not valid YAML"),
    "preset: unknown": (lambda t: ["--preset", "imaginary", "params"], "preset 'imaginary'"),
    "--set: malformed": (lambda t: ["--set", "train.epochs", "params"], "expected KEY.PATH=VALUE"),
    "--set: bad value": (lambda t: ["--set", "train.batch_size=-4", "params"], "train.batch_size"),
    "model: unknown name": (lambda t: ["info", "densenas_z"], "unknown model 'densenas_z'"),
    "net_config: not JSON": (lambda t: ["info", _net_config(t, "{oops")], "not valid JSON"),
    "net_config: unknown op": (
        lambda t: ["info", _net_config(t, '{"net_type": "mbv2", "last_dim": 64, "blocks": '
                                          '[{"in_ch": 16, "out_ch": 16, "head_op": "conv9", '
                                          '"stack_ops": [], "stride": 1}]}')], "unknown op 'conv9'"),
    "net_config: channel mismatch": (
        lambda t: ["info", _net_config(t, '{"net_type": "mbv2", "last_dim": 64, "blocks": '
                                          + C_BLOCKS.replace('"in_ch": 16, "out_ch": 24', '"in_ch": 20, "out_ch": 24')
                                          + "}")], "does not match"),
    "net_config: bad stride": (
        lambda t: ["info", _net_config(t, '{"net_type": "mbv2", "last_dim": 64, "blocks": '
                                          + C_BLOCKS.replace('"stride": 2', '"stride": 4') + "}")], "stride"),
    "net_config: empty": (
        lambda t: ["info", _net_config(t, '{"net_type": "mbv2", "last_dim": 64, "blocks": []}')], "blocks"),
    "net_config: official string without net_type": (
        lambda t: ["info", _net_config(t, "[[16, 16], 'mbconv_k3_t1', [], 0, 1]", "c.txt")], "net_type"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_gives_one_line_and_exit_2(run_cli, tmp_path: Path, case: str) -> None:
    make_args, expected = BAD_INPUTS[case]
    result = run_cli(*make_args(tmp_path))
    assert result.returncode == 2, f"{case}: exit {result.returncode}\n{result.stderr}"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, f"{case}: expected one line, got:\n{result.stderr}"
    assert "Traceback" not in result.stderr
    assert expected in lines[0], f"{case}: expected {expected!r} in {lines[0]!r}"


# Issue 17: the error boundary itself, in-process (the bad-input classes are in tests/test_bad_inputs.py)

def test_an_internal_error_shows_its_traceback_and_says_it_is_a_bug(monkeypatch: pytest.MonkeyPatch,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    def broken(args: object) -> None:
        raise KeyError("a bug")

    monkeypatch.setattr(cli, "cmd_params", broken)
    assert cli.main(["--params", str(REPO / "params.yaml"), "params"]) == cli.EXIT_INTERNAL_ERROR
    stderr = capsys.readouterr().err
    assert "Traceback" in stderr and "KeyError: 'a bug'" in stderr
    assert stderr.strip().splitlines()[-1].startswith("densenas: internal error: this is a bug in densenas")


def test_an_os_error_about_a_named_file_is_one_line(monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    def denied(args: object) -> None:
        raise PermissionError(errno.EACCES, "Permission denied", "/data/locked.bin")

    monkeypatch.setattr(cli, "cmd_params", denied)
    assert cli.main(["--params", str(REPO / "params.yaml"), "params"]) == cli.EXIT_USER_ERROR
    assert capsys.readouterr().err == "densenas: error: /data/locked.bin: Permission denied\n"


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into a read-only folder")
def test_read_only_output_folder_is_refused_before_the_stage(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        code = cli.main(["--params", str(REPO / "params.yaml"), "--set", "tracking.enabled=false", "lut",
                         "--space", "mbv2", "--from-official", "lat_list_densenas_mbv2_xp32",
                         "--out", str(locked / "sub" / "lut.json")])
    finally:
        locked.chmod(0o755)
    assert code == cli.EXIT_USER_ERROR
    assert f"{locked}: folder is not writable" in capsys.readouterr().err
    assert not list(locked.iterdir())


def test_input_size_limit_is_raised_through_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "n.json"
    path.write_text(json.dumps({"net_type": "mbv2", "blocks": []}) + " " * 2**20)
    monkeypatch.setenv("DENSENAS_MAX_INPUT_MB", "1")
    with pytest.raises(DensenasError, match=r"n\.json: 1\.0 MiB, above the 1 MiB limit for a net_config file"):
        load_net_config(path)
    monkeypatch.setenv("DENSENAS_MAX_INPUT_MB", "2")
    with pytest.raises(DensenasError, match="blocks"):  # read now, and refused for what it says
        load_net_config(path)
    monkeypatch.setenv("DENSENAS_MAX_INPUT_MB", "lots")
    with pytest.raises(DensenasError, match="DENSENAS_MAX_INPUT_MB='lots': expected a positive whole number"):
        load_net_config(path)


def test_atomic_write_on_a_full_disk_leaves_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A LUT (or any JSON output) written while the disk is full: ENOSPC from /dev/full, the old file stays."""
    target = tmp_path / "lut.json"
    write_json(target, {"old": True})
    real_open = open

    def full_disk(self: Path, text: str) -> None:
        with real_open("/dev/full", "w") as handle:  # ENOSPC when the buffer is flushed
            handle.write(text)

    monkeypatch.setattr(Path, "write_text", full_disk)
    with pytest.raises(DensenasError, match=rf"{target}: cannot write the output \(No space left on device"):
        write_json(target, {"new": True})
    monkeypatch.undo()
    assert json.loads(target.read_text()) == {"old": True}
    assert [p.name for p in tmp_path.iterdir()] == ["lut.json"]


def test_the_cli_and_the_workflow_helpers_load_without_torch() -> None:
    """What every `densenas` call and every Snakemake start imports stays torch-free (docs/architecture.md): torch
    and torchvision cost seconds per process, paid dozens of times by a pipeline, its dry runs and its slurm jobs."""
    code = ("import sys\n"
            "from densenas import cli\n"
            "from densenas.config import load_params\n"
            "from densenas.registry import list_models\n"
            "from densenas.report import table_models\n"
            "params = load_params('params.yaml')\n"
            "assert 'densenas_c' in list_models() and table_models('mbv2', params)  # parses the zoo's net_configs\n"
            "print(sorted({name.split('.')[0] for name in sys.modules} & {'torch', 'torchvision'}))\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", result.stdout
