"""Partial files: what an interrupted transfer leaves for the next run to continue from.

A partial file has a name that depends only on what it will become (the object's id), so a
rerun of the same command finds it: ``.{name}.cpv-partial`` beside an object of a local storage
remote, ``{oid}.cpv-partial`` in the cache's ``cpv-partial/`` folder for a download. A download's
partial has a state file beside it (``.cpv-state``): how many leading bytes are complete, and
the md5 state of exactly those bytes, written only once they are on disk.

The process writing a partial holds an exclusive ``flock`` on it, so another process (a rerun
started while the first still runs, ``cpv doctor --repair``) can tell a partial in use from an
abandoned one; a second writer that finds it in use writes to a file of its own instead.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import fcntl
import itertools
import json
import mmap
import os
import queue
import secrets
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from cp_manage.faults import pace, part_size
from cp_manage.fsutil import DIRECT_ALIGN, Progress, open_direct, progress_resumed, read_into
from cp_manage.md5state import MD5, md5_from_state, new_md5

PARTIAL_SUFFIX = ".cpv-partial"
STATE_SUFFIX = ".cpv-state"
PARTIAL_FOLDER = "cpv-partial"
"""The folder, inside a local cache, where downloads keep their partial files."""
SAVE_EVERY = part_size(64 * 1024 * 1024)
"""A download records its progress (one ``fdatasync`` and a small file) at most this often:
what a kill can cost a rerun."""
DEFAULT_GRACE = 24 * 3600.0
"""Leftovers younger than this (seconds) may belong to a transfer still running elsewhere."""
CHUNK = part_size(8 * 1024 * 1024)


@dataclass(frozen=True)
class Leftover:
    """An abandoned partial transfer in storage or in a cache: a partial file, or an S3
    multipart upload. ``age`` is seconds since it was last written (a file's mtime) or started
    (an upload's initiation); ``in_use`` means a live process on this machine holds it."""

    kind: str  # "partial file", "multipart upload"
    where: str
    size: int
    age: float
    in_use: bool = False
    upload_id: str | None = None

    def to_dict(self) -> dict[str, object]:
        data: dict[str, object] = {"kind": self.kind, "where": self.where, "size": self.size,
                                   "age_seconds": round(self.age, 1), "in_use": self.in_use}
        if self.upload_id is not None:
            data["upload_id"] = self.upload_id
        return data


def partial_beside(target: Path) -> Path:
    """The partial file of ``target`` in its own folder (hidden): ``.{name}.cpv-partial``."""
    return target.with_name(f".{target.name}{PARTIAL_SUFFIX}")


def state_of(partial: Path) -> Path:
    """The state file that goes with a download's partial file."""
    return partial.with_name(partial.name.removesuffix(PARTIAL_SUFFIX) + STATE_SUFFIX)


def partial_of_state(state: Path) -> Path:
    """The partial file a state file goes with."""
    return state.with_name(state.name.removesuffix(STATE_SUFFIX) + PARTIAL_SUFFIX)


@contextlib.contextmanager
def claimed(path: Path, *, mode: int = 0o644) -> Iterator[tuple[Path, int]]:
    """Open (creating) the partial file ``path`` for reading and writing and hold it: yields
    its path and descriptor.

    When another live process holds ``path``, a fresh file beside it is used instead (its
    name ends the same way, so it is recognised as cpv's), and removed on the way out: it
    cannot be resumed by name. ``path`` itself is left for the next run.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_BINARY", 0), mode)
    own = path
    try:
        if not _try_lock(fd):
            os.close(fd)
            own = path.with_name(f"{path.name.removesuffix(PARTIAL_SUFFIX)}."
                                 f"{secrets.token_hex(4)}{PARTIAL_SUFFIX}")
            fd = os.open(own, os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0),
                         mode)
            _try_lock(fd)
    except BaseException:
        os.close(fd)
        raise
    try:
        yield own, fd
    except BaseException:
        if own != path:
            discard(own)
        raise
    finally:
        os.close(fd)  # also drops the lock
    if own != path:
        discard(own)


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        if e.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
            return True  # a filesystem without locks: the grace period is the only guard
        raise
    return True


def hold(path: Path) -> int:
    """Take ``path`` (a file or a folder cpv is writing) for this process, so that ``in_use``
    tells; returns the descriptor, whose closing lets it go."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    _try_lock(fd)
    return fd


def in_use(path: Path) -> bool:
    """Whether a live process holds the partial file ``path`` (see ``claimed``)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    except OSError:
        return False
    try:
        return not _try_lock(fd)
    finally:
        os.close(fd)


def discard(partial: Path) -> None:
    """Remove a partial file and its state file, whichever exist."""
    for path in (partial, state_of(partial), _state_tmp(partial)):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def discard_state(partial: Path) -> None:
    """Forget how far the partial file got (it is then written from byte 0, or done with)."""
    for path in (state_of(partial), _state_tmp(partial)):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _state_tmp(partial: Path) -> Path:
    return partial.with_name(partial.name.removesuffix(PARTIAL_SUFFIX) + ".new" + STATE_SUFFIX)


class PartialMismatch(Exception):
    """The bytes of a partial file are not those its state file recorded: the download must
    start over (``fetch_object`` does, once)."""


Checksums = list[tuple[int, int, int]]
"""``(start, end, crc32)`` of consecutive byte ranges of a partial file, as received."""


class DownloadState:
    """How far the download into ``partial`` (open as ``fd``) of object ``oid`` got: the
    complete leading bytes, the md5 of exactly those, and a CRC32 of each range of them as it
    was received.

    The md5 state spares a rerun hashing those bytes again; the CRC32s (about six times
    cheaper to compute than md5) let it check that the file still holds them, so the md5 of
    the finished file is the md5 of every byte in it. Without a saved md5 state (no libcrypto
    where it was written, or here) the prefix is simply hashed again from the file.
    """

    def __init__(self, partial: Path, fd: int, oid: str, size: int) -> None:
        self.partial, self.fd, self.oid, self.size = partial, fd, oid, size
        self.saved = 0
        self.checksums: Checksums = []

    def resume(self, *, check: Callable[[int], bool] | None = None
               ) -> tuple[int, MD5, Checksums]:
        """Where to continue from, the md5 of everything before it, and the CRC32s that the
        bytes before it must still match (``verify``; empty when they were hashed again here).

        The recorded state counts only when it names this object, this size and this very
        file (its inode), the file holds at least the bytes it covers, and ``check(covered)``
        (when given) accepts them. Anything else starts over from byte 0.
        """
        try:
            record = json.loads(state_of(self.partial).read_text(encoding="utf-8"))
            covered = int(record["covered"])
            info = os.fstat(self.fd)
            checksums = [(int(a), int(b), int(c)) for a, b, c in record.get("crc32", [])]
            usable = (record.get("oid") == self.oid and int(record["size"]) == self.size
                      and int(record["inode"]) == info.st_ino
                      and 0 < covered <= min(self.size, info.st_size))
        except (OSError, ValueError, KeyError, TypeError):
            usable, covered, record, checksums = False, 0, {}, []
        if not usable or (check is not None and not check(covered)):
            return 0, new_md5(), []
        raw = record.get("md5_state")
        md5 = md5_from_state(base64.b64decode(raw)) if isinstance(raw, str) else None
        whole = (bool(checksums) and checksums[0][0] == 0 and checksums[-1][1] == covered
                 and all(a[1] == b[0] for a, b in itertools.pairwise(checksums)))
        if md5 is None or (check is None and not whole):
            md5, checksums = self._hash_prefix(covered), []
        self.saved = covered
        self.checksums = list(checksums)
        return covered, md5, checksums

    def _hash_prefix(self, length: int) -> MD5:
        md5 = new_md5()
        done = 0
        while done < length:
            chunk = os.pread(self.fd, min(CHUNK, length - done), done)
            if not chunk:
                raise OSError(errno.EIO, f"{self.partial} is shorter than its state says")
            md5.update(chunk)
            done += len(chunk)
        return md5

    def due(self, covered: int) -> bool:
        """Whether the progress up to ``covered`` is worth recording now."""
        return covered - self.saved >= SAVE_EVERY

    def save(self, covered: int, state: bytes | None, checksums: Checksums) -> None:
        """Record that the first ``covered`` bytes are complete, that ``state`` (an
        ``MD5.state()``, None where it cannot be saved) is the md5 state of exactly those, and
        the CRC32s of the ranges received since the last record (``checksums``).

        Their bytes reach the disk first (``fdatasync``), so the record never claims bytes a
        crash could lose. The record replaces the last one in one rename.
        """
        os.fdatasync(self.fd)
        self.checksums.extend(checksums)
        record = {"oid": self.oid, "size": self.size, "covered": covered,
                  "inode": os.fstat(self.fd).st_ino, "written": time.time(),
                  "md5_state": base64.b64encode(state).decode("ascii") if state else None,
                  "crc32": [list(item) for item in self.checksums]}
        tmp = _state_tmp(self.partial)
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(record, handle)
        os.replace(tmp, state_of(self.partial))
        self.saved = covered


def verify(fd: int, checksums: Checksums) -> bool:
    """Whether the file open as ``fd`` still holds the bytes whose CRC32s were recorded.

    The file is read around the page cache where it can be (``O_DIRECT``, into one aligned
    buffer): it was written that way, and filling the page cache with it would cost more CPU
    than the CRC32 itself, while the download it runs beside needs that CPU to hash.
    """
    direct = open_direct(fd, os.O_RDONLY)
    buffer = mmap.mmap(-1, CHUNK + DIRECT_ALIGN)
    try:
        for start, end, expected in checksums:
            crc, done = 0, start
            while done < end:
                length = min(CHUNK, end - done)
                got = _read_at(direct, fd, buffer, length, done)
                if got != length:
                    return False
                with memoryview(buffer) as view:
                    crc = zlib.crc32(view[:got], crc)
                done += got
            if crc != expected:
                return False
        return True
    finally:
        if direct is not None:
            os.close(direct)
        buffer.close()


def _read_at(direct: int | None, fd: int, buffer: mmap.mmap, length: int, offset: int) -> int:
    """``read_into`` through the direct descriptor when the offset allows it, else not."""
    if direct is not None and offset % DIRECT_ALIGN == 0:
        try:
            return read_into(direct, buffer, length, offset)
        except OSError as e:
            if e.errno != errno.EINVAL:
                raise
    return read_into(fd, buffer, length, offset)


def file_leftovers(paths: Iterator[Path], *, now: float | None = None) -> list[Leftover]:
    """``Leftover`` records of partial files (state files count with their partial)."""
    now = time.time() if now is None else now
    found: list[Leftover] = []
    for path in paths:
        try:
            info = path.stat()
        except OSError:
            continue
        found.append(Leftover("partial file", str(path), info.st_size,
                              max(0.0, now - info.st_mtime), in_use=in_use(path)))
    return found


def partial_files(folder: Path, pattern: str = f"*{PARTIAL_SUFFIX}") -> Iterator[Path]:
    """Every partial file below ``folder`` (none when it does not exist)."""
    if folder.is_dir():
        yield from sorted(folder.rglob(pattern))


# -- copying into partial files -------------------------------------------------------------------


def matching_prefix(source: int, partial: int, limit: int) -> int:
    """How many leading bytes of the file open as ``partial`` equal those of ``source`` (up
    to ``limit``, in whole chunks): what an interrupted copy left that can be kept."""
    have = min(os.fstat(partial).st_size, limit)
    done = 0
    while done < have:
        length = min(CHUNK, have - done)
        ours = os.pread(partial, length, done)
        if len(ours) != length or os.pread(source, length, done) != ours:
            break
        done += length
    return done


def copy_range(source: int, target: int, start: int, end: int, *,
               progress: Progress | None = None) -> None:
    """Copy bytes ``start``..``end`` of ``source`` to the same place in ``target`` (the kernel
    copies where it can)."""
    done = start
    kernel = hasattr(os, "copy_file_range")
    while done < end:
        pace()
        length = min(CHUNK, end - done)
        copied = 0
        if kernel:
            try:
                copied = os.copy_file_range(source, target, length, done, done)
            except OSError as e:
                if e.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL,
                                   errno.EBADF, errno.ETXTBSY):
                    raise
                kernel = False
        if not kernel:
            chunk = os.pread(source, length, done)
            copied = len(chunk)
            written = 0
            while written < copied:
                written += os.pwrite(target, chunk[written:], done + written)
        if not copied:
            raise OSError(errno.EIO, f"the source ended at byte {done} of {end}")
        done += copied
        if progress:
            progress(done, end)


def copy_resumable(source: int, state: DownloadState, *, progress: Progress | None) -> str:
    """Copy the object open as ``source`` into the partial file of ``state``, from where an
    interrupted copy left it; returns the md5 of the whole object.

    The calling thread reads and hashes each chunk while a second thread writes the one
    before and, every ``SAVE_EVERY`` bytes, records the progress with the md5 state of exactly
    the bytes written (taken by the hashing thread at that boundary). The bytes a rerun keeps
    are compared with the object's own first.
    """
    start, md5, _ = state.resume(check=lambda covered: matching_prefix(
        source, state.fd, covered) == covered)
    total = state.size
    if start:
        progress_resumed(progress, start, total)
    os.ftruncate(state.fd, start)
    chunks: queue.Queue[tuple[bytes, int, bytes | None, int] | None] = queue.Queue(maxsize=4)
    failures: list[BaseException] = []

    def write() -> None:
        while (item := chunks.get()) is not None:
            if failures:
                continue  # drain, so the reader never blocks on a full queue
            data, offset, snapshot, covered = item
            try:
                written = 0
                while written < len(data):
                    written += os.pwrite(state.fd, data[written:], offset + written)
                if covered:
                    state.save(covered, snapshot, [])
            except BaseException as e:  # re-raised in the calling thread
                failures.append(e)

    writer = threading.Thread(target=write, name="cpv-copy", daemon=True)
    writer.start()
    done = start
    try:
        while done < total and not failures:
            pace()
            data = os.pread(source, min(CHUNK, total - done), done)
            if not data:
                raise OSError(errno.EIO, f"the object ended at byte {done} of {total}")
            md5.update(data)
            offset, done = done, done + len(data)
            due = state.due(done) and done < total
            chunks.put((data, offset, md5.state() if due else None, done if due else 0))
            if due:
                state.saved = done  # the writer records it once written
            if progress:
                progress(done, total)
    finally:
        chunks.put(None)
        writer.join()
    if failures:
        raise failures[0]
    return md5.hexdigest()
