"""net_config: JSON round trip, the official string format (no eval), and validation errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from densenas.errors import DensenasError
from densenas.net_config import load_net_config, net_config_from_dict, parse_official_string
from densenas.registry import get_entry, published_archs

DENSENAS_C_OFFICIAL = """[[16, 16], 'mbconv_k3_t1', [], 0, 1]|
[[16, 24], 'mbconv_k3_t6', [], 0, 2]|
[[24, 48], 'mbconv_k7_t6', ['mbconv_k3_t3'], 1, 2]|
[[48, 72], 'mbconv_k5_t6', ['mbconv_k3_t6', 'mbconv_k3_t3'], 2, 2]|
[[72, 128], 'mbconv_k3_t6', ['mbconv_k3_t3', 'mbconv_k3_t3'], 2, 1]|
[[128, 160], 'mbconv_k3_t6', ['mbconv_k7_t3', 'mbconv_k5_t6', 'mbconv_k7_t3'], 3, 2]|
[[160, 176], 'mbconv_k3_t3', ['mbconv_k3_t6', 'mbconv_k3_t6', 'mbconv_k3_t6'], 3, 1]|
[[176, 384], 'mbconv_k7_t6', [], 0, 1]|
[[384, 1984], 'conv1_1']
net_type: mbv2
"""


@pytest.mark.parametrize("name", ["densenas_a", "densenas_b", "densenas_c", "resnet_space_issue19"])
def test_json_and_string_round_trips(name: str, tmp_path: Path) -> None:
    config = get_entry(name).net_config
    assert config is not None
    assert net_config_from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert parse_official_string(config.to_official_string()) == config
    path = tmp_path / "net_config.json"
    path.write_text(json.dumps(config.to_dict()))
    assert load_net_config(path) == config


def test_official_string_of_densenas_c_matches_the_published_data() -> None:
    parsed = parse_official_string(DENSENAS_C_OFFICIAL)
    expected = net_config_from_dict(published_archs()["models"]["densenas_c"]["net_config"])
    assert parsed == expected


def test_official_string_is_parsed_as_data_not_code() -> None:
    with pytest.raises(DensenasError, match="unexpected characters"):
        parse_official_string("[[16, 16], __import__('os').system('true'), [], 0, 1]\nnet_type: mbv2")


def _c_dict() -> dict:
    return json.loads(json.dumps(published_archs()["models"]["densenas_c"]["net_config"]))


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["blocks"][2].update(head_op="mbconv_k9_t6"), "unknown op 'mbconv_k9_t6'"),
        (lambda d: d["blocks"][3].update(in_ch=50), "in_ch 50 does not match the previous block's out_ch 48"),
        (lambda d: d["blocks"][1].update(stride=3), "blocks/1/stride"),
        (lambda d: d.update(blocks=[]), "blocks"),
        (lambda d: d.update(net_type="vgg"), "net_type"),
        (lambda d: (d["blocks"].pop(), d.pop("last_dim")), "needs a final conv1_1 entry"),
        (lambda d: d["blocks"][4]["stack_ops"].append("skip_connect"), "drop skip_connect"),
    ],
)
def test_invalid_net_configs_are_refused(mutate, message: str) -> None:
    raw = _c_dict()
    mutate(raw)
    with pytest.raises(DensenasError, match=message.replace("(", r"\(")):
        net_config_from_dict(raw, "test.json")
