"""Official DenseNAS tables: exact spot values and shapes (luts/README.md), surplus rows reported (Q14), the
published path latencies 13.646 / 15.817 / 18.012 ms through the chained cost, and the conversion to our schema."""

from __future__ import annotations

import json
import logging
from itertools import pairwise
from pathlib import Path

import pytest
import torch

from densenas.chained_cost import architecture_cost, chained_cost
from densenas.errors import DensenasError
from densenas.lut import load_cost_table, read_lut
from densenas.official_lut import import_official_lut, official_table_path
from densenas.registry import published_archs
from densenas.spaces import build_topology, load_space

MBV2 = "lat_list_densenas_mbv2_xp32"
RES = "lat_list_resv2_32"
RES_REG10 = "lat_list_resv2_32_reg10"

# head branches per node 1..N (luts/README.md, shape tables)
MBV2_HEAD_BRANCHES = [1, 1, 2, 3, 3, 4, 4, 3, 4, 4, 3, 4, 4, 3, 4, 4]
RES_HEAD_BRANCHES = [1, 2, 3, 3, 4, 5, 3, 4, 5, 6, 4, 5, 6, 3, 4, 5, 6, 4, 5, 6]
RES_STACK_ROWS = [0, 0, 0, 5, 5, 5, 15, 15, 15, 15, 5, 5, 5, 5, 5, 5, 5, 1, 1, 1]


@pytest.fixture(scope="module")
def mbv2():
    return import_official_lut(MBV2, "mbv2")


def test_mbv2_shapes_and_value_counts(mbv2) -> None:
    table, report = mbv2
    assert [h.shape[0] for h in table.heads] == MBV2_HEAD_BRANCHES
    assert all(h.shape[1] == 6 for h in table.heads)
    assert [s.shape[0] for s in table.stacks] == [3] * 13 + [0] * 3, "rows mapped by the space's layer counts"
    assert all(s.shape[1] == 7 for s in table.stacks)
    assert table.final.shape == (3,)
    assert (report.values, report.used_values, report.surplus_values) == (647, 584, 63)
    assert table.unit == "ms"


def test_mbv2_spot_values_exact(mbv2) -> None:
    table, _ = mbv2
    assert table.stem == 2.130230027015763
    assert table.heads[0][0].tolist() == [2.0424278577168784, 3.9147443482370092, 2.826663460394349,
                                          5.422255848393296, 3.750695026282108, 7.1249667803446455]
    assert table.stacks[0][0].tolist() == [1.6153342073613948, 3.0373611353864574, 2.3987865447998047,
                                           4.654994853819259, 3.261269535681214, 6.318014583202324,
                                           0.004162114075940065]
    expected_node4 = [[0.7222, 1.0997, 0.9538, 1.6170, 1.2587, 2.2281],
                      [0.5151, 0.8821, 0.7235, 1.2856, 0.9779, 1.7996],
                      [0.7343, 1.3387, 0.9408, 1.7783, 1.2683, 2.3811]]
    got_node4 = [[round(v, 4) for v in row] for row in table.heads[3].tolist()]
    assert got_node4 == expected_node4
    assert table.final.tolist() == [0.3001111926454486, 0.28059167091292564, 0.26766254444314974]
    assert table.classifier == 0.4041198769001046


def test_mbv2_surplus_rows_reported(caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="densenas.official_lut"):
        _, report = import_official_lut(MBV2, "mbv2")
    assert sorted(report.surplus_rows) == [14, 15, 16]
    assert all(len(rows) == 3 and all(len(r) == 7 for r in rows) for rows in report.surplus_rows.values())
    assert [row[6] for row in report.surplus_rows[16]] == [0.004651305651423907, 0.00428734403668028,
                                                          0.004319518503516611]
    total = sum(v for rows in report.surplus_rows.values() for row in rows for v in row)
    assert total == pytest.approx(542.335 - 480.928, abs=2e-3), "README: sums with and without the surplus rows"
    assert len(report.warnings) == 1 and "14, 15, 16" in report.warnings[0] and "Q14" in report.warnings[0]
    assert report.warnings[0] in caplog.text, "the warning is also logged, not only returned"
    assert report.to_dict()["surplus_values"] == 63


def test_resnet_tables_shapes_values_and_reg10() -> None:
    raw, raw_report = import_official_lut(RES, "resnet")
    reg, reg_report = import_official_lut(RES_REG10, "resnet")
    assert (raw_report.values, reg_report.values) == (315, 315)
    assert raw_report.surplus_rows == {} and raw_report.warnings == ()
    assert [h.shape for h in raw.heads] == [torch.Size([n, 1]) for n in RES_HEAD_BRANCHES]
    assert [s.shape for s in raw.stacks] == [torch.Size([n, 2]) for n in RES_STACK_ROWS]
    assert raw.stem == 0.7470053614992084
    assert raw.heads[0].tolist() == [[1.7158220271871547]] and raw.stacks[0].shape[0] == 0
    assert raw.heads[3][:, 0].tolist() == [1.0193982991305264, 0.9558140388642898, 0.8666880443842724]
    assert raw.stacks[3][0].tolist() == [0.6160835545472425, 0.005083878835042318]
    assert reg.stacks[3][0].tolist() == [0.6160835545472425, 0.06160835545472425]
    assert raw.final.tolist() == [0.13975803298179548, 0.1369504976754237, 0.13584091205789584]
    assert raw.classifier == 0.19902790435636888
    for raw_rows, reg_rows in zip(raw.stacks, reg.stacks, strict=True):
        assert torch.equal(raw_rows[:, 0], reg_rows[:, 0])
        assert torch.allclose(reg_rows[:, 1], raw_rows[:, 0] / 10, rtol=1e-15, atol=0)


def _one_hot_weights(space, topology, path, blocks):
    """One-hot α along a published path; dropped stacked layers are skip_connect after the kept ops."""
    heads = [torch.zeros(len(topology.in_edges[j]), len(space.head_ops), dtype=torch.float64)
             for j in range(1, topology.final_node)]
    stacks = [torch.zeros(topology.stacked_layers[j], len(space.stack_ops), dtype=torch.float64)
              for j in range(1, topology.final_node)]
    head_ops, stack_ops = [], []
    for source, node, block in zip(path[:-2], path[1:-1], blocks, strict=True):
        ops = [*block["stack_ops"], *["skip_connect"] * (topology.stacked_layers[node] - len(block["stack_ops"]))]
        head_ops.append(space.head_ops.index(block["head_op"]))
        stack_ops.append([space.stack_ops.index(op) for op in ops])
        heads[node - 1][topology.in_position(source, node), head_ops[-1]] = 1.0
        for layer, op in enumerate(stack_ops[-1]):
            stacks[node - 1][layer, op] = 1.0
    probs = [torch.zeros(len(edges), dtype=torch.float64) for edges in topology.out_edges]
    for source, target in pairwise(path):
        probs[source][topology.out_position(source, target)] = 1.0
    return heads, stacks, probs, head_ops, stack_ops


@pytest.mark.parametrize(("model", "expected_ms"), [("densenas_a", 13.646), ("densenas_b", 15.817),
                                                    ("densenas_c", 18.012)])
def test_published_path_latency(mbv2, model: str, expected_ms: float) -> None:
    table, _ = mbv2
    space = load_space("mbv2")
    topology = build_topology(space)
    arch = published_archs()["models"][model]
    path, blocks = arch["node_path"], arch["net_config"]["blocks"][1:-1]
    heads, stacks, probs, head_ops, stack_ops = _one_hot_weights(space, topology, path, blocks)
    chained = chained_cost(topology, table, heads, stacks, probs).item()
    assert abs(chained - expected_ms) <= 0.005, f"{model}: chained cost {chained:.4f} ms, expected {expected_ms}"
    direct = architecture_cost(topology, table, path, head_ops, stack_ops)
    assert abs(direct - expected_ms) <= 0.005, f"{model}: architecture cost {direct:.4f} ms, expected {expected_ms}"


@pytest.mark.parametrize("text", ["[1.0, [], [], 2.0,]", "[1.0, 2.0]", json.dumps([-1.0, [], [], 1.0])],
                         ids=["python-literal-not-json", "not-a-4-list", "negative-value"])
def test_malformed_tables_are_refused(tmp_path: Path, text: str) -> None:
    bad = tmp_path / "bad_table"
    bad.write_text(text)
    with pytest.raises(DensenasError, match=str(bad)):
        import_official_lut(bad, "mbv2")


def test_table_for_another_space_or_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DensenasError, match=r"\[1\] must list 20 routing blocks"):
        import_official_lut(MBV2, "resnet")
    with pytest.raises(DensenasError, match="not found"):
        import_official_lut(tmp_path / "missing", "mbv2")


def test_missing_stacked_rows_are_refused(tmp_path: Path) -> None:
    raw = json.loads(official_table_path(MBV2).read_text())
    raw[1][0][1] = raw[1][0][1][:2]
    short = tmp_path / "short"
    short.write_text(json.dumps(raw))
    with pytest.raises(DensenasError, match=r"node 1\): 2 stacked-layer rows, the space has 3 layers"):
        import_official_lut(short, "mbv2")


def test_conversion_to_lut_schema_round_trips(tmp_path: Path, run_cli) -> None:
    out = tmp_path / "official_mbv2.json"
    result = run_cli("lut", "--space", "mbv2", "--from-official", MBV2, "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "surplus" in result.stderr and "Q14" in result.stderr, "the surplus rows are reported on the CLI"
    doc = read_lut(out)
    assert (doc["batch"], doc["input_size"], doc["num_classes"]) == (32, 224, 100)
    assert doc["device"]["name"] == "NVIDIA TITAN Xp (official DenseNAS table)"
    assert doc["entries"]["mbconv_k3_t6|in=16x112x112|out=24|s=2|b=32|float32"]["mean"] == 3.9147443482370092
    space = load_space("mbv2")
    topology = build_topology(space)
    loaded = load_cost_table(out, space, topology, input_size=224, batch=32, metric="latency")
    official, _ = import_official_lut(MBV2, space)
    assert loaded.stem == official.stem and loaded.classifier == official.classifier
    assert all(torch.equal(a, b) for a, b in zip(loaded.heads, official.heads, strict=True))
    assert torch.equal(loaded.final, official.final)
    # the three stacked layers of a node share one signature: the converted entry is their mean
    for got, rows in zip(loaded.stacks, official.stacks, strict=True):
        assert torch.allclose(got, rows.mean(dim=0).expand_as(rows), rtol=1e-12, atol=0)
    stack_entry = doc["entries"]["skip_connect|in=24x56x56|out=24|s=1|b=32|float32"]
    assert stack_entry["count"] == 3
    with pytest.raises(DensenasError, match="lacks the min of 402 op"):
        load_cost_table(out, space, topology, input_size=224, batch=32, statistic="min")
