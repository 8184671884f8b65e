"""One cpv process at a time on a shared folder: a file lock with a readable refusal."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock, Timeout

from cp_manage.errors import ConcurrentModificationError

WAIT_SECONDS = 600


@contextlib.contextmanager
def exclusive(lock_file: Path, busy: str) -> Iterator[None]:
    """Hold ``lock_file`` for the block, waiting up to ten minutes for another holder.

    Raises:
        ConcurrentModificationError: ``busy`` (what the other process is doing) when the wait
            ran out.
    """
    lock = FileLock(str(lock_file))
    try:
        lock.acquire(timeout=WAIT_SECONDS)
    except Timeout as e:
        raise ConcurrentModificationError(
            busy, hint="Wait for it to finish, then run this command again.") from e
    try:
        yield
    finally:
        lock.release()
