"""Per-op LUT: signatures and shapes from the topology, the FLOPs table, LUT files (schema, mismatches refused)
and `densenas lut` at a tiny setting."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from densenas.chained_cost import architecture_cost
from densenas.cli import main
from densenas.complexity import count_mult_adds
from densenas.errors import DensenasError
from densenas.lut import (
    INTEGRITY,
    build_lut,
    build_site,
    device_tag,
    flops_cost_table,
    load_cost_table,
    node_resolutions,
    read_lut,
    supernet_sites,
    validate_lut,
    with_content_sha256,
    write_lut,
)
from densenas.models import build_network
from densenas.registry import get_entry, published_archs
from densenas.spaces import build_topology, load_space


def _sites(name: str, input_size: int = 224, num_classes: int = 100):
    space = load_space(name)
    topology = build_topology(space)
    return space, topology, supernet_sites(space, topology, input_size=input_size, num_classes=num_classes)


@pytest.mark.parametrize("name", ["mbv2", "resnet"])
def test_resolutions_follow_the_strides(name: str) -> None:
    space = load_space(name)
    assert node_resolutions(space, 224) == (*space.resolutions, space.resolutions[-1])
    small = node_resolutions(space, 32)
    assert small[0] == 16 and small[-1] == 1, f"input 32: expected 16 at node 0 and 1 at the end, got {small}"
    assert node_resolutions(space, 225)[0] == 113, "odd sides round up, as a padded stride-2 conv does"


def test_signatures_follow_the_topology() -> None:
    _, topology, sites = _sites("mbv2")
    # node 3's second head branch comes from node 1 (24@56), stride 2, to 40 channels
    assert topology.in_edges[3][1].source == 1
    assert sites.heads[2][1][1].signature(32, "float32") == "mbconv_k3_t6|in=24x56x56|out=40|s=2|b=32|float32"
    assert sites.stacks[4][6].signature(1, "float32") == "skip_connect|in=56x14x14|out=56|s=1|b=1|float32"
    assert sites.stem.signature(1, "bfloat16") == "stem_mbv2|in=3x224x224|out=16|s=2|b=1|bfloat16"
    assert [s.signature(1, "float32") for s in sites.final] == [
        f"conv1x1_bn_relu6|in={c}x7x7|out=1984|s=1|b=1|float32" for c in (384, 352, 320)]
    assert sites.classifier.signature(1, "float32") == "avgpool_linear|in=1984x7x7|out=100|s=1|b=1|float32"


# stem + head rows × head ops + (nodes with stacked layers) × stack ops + final branches + classifier
@pytest.mark.parametrize(("name", "count"), [("mbv2", 1 + 51 * 6 + 13 * 7 + 3 + 1),
                                             ("resnet", 1 + 84 * 1 + 17 * 2 + 3 + 1)])
def test_each_supernet_op_is_listed_once(name: str, count: int) -> None:
    _, _, sites = _sites(name)
    distinct = sites.distinct()
    assert len(distinct) == count, f"{name}: expected {count} distinct ops, got {len(distinct)}"
    assert len({s.signature(1, "float32") for s in distinct}) == count


@pytest.mark.parametrize("name", ["mbv2", "resnet"])
def test_stem_and_final_branches_are_the_supernets_own(name: str) -> None:
    from densenas.supernet import Supernet

    space, _, sites = _sites(name)
    with torch.device("meta"):
        supernet = Supernet(space)
        assert str(build_site(sites.stem, space)) == str(supernet.stem)
        for site, branch in zip(sites.final, supernet.final.branches, strict=True):
            assert str(build_site(site, space)) == str(branch)


@pytest.mark.parametrize("name", ["mbv2", "resnet"])
def test_flops_entries_equal_count_mult_adds(name: str) -> None:
    space, topology, sites = _sites(name, input_size=32)
    table = flops_cost_table(space, input_size=32, num_classes=100)
    table.check_layout(topology, len(space.head_ops), len(space.stack_ops), "flops table")
    checks = [(table.stem, sites.stem), (table.classifier, sites.classifier),
              (float(table.final[1]), sites.final[1])]
    for j in (1, 5, topology.final_node - 1):
        checks += [(float(table.heads[j - 1][-1, o]), site) for o, site in enumerate(sites.heads[j - 1][-1])]
        if topology.stacked_layers[j]:
            checks += [(float(table.stacks[j - 1][-1, o]), site) for o, site in enumerate(sites.stacks[j - 1])]
    for value, site in checks:
        expected = count_mult_adds(build_site(site, space), site.input_shape(1)) / 1e6
        assert value == expected, f"{site}: table {value} M, count_mult_adds {expected} M"


@pytest.fixture(scope="module")
def mbv2_flops_1000():
    return flops_cost_table(load_space("mbv2"), input_size=224, num_classes=1000)


@pytest.mark.parametrize("model", ["densenas_a", "densenas_b", "densenas_c"])
def test_flops_path_sum_equals_the_derived_network(mbv2_flops_1000, model: str) -> None:
    """Stem + heads + kept stacked ops + final 1x1 + 1000-class classifier = the network's mult-adds (skips cost 0)."""
    space = load_space("mbv2")
    topology = build_topology(space)
    table = mbv2_flops_1000
    arch = published_archs()["models"][model]
    path, blocks = arch["node_path"], arch["net_config"]["blocks"][1:-1]
    head_ops = [space.head_ops.index(b["head_op"]) for b in blocks]
    stack_ops = [[space.stack_ops.index(op) for op in b["stack_ops"]]
                 + [space.stack_ops.index("skip_connect")] * (topology.stacked_layers[n] - len(b["stack_ops"]))
                 for n, b in zip(path[1:-1], blocks, strict=True)]
    got = architecture_cost(topology, table, path, head_ops, stack_ops)
    expected = count_mult_adds(build_network(get_entry(model).net_config), (1, 3, 224, 224)) / 1e6
    assert got == pytest.approx(expected, abs=1e-6), f"{model}: path sum {got} M, network {expected} M"


def test_skip_reg_costs_a_tenth_of_the_first_op() -> None:
    space = load_space("resnet")
    plain = flops_cost_table(space, input_size=32)
    reg = flops_cost_table(space, input_size=32, skip_reg=True)
    for plain_rows, reg_rows in zip(plain.stacks, reg.stacks, strict=True):
        assert torch.equal(reg_rows[:, 0], plain_rows[:, 0])
        assert torch.equal(reg_rows[:, 1], plain_rows[:, 0] / 10)
        assert bool((plain_rows[:, 1] == 0).all()), "an identity has no mult-adds"


@pytest.fixture(scope="module")
def tiny_lut(tmp_path_factory) -> Path:
    """A measured ResNet LUT at input 16, batch 1, one timed pass per op (content checks only, no timing)."""
    doc = build_lut(load_space("resnet"), metric="latency", input_size=16, batch=1, dtype="float32", num_classes=10,
                    device="cpu", warmup=0, repeats=1, threads=1, progress=False)
    path = tmp_path_factory.mktemp("lut") / "resnet.json"
    write_lut(path, doc)
    return path


def test_generated_lut_is_valid_and_loads(tiny_lut: Path) -> None:
    doc = read_lut(tiny_lut)
    assert (doc["space"], doc["metric"], doc["units"], doc["threads"], doc["num_classes"]) == (
        "resnet", "latency", "ms", 1, 10)
    assert doc["device"]["type"] == "cpu" and doc["device"]["name"]
    assert len(doc["entries"]) == 123
    space = load_space("resnet")
    topology = build_topology(space)
    table = load_cost_table(tiny_lut, space, topology, input_size=16, batch=1, metric="latency")
    stem_key = "stem_res|in=3x16x16|out=32|s=2|b=1|float32"
    assert table.stem == doc["entries"][stem_key]["mean"]
    assert table.unit == "ms"
    reg = load_cost_table(tiny_lut, space, topology, input_size=16, batch=1, skip_reg=True)
    assert torch.equal(reg.stacks[3][:, 1], table.stacks[3][:, 0] / 10)
    fastest = load_cost_table(tiny_lut, space, topology, input_size=16, batch=1, statistic="min")
    assert fastest.stem == doc["entries"][stem_key]["min"] <= table.stem


@pytest.mark.parametrize(("space", "kwargs", "message"), [
    ("mbv2", {"input_size": 16, "batch": 1}, "space 'resnet', expected 'mbv2'"),
    ("resnet", {"input_size": 32, "batch": 1}, "input_size 16, expected 32"),
    ("resnet", {"input_size": 16, "batch": 32}, "batch 1, expected 32"),
    ("resnet", {"input_size": 16, "batch": 1, "metric": "flops"}, "metric 'latency', expected 'flops'"),
])
def test_loading_a_mismatched_lut_is_refused(tiny_lut: Path, space: str, kwargs: dict, message: str) -> None:
    target = load_space(space)
    with pytest.raises(DensenasError, match=f"{tiny_lut}.*{message}"):
        load_cost_table(tiny_lut, target, build_topology(target), **kwargs)


def test_invalid_or_incomplete_lut_files_are_refused(tiny_lut: Path, tmp_path: Path) -> None:
    space = load_space("resnet")
    topology = build_topology(space)
    doc = json.loads(tiny_lut.read_text())
    broken = {
        "no_device.json": {k: v for k, v in doc.items() if k != "device"},
        "bad_key.json": {**doc, "entries": {**doc["entries"], "basic block|in=1": {"mean": 1.0, "std": 0.0,
                                                                                   "median": 1.0, "count": 1}}},
        "negative.json": {**doc, "entries": {k: {**v, "mean": -1.0} for k, v in doc["entries"].items()}},
    }
    for name, content in broken.items():
        path = tmp_path / name
        path.write_text(json.dumps(content))
        with pytest.raises(DensenasError, match=f"{path}: not a valid LUT file"):
            load_cost_table(path, space, topology, input_size=16, batch=1)
    first = next(iter(doc["entries"]))
    incomplete = tmp_path / "incomplete.json"
    incomplete.write_text(json.dumps(with_content_sha256(
        {**doc, "entries": {k: v for k, v in doc["entries"].items() if k != first}})))
    with pytest.raises(DensenasError, match=f"lacks the mean of 1 op.*{first.replace('|', '.')}"):
        load_cost_table(incomplete, space, topology, input_size=16, batch=1)
    not_json = tmp_path / "not.json"
    not_json.write_text("[1, 2,")
    with pytest.raises(DensenasError, match="not valid JSON"):
        read_lut(not_json)
    with pytest.raises(DensenasError, match="entries"):
        validate_lut({**doc, "entries": {}}, "in-memory")


def test_content_checksum_is_written_and_verified(tiny_lut: Path, tmp_path: Path) -> None:
    doc = json.loads(tiny_lut.read_text())
    assert len(doc[INTEGRITY]) == 64, f"write_lut must stamp a sha256, got {doc.get(INTEGRITY)!r}"
    space = load_space("resnet")
    for name, changed in (("value", lambda d: next(iter(d["entries"].values())).update(mean=123.0)),
                          ("header", lambda d: d.update(threads=7)),
                          ("checksum", lambda d: d.update({INTEGRITY: "0" * 64}))):
        edited = json.loads(tiny_lut.read_text())
        changed(edited)
        path = tmp_path / f"edited_{name}.json"
        path.write_text(json.dumps(edited))  # still valid against the schema
        with pytest.raises(DensenasError, match=f"{path}: content differs from its {INTEGRITY}"):
            load_cost_table(path, space, build_topology(space), input_size=16, batch=1)
    unstamped = tmp_path / "unstamped.json"
    unstamped.write_text(json.dumps({k: v for k, v in doc.items() if k != INTEGRITY}))
    with pytest.raises(DensenasError, match=f"{unstamped}: not a valid LUT file: .*'{INTEGRITY}' is a required"):
        read_lut(unstamped)


def test_device_tag() -> None:
    assert device_tag(device="cpu", batch=1, input_size=32, dtype="float32") == "cpu-b1-r32-float32"
    assert device_tag(device="cuda:1", batch=32, input_size=224, dtype="bfloat16") == "cuda1-b32-r224-bfloat16"


def test_cli_lut_tiny_latency_and_flops(tmp_path: Path, capsys) -> None:
    out = tmp_path / "mbv2_cpu.json"
    code = main(["--set", "lut.warmup=1", "--set", "lut.repeats=2", "--set", "lut.threads=1", "lut", "--space", "mbv2",
                 "--input-size", "32", "--batch", "1", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    doc = read_lut(out)
    assert (doc["input_size"], doc["batch"], doc["warmup"], doc["repeats"], doc["threads"]) == (32, 1, 1, 2, 1)
    assert all(entry["count"] == 2 for entry in doc["entries"].values())
    assert len(doc["entries"]) == 402 and "402 ops" in capsys.readouterr().err
    flops = tmp_path / "resnet_flops.json"
    assert main(["lut", "--space", "resnet", "--metric", "flops", "--batch", "8", "--out", str(flops)]) == 0
    doc = read_lut(flops)
    assert (doc["units"], doc["batch"], doc["input_size"]) == ("M mult-adds", 1, 32), "FLOPs are per image"
    assert doc["entries"]["avgpool_linear|in=512x1x1|out=100|s=1|b=1|float32"]["mean"] == 0.0512


@pytest.mark.parametrize(("option", "message"), [
    ("--input-size=0", "argument --input-size: expected 16 to 4096, got 0"),
    ("--batch=0", "argument --batch: expected 1 to 65536, got 0")])
def test_cli_lut_bad_setting_is_one_line(tmp_path: Path, capsys, option: str, message: str) -> None:
    with pytest.raises(SystemExit) as refused:  # argparse refuses the size before anything is built
        main(["lut", "--space", "mbv2", option, "--out", str(tmp_path / "x.json")])
    err = capsys.readouterr().err
    assert refused.value.code == 2 and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "x.json").exists()
