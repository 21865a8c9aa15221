"""The DenseNAS search stage: bi-level optimisation of the supernet (weights by SGD on search-train, α/β by Adam
on search-val with the chained cost term) and the derivation of a discrete architecture from α/β (SPEC §4–§7).

``densenas search`` runs :func:`densenas.search.loop.run_search`; ``densenas derive`` uses
:mod:`densenas.search.derive` on the ``arch_params.json`` a search wrote.
"""
