"""Data: raw readers, the `prepare` stage, the packed split format and the loaders the search and training use.

`prepare` writes data/prepared/{dataset}/ (search_train, search_val, train, val, manifest.json); stages read it
only through `build_loader` and `read_manifest`.
"""

from densenas.data.loaders import build_loader, read_manifest, set_loader_epoch
from densenas.data.prepare import SPLITS, prepare

__all__ = ["SPLITS", "build_loader", "prepare", "read_manifest", "set_loader_epoch"]
