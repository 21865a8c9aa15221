"""Per-op costs laid out like the supernet (SPEC.md §5.1): what the chained cost consumes.

Built from a measured latency LUT, the imported official table or the analytic FLOPs counter; the layout is
checked against the topology so a table for another space can never be used silently.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from densenas.errors import DensenasError
from densenas.spaces.topology import Topology


@dataclass(frozen=True)
class CostTable:
    """Costs in one unit. ``heads[j-1][b, o]``: head op o of node j's branch b (in-edge order);
    ``stacks[j-1][l, o]``: stack op o of node j's stacked layer l; ``final[b]``: final-node branch b."""

    stem: float
    heads: tuple[torch.Tensor, ...]
    stacks: tuple[torch.Tensor, ...]
    final: torch.Tensor
    classifier: float
    unit: str

    def check_layout(self, topology: Topology, num_head_ops: int, num_stack_ops: int, source: str) -> None:
        """Raise a DensenasError naming ``source`` unless every tensor has the topology's shape."""
        blocks = topology.final_node - 1
        if len(self.heads) != blocks or len(self.stacks) != blocks:
            raise DensenasError(f"{source}: cost table has {len(self.heads)} routing blocks, the space has {blocks}")
        for j in range(1, topology.final_node):
            want_head = (len(topology.in_edges[j]), num_head_ops)
            want_stack = (topology.stacked_layers[j], num_stack_ops)
            if tuple(self.heads[j - 1].shape) != want_head:
                raise DensenasError(f"{source}: node {j} head costs have shape {tuple(self.heads[j - 1].shape)}, "
                                    f"expected {want_head}")
            if tuple(self.stacks[j - 1].shape) != want_stack:
                raise DensenasError(f"{source}: node {j} stack costs have shape {tuple(self.stacks[j - 1].shape)}, "
                                    f"expected {want_stack}")
        want_final = (len(topology.in_edges[topology.final_node]),)
        if tuple(self.final.shape) != want_final:
            raise DensenasError(
                f"{source}: final-node costs have shape {tuple(self.final.shape)}, expected {want_final}"
            )

    def to(self, dtype: torch.dtype) -> CostTable:
        return CostTable(self.stem, tuple(h.to(dtype) for h in self.heads), tuple(s.to(dtype) for s in self.stacks),
                         self.final.to(dtype), self.classifier, self.unit)
