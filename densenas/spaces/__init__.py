"""Search spaces as data (one YAML file each) and the dense-connection topology computed from them."""

from densenas.spaces.space import BNSpec, SearchSpace, list_spaces, load_space
from densenas.spaces.topology import Edge, Topology, build_topology, count_paths

__all__ = [
    "BNSpec",
    "Edge",
    "SearchSpace",
    "Topology",
    "build_topology",
    "count_paths",
    "list_spaces",
    "load_space",
]
