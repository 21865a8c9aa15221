"""`densenas convert-official`: an official DenseNAS checkpoint (names and shapes of the authors' MBV2_Net) onto
the zoo model, checked against a model loaded from the same values by name mapping; bad checkpoints refused."""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

import pytest
import torch
from torch import nn

from densenas.cli import main
from densenas.evaluate import load_trained
from densenas.official_weights import official_names
from densenas.registry import create_model

PARTS = ("_expand_conv", "_depthwise_conv", "_project_conv")  # MBConv's conv+BN pairs, in forward order


def random_official(model: str, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for name, shape in official_names()[model]["tensors"]:
        value = torch.randn(shape, generator=generator) * 0.2
        state[name] = value.abs() + 0.5 if name.endswith("running_var") else value
    return state


def by_name(official: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our names from the official ones, by their structure (not their order): input_block -> stem, head layer ->
    block position 0, stacked layer l -> l + 1, conv/BN pair p of the MBConv's present pairs -> body 3p / 3p + 1
    (a ReLU6 sits between pairs), conv1_1_block.conv1_1 -> tail."""
    present: dict[str, list[str]] = defaultdict(list)
    layer = re.compile(r"blocks\.(\d+)\.(head_layer|stack_layers\.(\d+))\.(_\w+_conv)\.(\d)\.(\w+)")
    for name in official:
        match = layer.fullmatch(name)
        if match and match[4] not in present[match[1] + match[2]]:
            present[match[1] + match[2]].append(match[4])
    ours = {}
    for name, tensor in official.items():
        match = layer.fullmatch(name)
        if match:
            block, position = match[1], 0 if match[2] == "head_layer" else int(match[3]) + 1
            parts = sorted(present[match[1] + match[2]], key=PARTS.index)
            index = 3 * parts.index(match[4]) + int(match[5])
            ours[f"blocks.{block}.{position}.body.{index}.{match[6]}"] = tensor
        else:
            ours[name.replace("input_block.", "stem.").replace("conv1_1_block.conv1_1.", "tail.")] = tensor
    return ours


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """`densenas ARGS` in this process (the CLI's own error handling included): exit code and stderr."""
    code = main(list(args))
    return code, capsys.readouterr().err


def _converted(capsys, tmp_path: Path, payload: object, model: str = "densenas_c") -> tuple[int, str, Path]:
    source, out = tmp_path / "official.pth", tmp_path / "converted.pt"
    torch.save(payload, source)
    return (*_cli(capsys, "convert-official", str(source), "--model", model, "--out", str(out)), out)


@pytest.mark.parametrize("model", ["densenas_a", "densenas_c"])
@pytest.mark.parametrize("wrap", ["plain", "module-prefix", "wrapped", "wrapped+prefix+counters"])
def test_converted_model_equals_the_model_loaded_by_name(capsys, tmp_path: Path, model: str, wrap: str) -> None:
    official = random_official(model)
    payload: object = official
    if "prefix" in wrap:
        payload = {f"module.{k}": v for k, v in official.items()}
    if "counters" in wrap:
        payload = {**payload, "module.input_block.1.num_batches_tracked": torch.tensor(7)}
    if wrap.startswith("wrapped"):
        payload = {"state_dict": payload, "epoch": 239, "optimizer": {"lr": torch.tensor(0.1)}}
    code, err, out = _converted(capsys, tmp_path, payload, model)
    assert code == 0, err
    converted, _ = load_trained(model, out, num_classes=1000)   # what `densenas evaluate` does
    reference = create_model(model, num_classes=1000)
    reference.load_state_dict(by_name(official), strict=False)
    missing = [k for k in reference.state_dict() if k not in by_name(official)]
    assert all(k.endswith("num_batches_tracked") for k in missing), missing
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    converted.eval()
    reference.eval()
    with torch.no_grad():
        got, want = converted(x), reference(x)
    assert torch.equal(got, want), f"outputs differ by {(got - want).abs().max():.3e}"
    assert not torch.equal(got, create_model(model, num_classes=1000).eval()(x)), "the weights must matter"


def _renamed(state: dict[str, torch.Tensor], old: str, new: str) -> dict[str, torch.Tensor]:
    return {new if k == old else k: v for k, v in state.items()}


BAD = {
    "renamed tensor": (lambda s: _renamed(s, "classifier.bias", "fc.bias"),
                       "1 missing: classifier.bias; 1 unexpected: fc.bias"),
    "missing tensor": (lambda s: {k: v for k, v in s.items() if k != "input_block.0.weight"},
                       "1 missing: input_block.0.weight"),
    "extra tensor": (lambda s: {**s, "aux.weight": torch.zeros(3)}, "1 unexpected: aux.weight"),
    "wrong shape": (lambda s: {**s, "classifier.weight": torch.zeros(100, 1984)},
                    "1 mis-shaped: classifier.weight (100, 1984) (expected (1000, 1984))"),
    "another model's checkpoint": (lambda s: random_official("densenas_a"), "mis-shaped"),
    "not a state dict": (lambda s: {"epoch": 3, "arch": "densenas_c"}, "no state dict found"),
    "a pickled module (not weights-only)": (lambda s: nn.Linear(2, 2), "cannot be loaded with weights_only=True"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_checkpoints_are_one_line_errors(capsys, tmp_path: Path, case: str) -> None:
    make, message = BAD[case]
    code, err, out = _converted(capsys, tmp_path, make(random_official("densenas_c")))
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and message in lines[0], err
    assert not out.exists()


def test_unknown_model_and_missing_file(capsys, tmp_path: Path) -> None:
    code, err, _ = _converted(capsys, tmp_path, random_official("densenas_c"), model="mobilenet_v2")
    assert code == 2 and "expected one of: densenas_a, densenas_b, densenas_c" in err, err
    code, err = _cli(capsys, "convert-official", str(tmp_path / "none.pth"), "--model", "densenas_c", "--out",
                     str(tmp_path / "x.pt"))
    assert code == 2 and "checkpoint not found" in err, err
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x80\x02not a checkpoint at all" * 10)
    code, err = _cli(capsys, "convert-official", str(garbage), "--model", "densenas_c", "--out", str(tmp_path / "x.pt"))
    assert code == 2 and "not a readable torch checkpoint" in err, err


@pytest.mark.e2e
def test_cli_subprocess_one_line_error(run_cli, tmp_path: Path) -> None:
    """The real command line: a pickle that is not weights-only gives one line on stderr and exit code 2."""
    source = tmp_path / "module.pth"
    torch.save(nn.Linear(2, 2), source)
    result = run_cli("convert-official", str(source), "--model", "densenas_c", "--out", str(tmp_path / "x.pt"))
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "weights_only=True" in result.stderr
