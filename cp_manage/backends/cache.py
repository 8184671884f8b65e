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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from cp_manage.backends.objects import ObjectId, object_key
from cp_manage.backends.partial import (
    PARTIAL_FOLDER,
    PARTIAL_SUFFIX,
    STATE_SUFFIX,
    Leftover,
    file_leftovers,
    partial_files,
    partial_of_state,
)
from cp_manage.errors import ArtifactNotFoundError, IntegrityError
from cp_manage.faults import crash_point
from cp_manage.fsutil import (
    PIPELINE_MIN,
    Progress,
    atomic_output,
    atomic_write_bytes,
    clone_file,
    copy_file_md5,
    explained,
    fsync_path,
    md5_bytes,
    md5_file,
    sync_filesystem,
    write_all,
)

BACKGROUND_SYNC = 64 * 1024 * 1024
"""Objects this large reach the disk while they upload rather than before."""
SMALL_FILE = 1024 * 1024
"""Files up to this size are copied into the cache in one read and one write."""
LARGE_COPIES = 1
"""Files above ``fsutil.PIPELINE_MIN`` are copied in this many at a time, however many threads
ask (a folder of shards). Each holds ``fsutil.DIRECT_DEPTH`` buffers and a core for md5; one
at a time, the first shard is ready to be sent soonest (``manage.sending``), and the upload
under way keeps the other core."""
SYNC_EACH = 16
"""Up to this many small objects, ``flush`` syncs each; more, the whole filesystem at once."""


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

    No entry is recorded anywhere (stat record, storage record, commit) before it is on disk,
    but ``add_file`` does not wait for the disk itself: ``flush`` does, and ``Repository.locked``
    (like ``upload``) flushes before it records anything. A large object reaches the disk
    (``fsync``) on a thread of its own while it is being uploaded. Small objects, a dataset's
    thousands of files, are synced together by ``flush``: one ``syncfs`` of the cache's
    filesystem where it reports failed writes (Linux 5.8+), else one ``fsync`` per file and
    folder; an ``fsync`` per small file as it is written would cost more than the copy. Until
    ``flush`` an entry may be lost in a crash, exactly as if it had never been added; one the
    disk refused is dropped by ``flush``, so every entry that outlives ``flush`` is durable.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._syncing: dict[str, threading.Thread] = {}
        self._unsynced: set[str] = set()
        self._batch: set[str] = set()  # small objects written since the last flush
        self._batch_fd: int | None = None  # opened before the first of them: see flush
        self._lock = threading.Lock()  # datasets add files from many threads
        self._large_copies = threading.Semaphore(LARGE_COPIES)

    def path(self, oid: str) -> Path:
        return self.root / object_key(oid)

    def has(self, oid: str) -> bool:
        return self.path(oid).is_file()

    def partial_path(self, oid: str) -> Path:
        """Where a download of object ``oid`` keeps its bytes until they are all there and
        checked (``cpv-partial/{oid}.cpv-partial``): private to cpv, never beside the file a
        user asked for, and found again by the next run (the folder is made here)."""
        folder = self.root / PARTIAL_FOLDER
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"{oid}{PARTIAL_SUFFIX}"

    def leftovers(self) -> list[Leftover]:
        """Partial downloads kept here by interrupted runs (and state files that lost their
        partial file)."""
        folder = self.root / PARTIAL_FOLDER
        found = file_leftovers(partial_files(folder))
        orphans = [path for path in partial_files(folder, f"*{STATE_SUFFIX}")
                   if not partial_of_state(path).exists()]
        return found + file_leftovers(iter(orphans))

    def add_file(self, source: Path, *, known_md5: str | None = None,
                 progress: Progress | None = None, copy_to: Path | None = None) -> str:
        """Copy ``source`` into the cache and hash the copy; returns its md5.

        The copy, not the workspace file, is hashed and later uploaded, so the stored bytes are
        exactly the hashed bytes even if a training script rewrites the file meanwhile. The
        copy is on disk once ``flush`` has returned (see the class). Where the file system has
        reflinks (btrfs, XFS) a large copy shares the source's blocks until either is written:
        made at once, and just as private.

        ``copy_to``, a path that must not exist, gets a second private copy (mode 0644) of the
        very bytes hashed, from the same buffers: what the workspace needs after an upload from
        elsewhere, for one read and one hash. It is written only when the file is copied in
        (not when ``known_md5`` is already cached), and removed if the copy fails.

        Raises:
            ArtifactNotFoundError: the file vanished or changed while it was being read.
        """
        if known_md5 and self.has(known_md5):
            return known_md5
        before = FileStat.of(source)
        with explained(self.root, needed=before.size * (2 if copy_to else 1)):
            if before.size <= PIPELINE_MIN:
                return self._copy_in(source, before, progress, copy_to)
            with self._large_copies:  # each holds DIRECT_DEPTH buffers and a core for md5
                return self._copy_in(source, before, progress, copy_to)

    def _copy_in(self, source: Path, before: FileStat, progress: Progress | None,
                 copy_to: Path | None) -> str:
        incoming = self.root / "files" / "md5"
        background = before.size >= BACKGROUND_SYNC
        try:
            fd, tmp = tempfile.mkstemp(prefix=".incoming.", suffix=".cpv-tmp", dir=incoming)
        except FileNotFoundError:
            incoming.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".incoming.", suffix=".cpv-tmp", dir=incoming)
        also: BinaryIO | None = None
        try:
            if not background:
                self._open_batch()
            if copy_to is not None:
                also = os.fdopen(os.open(copy_to, os.O_WRONLY | os.O_CREAT | os.O_EXCL
                                         | getattr(os, "O_BINARY", 0), 0o644), "wb")
            with os.fdopen(fd, "wb") as writer:
                if before.size <= SMALL_FILE:
                    md5 = self._copy_small(source, writer.fileno(), before.size,
                                           also.fileno() if also else None)
                    if progress:
                        progress(before.size, before.size)
                else:
                    with open(source, "rb") as reader:
                        if clone_file(reader.fileno(), writer.fileno()):
                            # A reflink: the cache's copy is made at once; hashing it is the
                            # only read, and its bytes are exactly the ones hashed.
                            md5 = md5_file(Path(tmp), progress=progress)
                            if (also is not None and copy_to is not None
                                    and not self._clone_to(Path(tmp), also)):
                                also.close()
                                os.unlink(copy_to)  # the workspace copies it instead
                                also = None
                        else:
                            md5, _ = copy_file_md5(reader, writer, total=before.size,
                                                   progress=progress, also=also)
                        crash_point("hashing")
            if also is not None:
                also.close()
            if FileStat.of(source) != before:
                raise ArtifactNotFoundError(
                    f"{source} changed while cpv was reading it",
                    hint="Wait until the training script has finished writing it, then upload "
                    "again.")
            os.chmod(tmp, 0o444)
            final = self.path(md5)
            try:
                os.replace(tmp, final)
            except FileNotFoundError:  # the object's folder is new
                final.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp, final)
        except BaseException:
            if also is not None and copy_to is not None:
                also.close()
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(copy_to)
            raise
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        if background:
            self._sync_in_background(md5)
        else:
            with self._lock:
                self._batch.add(md5)
        return md5

    @staticmethod
    def _clone_to(cached: Path, also: BinaryIO) -> bool:
        """Make ``also`` a reflink of the cache's new copy (so, too, exactly the bytes hashed);
        False where it cannot be (another file system)."""
        with open(cached, "rb") as reader:
            return clone_file(reader.fileno(), also.fileno())

    @staticmethod
    def _copy_small(source: Path, fd: int, size: int, also: int | None) -> str:
        """Read a small file whole, hash it, write those very bytes to ``fd`` (and ``also``);
        its md5."""
        parts: list[bytes] = []
        with open(source, "rb", buffering=0) as reader:
            left = size  # at most the size seen at the start, as copy_file_md5
            while left and (part := reader.read(left)):
                parts.append(part)
                left -= len(part)
        data = b"".join(parts)
        crash_point("hashing")
        write_all(fd, data, 0)
        if also is not None:
            write_all(also, data, 0)
        return md5_bytes(data)

    def _open_batch(self) -> None:
        """Open the descriptor ``flush`` syncs through before the batch's first write: syncfs
        reports the failed writes since its descriptor was opened."""
        with self._lock:
            if self._batch_fd is None:
                self._batch_fd = os.open(self.root, os.O_RDONLY)

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
            batch, self._batch = self._batch, set()
            fd, self._batch_fd = self._batch_fd, None
        try:
            for oid in self._sync_batch(batch, fd):
                self.discard(oid)
        finally:
            if fd is not None:
                os.close(fd)
        for oid in pending:
            self._flush_one(oid)

    def _sync_batch(self, batch: set[str], fd: int | None) -> set[str]:
        """Bring the small objects of ``batch`` to disk; returns those the disk refused."""
        if not batch:
            return set()
        if len(batch) > SYNC_EACH and fd is not None:
            try:
                if sync_filesystem(fd):
                    return set()
            except OSError:
                return batch  # which write failed is unknown: none of them is trusted
        refused: set[str] = set()
        folders: dict[Path, list[str]] = {}
        for oid in batch:
            try:
                fsync_path(self.path(oid))
                folders.setdefault(self.path(oid).parent, []).append(oid)
            except FileNotFoundError:
                pass  # discarded meanwhile (found corrupt): nothing to keep
            except OSError:
                refused.add(oid)
        for folder, oids in folders.items():  # the renames that named them
            try:
                fsync_path(folder, directory=True)
            except OSError:
                refused.update(oids)
        return refused

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

    def export(self, oid: str, target: Path) -> bool:
        """Copy object ``oid``, when cached and intact, to the new file ``target`` (mode 0644);
        returns whether it did. A cached copy that does not match its md5 is removed, and so is
        what was written of it.
        """
        try:
            reader = open(self.path(oid), "rb")  # closed below
        except FileNotFoundError:
            return False
        with reader:
            fd = os.open(target, os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0),
                         0o644)
            try:
                with os.fdopen(fd, "r+b") as writer:
                    md5, _ = copy_file_md5(reader, writer,
                                           total=os.fstat(reader.fileno()).st_size)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(target)
                raise
        if md5 == ObjectId(oid).md5:
            return True
        os.unlink(target)
        self.discard(oid)
        return False

    def iter_oids(self) -> Iterator[str]:
        """Every object id cached (not the temporary files of a copy in progress)."""
        base = self.root / "files" / "md5"
        if not base.is_dir():
            return
        for prefix in sorted(base.iterdir()):
            if len(prefix.name) != 2 or not prefix.is_dir():
                continue
            for entry in sorted(prefix.iterdir()):
                if not entry.name.startswith(".") and not entry.name.endswith(".cpv-tmp"):
                    yield prefix.name + entry.name

    def verify(self, oid: str) -> bool:
        return self.has(oid) and md5_file(self.path(oid)) == ObjectId(oid).md5

    def discard(self, oid: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path(oid))
