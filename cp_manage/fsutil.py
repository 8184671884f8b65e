"""Durable file writes and streaming hashes: the only place cpv writes bytes to disk.

Every write goes to a temporary file in the destination's folder and is renamed into place, so a
reader sees the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import mmap
import os
import queue
import re
import shutil
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from cp_manage.interrupts import check as check_interrupted

CHUNK = 4 * 1024 * 1024
PIPELINE_MIN = 4 * CHUNK
"""Copies larger than this write on a second thread while the first one hashes."""
PIPELINE_DEPTH = 4
COPY_STEP = 16 * 1024 * 1024
DIRECT_ALIGN = 4096
"""``O_DIRECT`` transfers start and end on this boundary (the largest logical block in use)."""
DIRECT_CHUNK = 8 * 1024 * 1024
DIRECT_DEPTH = 4
_NO_KERNEL_COPY = {errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL, errno.EBADF,
                   errno.ENOTSUP, errno.ETXTBSY}

Progress = Callable[[int, int], None]
"""A progress callback: ``progress(bytes_done, bytes_total)``. An upload has two phases,
``"hashing"`` then ``"sending"``; each counts from 0 again, and a callback that also has a
``phase(name)`` method is told when each begins (see ``progress_phase``), one with a
``resumed(done, total)`` method when a transfer continues an interrupted one (see
``progress_resumed``)."""


def progress_phase(progress: Progress | None, name: str) -> None:
    """Tell ``progress`` that the phase ``name`` of a transfer begins, when it listens."""
    phase = getattr(progress, "phase", None)
    if callable(phase):
        phase(name)


def progress_resumed(progress: Progress | None, done: int, total: int) -> None:
    """Tell ``progress`` that a transfer resumes with ``done`` of its ``total`` bytes already
    where they go (parts in storage, a partial download), when it has a ``resumed`` method."""
    resumed = getattr(progress, "resumed", None)
    if callable(resumed):
        resumed(done, total)


_DISK_FULL = {errno.ENOSPC, errno.EDQUOT}
_DENIED = {errno.EACCES, errno.EPERM}


def explain_os_error(error: OSError, path: Path | str | None = None, *,
                     needed: int | None = None, hint: str | None = None) -> OSError:
    """The ``CPVError`` for an expected failure of the local file system, else ``error``.

    A full disk or quota (naming ``path``, the ``needed`` bytes and what is free there), a
    read-only file system, or a refused permission (naming the file the system refused, when it
    said which) each get a message with a fix; any other error is returned as it is.
    """
    from cp_manage.errors import (
        CPVError,
        DiskFullError,
        FilePermissionError,
        ReadOnlyFileSystemError,
    )

    if isinstance(error, CPVError) or error.errno not in _DISK_FULL | _DENIED | {errno.EROFS}:
        return error
    named = str(error.filename) if isinstance(error.filename, (str, Path)) else None
    where = str(path) if path is not None else named
    if error.errno in _DENIED:
        return FilePermissionError(named or where, code=error.errno, hint=hint)
    if error.errno == errno.EROFS:
        return ReadOnlyFileSystemError(where, hint=hint)
    return DiskFullError(where, needed=needed, code=error.errno, hint=hint,
                         free=free_space(Path(where)) if where else None)


@contextlib.contextmanager
def explained(path: Path, *, needed: int | None = None, hint: str | None = None
              ) -> Iterator[None]:
    """Raise expected file-system failures inside the block as ``explain_os_error`` does."""
    try:
        yield
    except OSError as e:
        error = explain_os_error(e, path, needed=needed, hint=hint)
        if error is e:
            raise
        raise error from e


def free_space(path: Path) -> int | None:
    """Bytes available to this user on the file system holding ``path`` (or its nearest
    existing parent); None when that cannot be told."""
    for folder in (path, *path.parents):
        try:
            return shutil.disk_usage(folder).free
        except OSError:
            continue
    return None


def atomic_write_bytes(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename."""
    with atomic_output(path, mode=mode, size=len(data)) as handle:
        handle.write(data)


@contextlib.contextmanager
def atomic_output(path: Path, *, mode: int = 0o644, size: int | None = None
                  ) -> Iterator[BinaryIO]:
    """Yield a file that replaces ``path`` only when the block ends without an error.

    A full disk, a read-only file system or a refused permission is raised as the
    ``CPVError`` that names ``path`` (and ``size``, the bytes to be written, when given).
    """
    with explained(path, needed=size):
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
                  progress: Progress | None = None,
                  also: BinaryIO | None = None) -> tuple[str, int]:
    """Copy a stream to another (and to ``also``, when given) while hashing it; returns (md5,
    bytes copied).

    Writing runs on a second thread fed the very chunks that are hashed, so what lands in
    ``target`` is exactly what was hashed, and the two (both release the GIL) overlap: a large
    copy costs about as much as hashing alone. Memory stays under ``PIPELINE_DEPTH`` chunks.
    """
    targets = [target] if also is None else [target, also]
    digest = hashlib.md5(usedforsecurity=False)
    done = 0
    if total <= PIPELINE_MIN:
        while chunk := source.read(CHUNK):
            digest.update(chunk)
            for each in targets:
                each.write(chunk)
            done += len(chunk)
            if progress:
                progress(done, total)
        return digest.hexdigest(), done
    chunks: queue.Queue[bytes | None] = queue.Queue(maxsize=PIPELINE_DEPTH)
    failures: list[BaseException] = []

    def write() -> None:
        while (chunk := chunks.get()) is not None:
            if failures:
                continue  # drain, so the reader never blocks on a full queue
            try:
                for each in targets:
                    each.write(chunk)
            except BaseException as e:  # re-raised in the calling thread
                failures.append(e)

    writer = threading.Thread(target=write, name="cpv-copy", daemon=True)
    writer.start()
    try:
        while not failures and (chunk := source.read(CHUNK)):
            chunks.put(chunk)
            digest.update(chunk)
            done += len(chunk)
            if progress:
                progress(done, total)
    finally:
        chunks.put(None)
        writer.join()
    if failures:
        raise failures[0]
    return digest.hexdigest(), done


def copy_file_md5(source: BinaryIO, target: BinaryIO, *, total: int,
                  progress: Progress | None = None, direct: bool = True,
                  also: BinaryIO | None = None) -> tuple[str, int]:
    """Copy file ``source`` into file ``target`` and return the md5 of what landed there.

    ``also``, a second new file, gets the very same bytes from the very same buffers: one read
    and one hash make two copies (the cache's and the workspace's).

    Both files are used from offset 0, and at most ``total`` bytes (the size seen at the start)
    are copied: a file that keeps growing ends there. Three ways, the first that works:

    - ``direct``: chunks are read into aligned buffers, hashed there, and written from the very
      same buffers with ``O_DIRECT``, around the page cache. On these VMs a GiB of fresh page
      cache costs 0.8 to 3 CPU-seconds, more than the copy itself, and the copy is read once
      more only to be uploaded (which reads around the page cache too).
    - the kernel copies (``copy_file_range``) while this thread hashes the copied prefix back
      from ``target``, which must then be open for reading and writing.
    - ``copy_with_md5``: a read-hash-write pipeline.

    Whichever runs, the hash describes exactly the bytes written, whatever happens to
    ``source`` meanwhile, and a large copy costs about as much as hashing alone.
    """
    src, dst = source.fileno(), target.fileno()
    if direct and total > PIPELINE_MIN:
        direct_fd = open_direct(dst, os.O_WRONLY)
        if direct_fd is not None:
            writers = [DirectWriter(direct_fd, dst)]
            if also is not None:
                writers.append(DirectWriter(open_direct(also.fileno(), os.O_WRONLY),
                                            also.fileno()))
            try:
                return _copy_direct_md5(src, writers, total, progress)
            finally:
                for writer in writers:
                    writer.close()
    kernel_copy = (also is None and hasattr(os, "copy_file_range") and total > PIPELINE_MIN
                   and fcntl.fcntl(dst, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDWR)
    first = 0
    if kernel_copy:
        try:
            first = os.copy_file_range(src, dst, min(COPY_STEP, total), 0, 0)
        except OSError as e:
            if e.errno not in _NO_KERNEL_COPY:
                raise
            kernel_copy = False
    if not kernel_copy:
        return copy_with_md5(source, target, total=total, progress=progress, also=also)
    copy = _KernelCopy(src, dst, total, first)
    digest = hashlib.md5(usedforsecurity=False)
    hashed = 0
    copier = threading.Thread(target=copy.run, name="cpv-copy", daemon=True)
    copier.start()
    try:
        while True:
            with copy.changed:
                while copy.copied == hashed and not copy.finished:
                    copy.changed.wait()
                ready, finished = copy.copied, copy.finished
            while hashed < ready:
                chunk = os.pread(dst, min(CHUNK, ready - hashed), hashed)
                if not chunk:
                    raise OSError(errno.EIO, "short read while hashing a copy")
                digest.update(chunk)
                hashed += len(chunk)
                if progress:
                    progress(hashed, total)
            if finished:
                break
    finally:
        copy.stop = True
        copier.join()
    if copy.error is not None:
        raise copy.error
    return digest.hexdigest(), hashed


def _copy_direct_md5(source: int, writers: list[DirectWriter], total: int,
                     progress: Progress | None) -> tuple[str, int]:
    """Read, hash, then write each chunk from one aligned buffer (to every writer); writes run
    on a second thread. At most ``DIRECT_DEPTH`` buffers exist, so memory stays bounded."""
    digest = hashlib.md5(usedforsecurity=False)
    done = 0
    buffers = [mmap.mmap(-1, DIRECT_CHUNK) for _ in range(DIRECT_DEPTH)]
    free: queue.Queue[mmap.mmap] = queue.Queue()
    for buffer in buffers:
        free.put(buffer)
    filled: queue.Queue[tuple[mmap.mmap, int, int] | None] = queue.Queue()
    failures: list[BaseException] = []

    def write() -> None:
        while (item := filled.get()) is not None:
            buffer, length, offset = item
            if not failures:
                try:
                    for writer in writers:
                        writer.write(buffer, length, offset)
                except BaseException as e:  # re-raised in the calling thread
                    failures.append(e)
            free.put(buffer)

    thread = threading.Thread(target=write, name="cpv-copy", daemon=True)
    thread.start()
    try:
        while done < total and not failures:
            check_interrupted()
            buffer = free.get()
            length = read_into(source, buffer, min(len(buffer), total - done), done)
            if not length:
                break  # the file shrank: what was copied is what is hashed
            with memoryview(buffer) as view:
                digest.update(view[:length])
            filled.put((buffer, length, done))
            done += length
            if progress:
                progress(done, total)
    finally:
        filled.put(None)
        thread.join()
        for buffer in buffers:
            with contextlib.suppress(BufferError):  # a traceback may still hold a view of it
                buffer.close()
    if failures:
        raise failures[0]
    return digest.hexdigest(), done


def read_into(fd: int, buffer: mmap.mmap, length: int, offset: int) -> int:
    """Fill ``buffer[:length]`` from ``fd`` at ``offset``; fewer bytes only at end of file.

    An ``O_DIRECT`` descriptor reads whole blocks: the request is rounded up to one (the
    buffer must have room), and a read past the end of the file simply returns less.
    """
    got = 0
    with memoryview(buffer) as view:
        want = min(len(view), -(-length // DIRECT_ALIGN) * DIRECT_ALIGN)
        while got < length:
            count = os.preadv(fd, [view[got:want]], offset + got)
            if not count:
                break
            got += count
    return min(got, length)


def open_direct(path: Path | int, flags: int) -> int | None:
    """A descriptor on ``path`` (or on the file open as descriptor ``path``) that reads or
    writes around the page cache, or None where that is not possible (tmpfs, macOS)."""
    flag = getattr(os, "O_DIRECT", 0)
    if not flag:
        return None
    try:
        return os.open(f"/proc/self/fd/{path}" if isinstance(path, int) else path, flags | flag)
    except OSError:
        return None


class BufferPool:
    """Anonymous maps of ``size`` bytes (page-aligned, as ``O_DIRECT`` needs), reused: ``take``
    hands out a free one or makes one, ``give_back`` returns it, ``close`` frees every one made.
    How many exist at once is the user's bound (a download's window, an upload's workers)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.lock = threading.Lock()
        self.made: list[mmap.mmap] = []
        self.free: list[mmap.mmap] = []

    def take(self) -> mmap.mmap:
        with self.lock:
            if self.free:
                return self.free.pop()
            buffer = mmap.mmap(-1, self.size)
            self.made.append(buffer)
            return buffer

    def give_back(self, buffer: mmap.mmap) -> None:
        with self.lock:
            self.free.append(buffer)

    def close(self) -> None:
        with self.lock:
            for buffer in self.made:
                with contextlib.suppress(BufferError):  # a traceback may still hold a view
                    buffer.close()
            self.made.clear()
            self.free.clear()


class DirectWriter:
    """Writes whole aligned blocks through an ``O_DIRECT`` descriptor from aligned buffers; a
    chunk's unaligned tail (only a file's last chunk has one) goes through the ordinary
    descriptor. The first refusal (a filesystem that only claimed support) turns it off for the
    rest of the file, and every later write goes the ordinary way. Without a direct descriptor
    every write goes the ordinary way. ``close`` closes the direct descriptor."""

    def __init__(self, fd: int | None, ordinary_fd: int) -> None:
        self.fd, self.ordinary_fd = fd, ordinary_fd
        self.enabled = fd is not None

    def write(self, buffer: mmap.mmap, length: int, offset: int) -> None:
        """Write ``buffer[:length]`` at ``offset``: aligned blocks directly, the rest not."""
        with memoryview(buffer) as view:
            whole = length - length % DIRECT_ALIGN
            if whole and self.fd is not None and self.enabled and offset % DIRECT_ALIGN == 0:
                try:
                    written = os.pwrite(self.fd, view[:whole], offset)
                except OSError as e:
                    if e.errno != errno.EINVAL:
                        raise
                    self.enabled = False  # then the next line writes it all
                    written = 0
                write_all(self.ordinary_fd, view[written:whole], offset + written)
            else:
                whole = 0
            write_all(self.ordinary_fd, view[whole:length], offset + whole)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def write_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    """``pwrite`` all of ``data`` at ``offset``."""
    with memoryview(data) as whole:
        done = 0
        while done < len(whole):
            done += os.pwrite(fd, whole[done:], offset + done)


class _KernelCopy:
    """``copy_file_range`` in steps on a thread of its own, announcing each step."""

    def __init__(self, source: int, target: int, total: int, copied: int) -> None:
        self.source, self.target, self.total = source, target, total
        self.copied = copied
        self.finished = copied == 0
        self.stop = False
        self.error: BaseException | None = None
        self.changed = threading.Condition()

    def run(self) -> None:
        try:
            while not self.finished and not self.stop:
                # Up to the size seen at the start: a file that keeps growing ends there.
                left = self.total - self.copied
                step = os.copy_file_range(self.source, self.target, min(COPY_STEP, left),
                                          self.copied, self.copied) if left > 0 else 0
                with self.changed:
                    self.copied += step
                    self.finished = step == 0
                    self.changed.notify_all()
        except BaseException as e:  # re-raised in the hashing thread
            with self.changed:
                self.error = e
                self.finished = True
                self.changed.notify_all()


FICLONE = 0x40049409
"""The Linux ioctl that makes a file share another's blocks (a reflink: btrfs, XFS, bcachefs)."""


def clone_file(source: int, target: int) -> bool:
    """Make the empty file open as ``target`` (for writing) a reflink copy of ``source``: same
    bytes, blocks shared until either is written, made in the time of a metadata update.
    Returns False, having done nothing, where the file system cannot (ext4, tmpfs, another
    file system, macOS)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        fcntl.ioctl(target, FICLONE, source)
    except OSError:
        return False
    return True


def sync_filesystem(fd: int) -> bool:
    """``syncfs(2)``: write back everything dirty on the filesystem holding ``fd``, and wait.

    Returns False, having done nothing, where that call cannot be trusted to report a failed
    write: outside Linux, and before Linux 5.8 (whose ``syncfs`` returned 0 whatever happened).
    Since 5.8 it fails with the first writeback error on the filesystem since ``fd`` was
    opened, so a caller opens ``fd`` *before* writing what it then syncs.

    Raises:
        OSError: a write since ``fd`` was opened did not reach the disk.
    """
    if not sys.platform.startswith("linux") or _kernel_version() < (5, 8):
        return False
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syncfs(fd) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return True


def _kernel_version() -> tuple[int, int]:
    found = re.match(r"(\d+)\.(\d+)", os.uname().release)
    return (int(found[1]), int(found[2])) if found else (0, 0)


def fsync_path(path: Path | str, *, directory: bool = False) -> None:
    """``fsync`` the file (or, with ``directory``, the folder) at ``path``."""
    fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def md5_bytes(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def is_within(path: Path, root: Path) -> bool:
    """Whether ``path`` (already resolved) lies inside ``root`` (already resolved)."""
    try:
        path.relative_to(root)
    except ValueError:
        return False
    return True
