"""The packed split format: encoded images concatenated in one shard file, plus a NumPy index and the names.

A split folder holds ``images.bin`` (JPEG/PNG bytes back to back), ``index.npy`` (int64 rows: offset, size, label)
and ``names.txt`` (one sample name per row). Reading a sample is one ``pread`` and one libjpeg-turbo decode;
`docs/benchmarks.md` has the measurements behind this choice.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType

import numpy as np
import torch
from torchvision.io import ImageReadMode, decode_image

from densenas.atomic import sha256_file
from densenas.errors import DensenasError

SHARD = "images.bin"
INDEX = "index.npy"
NAMES = "names.txt"
SPLIT_FILES = (SHARD, INDEX, NAMES)


def decode_rgb(data: bytes | bytearray) -> torch.Tensor:
    """Encoded JPEG/PNG bytes -> uint8 (3, H, W) RGB via libjpeg-turbo/libpng; grey and CMYK become RGB.

    torchvision 0.29 marks its image codecs deprecated in favour of TorchCodec; this is the one decode call site.
    """
    buffer = data if isinstance(data, bytearray) else bytearray(data)
    return decode_image(torch.frombuffer(buffer, dtype=torch.uint8), mode=ImageReadMode.RGB)


class PackWriter:
    """Append (encoded image, label, name) records to a new split folder; ``close`` writes the index."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=False)
        self._shard = open(folder / SHARD, "wb")  # closed by close() or __exit__
        self._rows: list[tuple[int, int, int]] = []
        self._names: list[str] = []
        self._offset = 0

    def append(self, data: bytes, label: int, name: str) -> None:
        if "\n" in name:
            raise ValueError(f"sample name {name!r} contains a newline")
        self._shard.write(data)
        self._rows.append((self._offset, len(data), label))
        self._names.append(name)
        self._offset += len(data)

    def close(self) -> dict[str, dict[str, int | str]]:
        """Finish the split; return {file name: {bytes, sha256}} for the manifest."""
        self._shard.close()
        np.save(self.folder / INDEX, np.asarray(self._rows, dtype=np.int64).reshape(-1, 3))
        (self.folder / NAMES).write_text("".join(f"{n}\n" for n in self._names))
        return {name: {"bytes": (self.folder / name).stat().st_size, "sha256": sha256_file(self.folder / name)}
                for name in SPLIT_FILES}

    def __enter__(self) -> PackWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._shard.close()


class PackReader:
    """Random access to the records of a split folder; the shard is opened lazily so each worker has its own."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        index = np.load(folder / INDEX)
        self.offsets = index[:, 0]
        self.sizes = index[:, 1]
        self.labels = index[:, 2]
        self._fd: int | None = None
        self._pid = -1

    def __len__(self) -> int:
        return len(self.labels)

    def read(self, i: int) -> bytearray:
        """The encoded bytes of record ``i`` (a writable buffer, so torch.frombuffer takes it without a copy)."""
        if self._fd is None or self._pid != os.getpid():
            self._fd = os.open(self.folder / SHARD, os.O_RDONLY)
            self._pid = os.getpid()
        buffer = bytearray(int(self.sizes[i]))
        if os.preadv(self._fd, [buffer], int(self.offsets[i])) != len(buffer):
            raise DensenasError(f"{self.folder / SHARD}: truncated at record {i}")
        return buffer

    def __getstate__(self) -> dict[str, object]:
        return {**self.__dict__, "_fd": None, "_pid": -1}


def verify_split(folder: Path, files: dict[str, dict[str, int | str]]) -> None:
    """Refuse a split whose files differ from the manifest's sizes or sha256 checksums, naming the file."""
    for name, expected in files.items():
        path = folder / name
        if not path.is_file():
            raise DensenasError(f"{path}: missing (listed in the manifest); run `densenas prepare` again")
        size = path.stat().st_size
        if size != expected["bytes"]:
            raise DensenasError(f"{path}: {size} bytes, the manifest says {expected['bytes']}; "
                                f"the prepared data changed, run `densenas prepare` again")
        if sha256_file(path) != expected["sha256"]:
            raise DensenasError(f"{path}: sha256 differs from the manifest's; the prepared data changed, "
                                f"run `densenas prepare` again")
