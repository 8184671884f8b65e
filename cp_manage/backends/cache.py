"""The local DVC cache (``.dvc/cache``) and the record of which workspace files hash to what.

Cache objects are private read-only copies, never links: a training script that rewrites
``model.bin`` in place (``torch.save`` every epoch) must not change a stored version, and with
hardlinks or symlinks it would (or fail with a permission error). The stat record (inode, size,
mtime) lets an unchanged file skip hashing, as DVC's own state database does.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from cp_manage.backends.storage import object_key
from cp_manage.errors import ArtifactNotFoundError, IntegrityError
from cp_manage.faults import crash_point
from cp_manage.fsutil import (
    Progress,
    atomic_output,
    atomic_write_bytes,
    copy_file_md5,
    explained,
    md5_file,
)

BACKGROUND_SYNC = 64 * 1024 * 1024
"""Objects this large reach the disk while they upload rather than before."""


@dataclass(frozen=True)
class FileStat:
    ino: int
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: Path) -> FileStat:
        info = path.stat()
        return cls(info.st_ino, info.st_size, info.st_mtime_ns)


class StatRecord:
    """``path -> (stat, md5)`` for workspace files cpv has hashed or written, kept in ``.git``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._entries: dict[str, list[int | str]] | None = None

    def _load(self) -> dict[str, list[int | str]]:
        if self._entries is None:
            try:
                loaded = json.loads(self.path.read_text(encoding="utf-8"))
                self._entries = loaded if isinstance(loaded, dict) else {}
            except (OSError, ValueError):
                self._entries = {}
        return self._entries

    def lookup(self, key: str, stat: FileStat) -> str | None:
        entry = self._load().get(key)
        if isinstance(entry, list) and entry[:3] == [stat.ino, stat.size, stat.mtime_ns]:
            return str(entry[3])
        return None

    def remember(self, key: str, stat: FileStat, md5: str) -> None:
        self._load()[key] = [stat.ino, stat.size, stat.mtime_ns, md5]

    def save(self) -> None:
        if self._entries is not None:
            atomic_write_bytes(self.path, json.dumps(self._entries).encode())


class LocalCache:
    """A DVC 3 cache folder: object ``oid`` at ``{root}/files/md5/ab/cdef...``, mode 0444.

    A large object reaches the disk (``fsync``) on a thread of its own while it is being
    uploaded; ``flush`` waits for that, and a copy the disk refused is dropped, so every entry
    that outlives ``flush`` is durable. ``Repository.locked`` flushes before it records anything.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._syncing: dict[str, threading.Thread] = {}
        self._unsynced: set[str] = set()
        self._lock = threading.Lock()  # datasets add files from many threads

    def path(self, oid: str) -> Path:
        return self.root / object_key(oid)

    def has(self, oid: str) -> bool:
        return self.path(oid).is_file()

    def add_file(self, source: Path, *, known_md5: str | None = None,
                 progress: Progress | None = None) -> str:
        """Copy ``source`` into the cache and hash the copy; returns its md5.

        The copy, not the workspace file, is hashed and later uploaded, so the stored bytes are
        exactly the hashed bytes even if a training script rewrites the file meanwhile.

        Raises:
            ArtifactNotFoundError: the file vanished or changed while it was being read.
        """
        if known_md5 and self.has(known_md5):
            return known_md5
        before = FileStat.of(source)
        with explained(self.root, needed=before.size):
            md5 = self._copy_in(source, before, progress)
        if before.size >= BACKGROUND_SYNC:
            self._sync_in_background(md5)
        return md5

    def _copy_in(self, source: Path, before: FileStat, progress: Progress | None) -> str:
        incoming = self.root / "files" / "md5"
        incoming.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".incoming.", suffix=".cpv-tmp", dir=incoming)
        try:
            with open(source, "rb") as reader, os.fdopen(fd, "wb") as writer:
                md5, _ = copy_file_md5(reader, writer, total=before.size, progress=progress)
                crash_point("hashing")
                writer.flush()
                if before.size < BACKGROUND_SYNC:
                    os.fsync(writer.fileno())
            if FileStat.of(source) != before:
                raise ArtifactNotFoundError(
                    f"{source} changed while cpv was reading it",
                    hint="Wait until the training script has finished writing it, then upload "
                    "again.")
            os.chmod(tmp, 0o444)
            final = self.path(md5)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, final)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        return md5

    def _sync_in_background(self, oid: str) -> None:
        def sync() -> None:
            try:
                with open(self.path(oid), "rb") as handle:
                    os.fsync(handle.fileno())
            except OSError:
                with self._lock:
                    self._unsynced.add(oid)

        self._flush_one(oid)
        thread = threading.Thread(target=sync, name="cpv-fsync", daemon=True)
        with self._lock:
            self._syncing[oid] = thread
        thread.start()

    def _flush_one(self, oid: str) -> None:
        with self._lock:
            thread = self._syncing.pop(oid, None)
        if thread is not None:
            thread.join()
        with self._lock:
            refused = oid in self._unsynced
            self._unsynced.discard(oid)
        if refused:
            self.discard(oid)  # the disk refused it: better no copy than a doubtful one

    def flush(self) -> None:
        """Wait until every object added is on disk; drop any the disk refused."""
        with self._lock:
            pending = [*self._syncing, *self._unsynced]
        for oid in pending:
            self._flush_one(oid)

    def add_bytes(self, data: bytes, md5: str) -> None:
        if not self.has(md5):
            atomic_write_bytes(self.path(md5), data, mode=0o444)

    def checkout(self, oid: str, target: Path, *, expected_md5: str,
                 progress: Progress | None = None) -> None:
        """Write a private, writable copy of object ``oid`` to ``target``, verified.

        Raises:
            IntegrityError: the cached object does not match its md5 (it is then removed).
        """
        source = self.path(oid)
        size = source.stat().st_size
        with open(source, "rb") as reader, atomic_output(target, mode=0o644, size=size) as writer:
            md5, _ = copy_file_md5(reader, writer, total=size, progress=progress)
            if md5 != expected_md5:
                self.discard(oid)
                raise IntegrityError(f"The cached copy of {oid} is corrupt and was removed",
                                     hint="Run the command again to fetch it from storage.")

    def verify(self, oid: str) -> bool:
        return self.has(oid) and md5_file(self.path(oid)) == oid.removesuffix(".dir")

    def discard(self, oid: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path(oid))
