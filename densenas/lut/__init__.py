"""Per-op cost lookup tables (SPEC.md §5.1): op signatures, profiling, LUT files and the CostTables built from them.

``densenas lut`` writes ``results/luts/{space}/{device_tag}.json``; the search loads it with
:func:`load_cost_table` (latency) or computes :func:`flops_cost_table` on the fly (FLOPs).
"""

from densenas.lut.lut_file import (
    INTEGRITY,
    build_lut,
    device_tag,
    read_lut,
    validate_lut,
    with_content_sha256,
    write_lut,
)
from densenas.lut.sites import OpSite, SupernetSites, build_site, node_resolutions, supernet_sites
from densenas.lut.tables import apply_skip_reg, cost_table_from_sites, flops_cost_table, load_cost_table

__all__ = [
    "INTEGRITY", "OpSite", "SupernetSites", "apply_skip_reg", "build_lut", "build_site", "cost_table_from_sites",
    "device_tag", "flops_cost_table", "load_cost_table", "node_resolutions", "read_lut", "supernet_sites",
    "validate_lut", "with_content_sha256", "write_lut",
]
