"""Generated bad input (issue 17): Hypothesis mutates every kind of file and flag the CLI reads (params files,
--set values, net_configs, official LUT tables, Fashion-MNIST IDX files; LUT JSON and checkpoints through the
readers the stages call) and checks the one boundary: success or exit 2 with one line, never a traceback, and
no partial output.

Each kind runs ``DENSENAS_GENERATED_EXAMPLES`` cases (default 1000, the issue's floor for CI;
set more for a deeper run). Hypothesis keeps the failing examples it finds in ``.hypothesis/`` and
replays them first; each one found so far is a fixed case in tests/test_bad_inputs.py.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import io
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml
from conftest import REPO
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from train_fixtures import TINY_NET

from densenas import cli
from densenas.checkpoint import load_checkpoint, save_checkpoint
from densenas.errors import DensenasError
from densenas.lut import build_lut, load_cost_table, write_lut
from densenas.official_lut import official_table_path
from densenas.spaces import build_topology, load_space

EXAMPLES = int(os.environ.get("DENSENAS_GENERATED_EXAMPLES", "1000"))
CASES = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
PARAMS = yaml.safe_load((REPO / "params.yaml").read_text())
QUIET = {"tracking": {"enabled": False}}

# -- what a mutation may put in place of a value: every JSON/YAML type, edge numbers, huge and hostile strings --
NUMBERS = st.one_of(
    st.integers(-3, 70), st.sampled_from([2**31, 2**32, 2**63, -(2**63), 10**30, 65537]),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.0, -0.0, 1e-300, 1e308, 0.5]))
SCALARS = st.one_of(NUMBERS, st.booleans(), st.none(), st.text(max_size=12),
                    st.sampled_from(["mbconv_k3_t6", "conv1_1", "mbv2", "res", "basic_block", "", "\x00", "é"]))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                      st.dictionaries(st.text(max_size=6), inner, max_size=3)),
                      max_leaves=8)


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key/index path in ``doc``, so a mutation can reach any value at any depth."""
    found = [prefix]
    if isinstance(doc, dict):
        for key, value in doc.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(doc, list):
        for index, value in enumerate(doc):
            found += _paths(value, (*prefix, index))
    return found


@st.composite
def mutated(draw: st.DrawFn, doc: Any) -> Any:
    """``doc`` with one to three values replaced, deleted, or given an unknown sibling."""
    doc = json.loads(json.dumps(doc))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_paths(doc)))
        if not path:
            return draw(VALUES)
        parent = doc
        for part in path[:-1]:
            parent = parent[part]
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "delete":
            del parent[path[-1]]
        elif action == "add" and isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=6))] = draw(VALUES)
        else:
            parent[path[-1]] = draw(VALUES)
    return doc


@st.composite
def damaged(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` truncated, with flipped bits, or with hostile bytes spliced in (non-UTF-8, YAML/JSON syntax)."""
    data = bytearray(data)
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["truncate", "flip", "insert"]))
        if action == "truncate":
            del data[at:]
        elif action == "flip" and at < len(data):
            data[at] ^= 1 << draw(st.integers(0, 7))
        else:
            data[at:at] = draw(st.one_of(st.binary(max_size=8), st.sampled_from(
                [b"\xff\xfe", b"&a [*a]", b"*x", b"!!python/object:os.system", b"[[[[", b"{", b"NaN", b": :",
                 b"\t", b"1e999", b"\n  - ", b"<<: *b"])))
    return bytes(data)


def _document_bytes(doc: Any, as_yaml: bool) -> bytes:
    try:
        return (yaml.safe_dump(doc) if as_yaml else json.dumps(doc)).encode()
    except (ValueError, yaml.YAMLError):  # a mutation json cannot write (a float key NaN...): write its repr
        return repr(doc).encode()


def run_cli(argv: list[str], outputs: list[Path] = ()) -> None:
    """``densenas ARGV`` in this process; the boundary's promises, whatever the input was."""
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            code = cli.main(argv)
        except SystemExit as exc:  # argparse usage errors
            code = exc.code
    err = stderr.getvalue()
    assert code in (0, 2), f"exit {code} for {argv}:\n{err}"
    assert "Traceback" not in err, f"traceback for {argv}:\n{err}"
    if code == 2:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("densenas"), f"expected one line for {argv}, got:\n{err}"
        for out in outputs:
            assert not out.exists(), f"{out} written although the command failed: {lines[0]}"
    for out in outputs:
        leftovers = [p.name for p in out.parent.glob(f".{out.name}*")] if out.parent.is_dir() else []
        assert not leftovers, f"temporary files left beside {out}: {leftovers}"


def _in_scratch(test: Callable[[Path], None]) -> None:
    with tempfile.TemporaryDirectory(prefix="densenas-gen-") as folder:
        test(Path(folder))


def _write(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.write_bytes(data)
    return path


@CASES
@given(doc=mutated(PARAMS), as_yaml=st.booleans())
def test_generated_params_files(doc: Any, as_yaml: bool) -> None:
    _in_scratch(lambda t: run_cli(["--params", str(_write(t, "params.yaml", _document_bytes(doc, as_yaml))),
                                   "params"]))


@CASES
@given(data=damaged(yaml.safe_dump({**PARAMS, **QUIET}).encode()))
def test_damaged_params_files(data: bytes) -> None:
    _in_scratch(lambda t: run_cli(["--params", str(_write(t, "params.yaml", data)), "params"]))


@CASES
@given(key=st.sampled_from([".".join(map(str, p)) for p in _paths(PARAMS) if p]) | st.text(max_size=12),
       value=st.text(max_size=40) | st.sampled_from(["[1", "*x", "!!python/name:os.system", "&a [*a]", ".nan",
                                                     "4294967296", "1e999", "{a: 1, a: 2}", "-.inf", "''"]))
def test_generated_set_values(key: str, value: str) -> None:
    run_cli(["--params", str(REPO / "params.yaml"), "--set", f"{key}={value}", "params"])


@CASES
@given(doc=mutated(TINY_NET), damage=st.booleans(), data=st.data())
def test_generated_net_configs(doc: Any, damage: bool, data: st.DataObject) -> None:
    raw = _document_bytes(doc, as_yaml=False)
    raw = data.draw(damaged(raw)) if damage else raw
    _in_scratch(lambda t: run_cli(["info", str(_write(t, "net.json", raw)), "--input-size", "32"]))


OFFICIAL = official_table_path("lat_list_densenas_mbv2_xp32").read_bytes()


@CASES
@given(data=st.data(), structured=st.booleans())
def test_generated_official_tables(data: st.DataObject, structured: bool) -> None:
    raw = (_document_bytes(data.draw(mutated(json.loads(OFFICIAL))), as_yaml=False) if structured
           else data.draw(damaged(OFFICIAL)))

    def case(folder: Path) -> None:
        out = folder / "out" / "lut.json"
        run_cli(["--params", str(REPO / "params.yaml"), "lut", "--space", "mbv2", "--from-official",
                 str(_write(folder, "table.json", raw)), "--out", str(out)], outputs=[out])
        if out.exists():
            json.loads(out.read_text())  # a success wrote a whole file

    _in_scratch(case)


def _idx(shape: tuple[int, ...], values: bytes) -> bytes:
    return (0x0800 + len(shape)).to_bytes(4, "big") + b"".join(n.to_bytes(4, "big") for n in shape) + values


IDX_FILES = {  # two train and one val 28x28 image per class: about the smallest Fashion-MNIST prepare accepts
    "train-images-idx3-ubyte.gz": _idx((20, 28, 28), bytes(range(256)) * 61 + bytes(64)),
    "train-labels-idx1-ubyte.gz": _idx((20,), bytes(range(10)) * 2),
    "t10k-images-idx3-ubyte.gz": _idx((10, 28, 28), bytes(10 * 28 * 28)),
    "t10k-labels-idx1-ubyte.gz": _idx((10,), bytes(range(10))),
}


@CASES
@given(name=st.sampled_from(sorted(IDX_FILES)), data=st.data(), compress=st.booleans())
def test_generated_idx_files(name: str, data: st.DataObject, compress: bool) -> None:
    """`prepare` on Fashion-MNIST files with one file damaged before or after gzip (header, counts, labels)."""
    def case(folder: Path) -> None:
        raw = folder / "raw"
        raw.mkdir()
        for file, content in IDX_FILES.items():
            packed = gzip.compress(content, mtime=0)
            if file == name:
                packed = gzip.compress(data.draw(damaged(content)), mtime=0) if compress else data.draw(damaged(packed))
            _write(raw, file, packed)
        out = folder / "prepared"
        run_cli(["--params", str(REPO / "params.yaml"), "--set", "tracking.enabled=false", "--set",
                 "data.source=fashion_mnist", "--set", "data.num_search_classes=10", "--set",
                 "data.search_train_fraction=0.5", "--set", "data.workers=0", "prepare", "--source", str(raw),
                 "--out", str(out)], outputs=[out])

    _in_scratch(case)


SPACE = load_space("mbv2")
TOPOLOGY = build_topology(SPACE)


@functools.cache
def _good_lut() -> bytes:
    """A valid LUT file's bytes (FLOPs of the MBV2 supernet at 16 px), made once."""
    doc = build_lut(SPACE, metric="flops", input_size=16, batch=1, dtype="float32", num_classes=2, device="cpu",
                    warmup=0, repeats=1, threads=1, progress=False)
    with tempfile.TemporaryDirectory() as folder:
        write_lut(Path(folder) / "lut.json", doc)
        return (Path(folder) / "lut.json").read_bytes()


@CASES
@given(data=st.data(), structured=st.booleans())
def test_generated_lut_files(data: st.DataObject, structured: bool) -> None:
    """What `search --lut` and `evaluate --lut` call: a DensenasError or a table, nothing else."""
    def case(folder: Path) -> None:
        raw = (_document_bytes(data.draw(mutated(json.loads(_good_lut()))), as_yaml=False) if structured
               else data.draw(damaged(_good_lut())))
        with contextlib.suppress(DensenasError):
            load_cost_table(_write(folder, "lut.json", raw), SPACE, TOPOLOGY, input_size=16, batch=1)

    _in_scratch(case)


@CASES
@given(data=st.data())
def test_generated_checkpoints(data: st.DataObject) -> None:
    """What train/search resume and evaluate call: a DensenasError or the very payload that was saved."""
    def case(folder: Path) -> None:
        path = folder / "checkpoint.pt"
        payload = {"identity": {"kind": "train", "model": "m"}, "weights": torch.arange(64, dtype=torch.float32),
                   "state": {"epoch": 3}}
        save_checkpoint(path, payload)
        path.write_bytes(data.draw(damaged(path.read_bytes())))
        try:
            loaded = load_checkpoint(path, {"kind": "train", "model": "m"})
        except DensenasError:
            return
        assert torch.equal(loaded["weights"], payload["weights"]) and loaded["state"] == payload["state"]

    _in_scratch(case)
