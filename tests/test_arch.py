"""PathArch -> net_config assembly (SPEC §7.2) and the random-search sampler."""

from __future__ import annotations

import random

import pytest

from densenas.arch import PathArch, sample_arch, sample_arch_near, to_net_config
from densenas.complexity import count_mult_adds
from densenas.errors import DensenasError
from densenas.models import build_network
from densenas.registry import get_entry
from densenas.spaces import build_topology, load_space

MBV2 = load_space("mbv2")
MBV2_TOPOLOGY = build_topology(MBV2)

# DenseNAS-C (SPEC §7.5): path 0→1→4→7→10→11→12→16→17 with the dropped layers as trailing skips.
SKIP = "skip_connect"
DENSENAS_C = PathArch(
    path=(0, 1, 4, 7, 10, 11, 12, 16, 17),
    head_ops=("mbconv_k3_t6", "mbconv_k7_t6", "mbconv_k5_t6", "mbconv_k3_t6", "mbconv_k3_t6", "mbconv_k3_t3",
              "mbconv_k7_t6"),
    stack_ops=((SKIP, SKIP, SKIP), ("mbconv_k3_t3", SKIP, SKIP), ("mbconv_k3_t6", "mbconv_k3_t3", SKIP),
               ("mbconv_k3_t3", "mbconv_k3_t3", SKIP), ("mbconv_k7_t3", "mbconv_k5_t6", "mbconv_k7_t3"),
               ("mbconv_k3_t6", "mbconv_k3_t6", "mbconv_k3_t6"), ()),
)


def test_densenas_c_path_assembles_the_published_net_config() -> None:
    assert to_net_config(DENSENAS_C, MBV2, MBV2_TOPOLOGY) == get_entry("densenas_c").net_config


def test_resnet_net_config_drops_the_final_node() -> None:
    space = load_space("resnet")
    topology = build_topology(space)
    config = to_net_config(sample_arch(space, topology, random.Random(3)), space, topology)
    assert config.last_dim is None and config.blocks[0].in_ch == space.stem_width
    assert config.blocks[-1].out_ch in (480, 496, 512)


def test_invalid_paths_are_refused() -> None:
    with pytest.raises(DensenasError, match="no edge 1->9"):
        to_net_config(PathArch((0, 1, 9, 17), ("a", "b"), ((), ())), MBV2, MBV2_TOPOLOGY)


def test_random_search_lands_within_tolerance() -> None:
    target = 360_808_256
    arch, mult_adds = sample_arch_near(MBV2, MBV2_TOPOLOGY, target, tolerance=0.05, seed=2)
    network = build_network(to_net_config(arch, MBV2, MBV2_TOPOLOGY))
    assert count_mult_adds(network, (1, 3, 224, 224)) == mult_adds
    assert abs(mult_adds - target) <= 0.05 * target
    assert sample_arch_near(MBV2, MBV2_TOPOLOGY, target, tolerance=0.05, seed=2)[0] == arch, "seeded: same arch"
