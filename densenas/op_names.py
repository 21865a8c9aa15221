"""Op names of both search spaces (SPEC.md §2.4) and what they mean, without torch: net_configs and search
spaces are validated by the Snakemake process too, which never builds a module (:mod:`densenas.ops` does)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from densenas.errors import DensenasError

_MBCONV = re.compile(r"^mbconv_k(?P<k>[357])_t(?P<t>[136])$")
_PLAIN_OPS = ("skip_connect", "basic_block", "bottle_neck")


@dataclass(frozen=True)
class OpSpec:
    """What an op name means: family and, for MBConv, kernel and expansion."""

    family: str
    kernel: int = 0
    expansion: int = 0


def parse_op(name: str) -> OpSpec:
    match = _MBCONV.match(name)
    if match:
        return OpSpec("mbconv", int(match["k"]), int(match["t"]))
    if name in _PLAIN_OPS:
        return OpSpec(name)
    raise DensenasError(
        f"unknown op '{name}' (expected mbconv_k{{3,5,7}}_t{{1,3,6}}, {', '.join(_PLAIN_OPS)})"
    )


def is_known_op(name: str) -> bool:
    try:
        parse_op(name)
    except DensenasError:
        return False
    return True
