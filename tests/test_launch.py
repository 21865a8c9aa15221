"""densenas.launch: torchrun's arguments for one node (standalone) and several (c10d rendezvous), and a refusal
when several nodes have no rendezvous to meet at."""

from __future__ import annotations

import pytest

from densenas.errors import DensenasError
from densenas.launch import torchrun_args


def test_one_node_is_standalone() -> None:
    assert torchrun_args(1, 8) == ["--standalone", "--nproc-per-node", "8"]


def test_several_nodes_meet_at_a_c10d_rendezvous() -> None:
    args = torchrun_args(4, 8, endpoint="node001:29400", run_id="12345")
    assert args == ["--nnodes", "4", "--nproc-per-node", "8", "--rdzv-backend", "c10d",
                    "--rdzv-endpoint", "node001:29400", "--rdzv-id", "12345"]


def test_several_nodes_without_a_rendezvous_are_refused() -> None:
    with pytest.raises(DensenasError, match="2 nodes need a rendezvous endpoint and id"):
        torchrun_args(2, 8)
