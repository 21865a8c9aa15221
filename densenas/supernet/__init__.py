"""The DenseNAS super network: routing blocks over the dense topology, mixed layers, α/β, op sampling (SPEC §3–§4).

Public API, as the search uses it::

    from densenas.supernet import Supernet
    from densenas.spaces import load_space

    model = Supernet(load_space("mbv2"), num_classes=100, quirks=params.quirks)   # quirks default: official code
    alpha, beta = model.alpha_parameters(), model.beta_parameters()             # Adam groups (alpha_lr, beta_lr)
    weights = model.weight_parameters()                                          # SGD; arch_parameters() = α + β

    sampled = model.sample_ops("uniform", k=1, generator=g)   # warm-up weight step ("prob" after warm-up)
    sampled = model.sample_ops("prob", k=2, generator=g)      # architecture step
    sampled = model.sample_ops("all")                         # supernet validation
    # ``sampled`` is a frozen, picklable SampledOps: draw it on rank 0 and broadcast it (broadcast_object_list).

    logits, cost = model(images, sampled, cost_table)         # cost: chained expected cost, differentiable
    logits, _ = model(images, sampled)                         # weight step: no cost
    model.expected_cost(sampled, cost_table)                   # the same cost without a forward (logging)

Every candidate op of every mixed layer is a module of the network; the forward runs every edge and, in each mixed
layer, only the sampled ops, weighted by softmax(α[S]/T) over the sample (``model.op_weights(sampled)`` gives those
weights as full rows). α and β live in ``model.arch`` (``ArchParameters``: ``beta[i]``, ``alpha_head[j-1]``,
``alpha_stack[j-1]``) and are part of ``state_dict()`` under ``arch.``. A cost table's layout is checked against the
topology on every use. The chain itself, ``chained_cost(topology, table, head_weights, stack_weights, path_probs)``,
and the cost of one fixed architecture, ``architecture_cost(topology, table, path, head_ops, stack_ops)``, are in
:mod:`densenas.chained_cost`.
"""

from densenas.supernet.arch_params import ArchParameters
from densenas.supernet.mixed_op import MixedOp, sampled_op_weights
from densenas.supernet.network import Supernet
from densenas.supernet.routing_block import FinalNode, RoutingBlock
from densenas.supernet.sampling import SAMPLE_POLICIES, SampledOps, sample_ops

__all__ = [
    "SAMPLE_POLICIES",
    "ArchParameters",
    "FinalNode",
    "MixedOp",
    "RoutingBlock",
    "SampledOps",
    "Supernet",
    "sample_ops",
    "sampled_op_weights",
]
