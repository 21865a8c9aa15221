"""Atomic file output and checksums, so that a killed stage never leaves a file that looks complete."""

from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import json
import os
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from densenas.errors import DensenasError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` only if the block succeeds.

    A write that fails (disk full, permission, a folder in the way) leaves ``path`` as it was, removes the
    temporary file and raises a one-line :class:`DensenasError` naming ``path``.
    """
    target = Path(path)
    check_writable(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        _remove_dead_writers_temps(target)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.{_WRITER}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise write_error(target, exc) from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; outputs get the usual permissions
        os.replace(tmp, target)
    except OSError as exc:
        raise write_error(target, exc) from None
    finally:
        tmp.unlink(missing_ok=True)


_WRITER = f"{socket.gethostname().replace('.', '_')}-{os.getpid()}"  # in every temp name: whose file it is


def _remove_dead_writers_temps(target: Path) -> None:
    """Remove the temp files of ``target`` that a killed writer left, and only those: a temp file whose writer is
    alive (another process, another host on a shared file system) is being written and stays."""
    here = _WRITER.rsplit("-", 1)[0]
    prefix = f".{target.name}."
    for temp in target.parent.glob(f"{glob.escape(prefix)}*.tmp"):
        host, _, pid = temp.name[len(prefix):].split(".", 1)[0].rpartition("-")
        if host == here and pid.isdigit() and not _alive(int(pid)):
            temp.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def check_writable(path: str | os.PathLike[str]) -> None:
    """Refuse an output file that could not be written, before a stage spends its time: a folder standing at
    ``path``, a file standing where one of its folders would go, or a folder that is not writable."""
    target = Path(path)
    if target.is_dir():
        raise DensenasError(f"{target}: is a folder, expected the path of an output file")
    check_writable_dir(target.parent)


def check_writable_dir(path: str | os.PathLike[str]) -> None:
    """Refuse an output folder that could not be made or written (see :func:`check_writable`)."""
    folder = Path(path)
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise DensenasError(f"{existing}: is a file, so the output folder {folder} cannot be made there")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise DensenasError(f"{existing}: folder is not writable (permission denied), needed for output {folder}")


def write_error(target: Path, exc: OSError) -> DensenasError:
    reason = exc.strerror or exc.__class__.__name__
    if exc.errno == errno.ENOSPC:
        reason += "; free some space and run the stage again (the previous file, if any, is unchanged)"
    return DensenasError(f"{target}: cannot write the output ({reason})")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: str | os.PathLike[str], text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike[str], data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def sha256_file(path: str | os.PathLike[str], chunk_bytes: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()
