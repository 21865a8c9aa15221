"""CLI: `densenas info` figures, `--help` lists the stages, and bad input gives one line + exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import REPO


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
    for stage in ("prepare", "lut", "search", "derive", "train", "evaluate", "report"):
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
