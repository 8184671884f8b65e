"""Durable file writes and streaming hashes: the only place cpv writes bytes to disk.

Every write goes to a temporary file in the destination's folder and is renamed into place, so a
reader sees the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

CHUNK = 4 * 1024 * 1024

Progress = Callable[[int, int], None]
"""A progress callback: ``progress(bytes_done, bytes_total)``."""


def atomic_write_bytes(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename."""
    with atomic_output(path, mode=mode) as handle:
        handle.write(data)


@contextlib.contextmanager
def atomic_output(path: Path, *, mode: int = 0o644) -> Iterator[BinaryIO]:
    """Yield a file that replaces ``path`` only when the block ends without an error."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".cpv-tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def md5_file(path: Path, *, progress: Progress | None = None) -> str:
    """The md5 of a file, read in chunks (never the whole file in memory)."""
    digest = hashlib.md5(usedforsecurity=False)
    total = path.stat().st_size
    done = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
            done += len(chunk)
            if progress:
                progress(done, total)
    return digest.hexdigest()


def copy_with_md5(source: BinaryIO, target: BinaryIO, *, total: int,
                  progress: Progress | None = None) -> tuple[str, int]:
    """Copy a stream to another while hashing it; returns (md5, bytes copied)."""
    digest = hashlib.md5(usedforsecurity=False)
    done = 0
    while chunk := source.read(CHUNK):
        digest.update(chunk)
        target.write(chunk)
        done += len(chunk)
        if progress:
            progress(done, total)
    return digest.hexdigest(), done


def md5_bytes(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def is_within(path: Path, root: Path) -> bool:
    """Whether ``path`` (already resolved) lies inside ``root`` (already resolved)."""
    try:
        path.relative_to(root)
    except ValueError:
        return False
    return True
