"""Recently replaced workspace checkpoints, kept by rename so switching back costs nothing.

Reverting ``model.bin`` from v0.2 to v0.1 moves the v0.2 file (already uploaded, so its md5 is
known) into ``.git/cpv/pool/`` instead of deleting it, and takes v0.1 from there when it is
waiting. A rename is O(1) at any size, where copying a GiB from the cache is not. Pool files
are private (never links to the cache), so a training script may rewrite the file in place
afterwards; an entry whose inode, size or mtime changed since it was put away is dropped, not
trusted.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from pathlib import Path

from cp_manage.backends.cache import FileStat
from cp_manage.fsutil import atomic_write_bytes

logger = logging.getLogger(__name__)

KEEP = 2
"""Entries kept: enough to switch back and forth between two versions."""


class WorkspacePool:
    """``md5 -> file`` in a folder on the repository's own filesystem."""

    def __init__(self, root: Path, *, keep: int = KEEP) -> None:
        self.root = root
        self.keep = keep
        self._index_path = root / "index.json"

    def _index(self) -> dict[str, list[int | float]]:
        try:
            loaded = json.loads(self._index_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return loaded if isinstance(loaded, dict) else {}

    def _save(self, index: dict[str, list[int | float]]) -> None:
        atomic_write_bytes(self._index_path, json.dumps(index).encode())

    def put(self, source: Path, md5: str) -> bool:
        """Move ``source`` (whose content is known to hash to ``md5``) into the pool."""
        self.root.mkdir(parents=True, exist_ok=True)
        index = self._index()
        target = self.root / md5
        try:
            stat = FileStat.of(source)
            os.replace(source, target)
        except OSError as e:  # another filesystem, say: the caller copies instead
            logger.debug("Not pooling %s: %s", source, e)
            return False
        index[md5] = [stat.ino, stat.size, stat.mtime_ns, time.time()]
        for old in sorted(index, key=lambda key: index[key][3])[:-self.keep]:
            self._drop(old, index)
        self._save(index)
        return True

    def take(self, md5: str, target: Path) -> bool:
        """Move the pooled file for ``md5`` to ``target``; False when there is none (or it
        changed since it was put away, and was dropped)."""
        index = self._index()
        entry = index.get(md5)
        source = self.root / md5
        if entry is None:
            return False
        try:
            intact = FileStat.of(source) == FileStat(int(entry[0]), int(entry[1]), int(entry[2]))
        except OSError:
            intact = False
        if not intact:
            self._drop(md5, index)
            self._save(index)
            return False
        try:
            os.replace(source, target)
        except OSError:
            return False
        del index[md5]
        self._save(index)
        return True

    def _drop(self, md5: str, index: dict[str, list[int | float]]) -> None:
        index.pop(md5, None)
        with contextlib.suppress(FileNotFoundError):
            (self.root / md5).unlink()
