"""Security defaults: no code read from a data file is ever executed (no eval/exec, no unpickling, no unsafe YAML,
torch.load only with weights_only=True), and the documented MLflow UI binds to loopback only."""

from __future__ import annotations

import ast
import re

import pytest
from conftest import REPO

PACKAGE = REPO / "densenas"
CODE_RUNNERS = {"eval", "exec", "compile", "__import__"}
UNPICKLERS = {"pickle", "cPickle", "dill", "cloudpickle", "marshal", "shelve", "joblib"}
ALWAYS_UNSAFE = {"pickle.load", "pickle.loads", "marshal.load", "marshal.loads", "shelve.open", "torch.jit.load",
                 "yaml.unsafe_load", "yaml.full_load", "yaml.unsafe_load_all", "yaml.full_load_all"}
SAFE_YAML_LOADERS = {"SafeLoader", "CSafeLoader"}


def _dotted(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def unsafe_calls(source: str, filename: str = "<source>") -> list[str]:
    """Every construct of ``source`` that could run code from data, as 'file:line: what'."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        where = f"{filename}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import | ast.ImportFrom):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            found += [f"{where}: import {m}" for m in modules if m.split(".")[0] in UNPICKLERS]
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        short = name.replace("numpy.", "np.")
        if name in CODE_RUNNERS or name in ALWAYS_UNSAFE:
            found.append(f"{where}: {name}()")
        elif name == "torch.load":
            weights_only = _keyword(node, "weights_only")
            if not (isinstance(weights_only, ast.Constant) and weights_only.value is True):
                found.append(f"{where}: torch.load() without weights_only=True")
        elif name in ("yaml.load", "yaml.load_all"):
            loader = _keyword(node, "Loader") or (node.args[1] if len(node.args) > 1 else None)
            if loader is None or _dotted(loader).split(".")[-1] not in SAFE_YAML_LOADERS:
                found.append(f"{where}: {name}() without SafeLoader")
        elif short == "np.load":
            allow = _keyword(node, "allow_pickle")
            if allow is not None and not (isinstance(allow, ast.Constant) and allow.value is False):
                found.append(f"{where}: np.load() with allow_pickle")
    return found


SAMPLE = """
import pickle
import yaml, torch, numpy as np
eval("1")
exec("x = 1")
pickle.loads(b"")
yaml.load(text)
yaml.load(text, Loader=yaml.Loader)
yaml.full_load(text)
torch.load(path)
torch.load(path, weights_only=False)
torch.jit.load(path)
np.load(path, allow_pickle=True)
model.eval()
yaml.safe_load(text)
yaml.load(text, Loader=yaml.SafeLoader)
torch.load(path, map_location="cpu", weights_only=True)
np.load(path)
re.compile("x")
"""


def test_the_checker_finds_each_unsafe_construct_and_only_those() -> None:
    found = unsafe_calls(SAMPLE)
    lines = sorted(int(item.split(":")[1]) for item in found)
    assert lines == [2, *range(4, 14)], "expected lines 2 and 4-13 (the unsafe ones) flagged:\n" + "\n".join(found)


def test_package_never_runs_code_read_from_data() -> None:
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 30, f"expected the package sources under {PACKAGE}, found {len(files)} files"
    found = [hit for path in files for hit in unsafe_calls(path.read_text(), str(path.relative_to(REPO)))]
    assert not found, "code that may execute data:\n" + "\n".join(found)


def test_workflow_files_never_run_code_read_from_data() -> None:
    """Snakemake files are not plain Python, so these are checked by pattern, comments left out."""
    pattern = re.compile(r"(?<![\w.])(eval|exec)\(|\bpickle\b|yaml\.(load|unsafe_load|full_load)\(|torch\.load\(")
    workflow = REPO / "workflow"
    files = [REPO / "Snakefile", *sorted(workflow.rglob("*.smk")), *sorted(workflow.rglob("*.py"))]
    found = [f"{path.relative_to(REPO)}:{number}: {line.strip()}"
             for path in files for number, line in enumerate(path.read_text().splitlines(), 1)
             if pattern.search(line.split("#", 1)[0])]
    assert not found, "\n".join(found)


def test_documented_mlflow_ui_binds_loopback_only() -> None:
    readme = (REPO / "README.md").read_text()
    if "mlflow ui --host 127.0.0.1" not in readme:
        pytest.fail("README.md: expected the documented command `mlflow ui --host 127.0.0.1` (loopback only)")
    assert "0.0.0.0" not in readme, "README.md must not suggest binding a service to all interfaces (0.0.0.0)"
