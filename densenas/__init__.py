"""DenseNAS reproduction: densely connected search space, chained cost, search, retraining.

The library behind the ``densenas`` CLI; Snakemake and DVC call the CLI, never the library.
"""

__version__ = "0.1.0"
