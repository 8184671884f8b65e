"""Storage remotes: where the large files live, in DVC's own remote layout.

An object with md5 ``abcdef...`` lives at ``{url}/files/md5/ab/cdef...`` (a directory listing
has the suffix ``.dir``), exactly where ``dvc push`` puts it, so stock ``dvc pull`` reads what cpv
wrote and the other way round. One class per kind of location; ``open_storage`` picks it by URL.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Protocol
from urllib.parse import urlparse

from cp_manage.backends.objects import StoredObject, object_key
from cp_manage.backends.partial import (
    PARTIAL_SUFFIX,
    DownloadState,
    Leftover,
    claimed,
    copy_range,
    copy_resumable,
    discard,
    file_leftovers,
    matching_prefix,
    partial_beside,
    partial_files,
)
from cp_manage.errors import CPVError, StorageError
from cp_manage.faults import crash_point, paced
from cp_manage.fsutil import (
    Progress,
    copy_file_md5,
    explain_os_error,
    explained,
    progress_resumed,
)

logger = logging.getLogger(__name__)

__all__ = ["LocalStorage", "Storage", "object_key", "open_storage"]  # object_key: for old callers


class Storage(Protocol):
    """What cpv needs of a storage remote."""

    url: str

    def ensure_location(self) -> None:
        """Create the location if it can be created, or fail with a clear error (``cpv init``
        only: every other operation needs the location to exist already)."""

    def check_location(self) -> None:
        """Fail with a clear ``StorageError`` when the location itself is gone; create nothing."""

    def missing(self, oids: Iterable[str]) -> set[str]:
        """Those of ``oids`` not in storage, as storage itself says now."""

    def upload(self, oid: str, source: Path, *, progress: Progress | None = None) -> int:
        """Store ``source`` as object ``oid``; a reader never sees half of it. An interrupted
        upload of the same object is continued: returns the bytes storage already held."""

    def download(self, oid: str, target: Path, *, progress: Progress | None = None,
                 size: int | None = None, resume: bool = False) -> str:
        """Write object ``oid`` to ``target`` (a new file) and return the md5 of what was read.

        ``size``, the object's size when the caller knows it, is a hint: it may save asking
        storage for it, and nothing relies on it (the md5 decides). With ``resume``,
        ``target`` is a partial file (``partial.claimed``): it continues from what its state
        file records, and a failure leaves it for the next attempt."""

    def iter_oids(self) -> Iterator[str]:
        """Every object id stored (for checks and tests)."""

    def iter_objects(self) -> Iterator[StoredObject]:
        """Every object stored, with its size and storage's own timestamp (for gc and du)."""

    def delete(self, oid: str) -> None:
        """Remove object ``oid`` (gone already is fine)."""
    def leftovers(self) -> list[Leftover]:
        """Abandoned partial uploads (partial files, multipart uploads) in this storage."""

    def remove_leftover(self, leftover: Leftover) -> None:
        """Remove (abort) one of ``leftovers()``."""


class LocalStorage:
    """A storage remote in a local (or mounted) folder: DVC's local remote.

    Only ``ensure_location`` (``cpv init``) creates the folder. Every other operation needs it
    to exist: when a share is not mounted, a folder created in its place on the local disk
    would hold versions nobody else can see.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = str(root)

    def _path(self, oid: str) -> Path:
        return self.root / object_key(oid)

    def ensure_location(self) -> None:
        try:
            (self.root / "files" / "md5").mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StorageError(f"Cannot create the storage folder {self.root}: {e.strerror}",
                               hint="Check the path and its permissions.") from e

    def check_location(self) -> None:
        if not self.root.is_dir():
            raise self._gone()

    def _gone(self) -> StorageError:
        what = "is not a folder" if self.root.exists() else "does not exist"
        return StorageError(
            f"The storage folder {self.root} {what}",
            hint="Is the share that holds it mounted? Mount it (or fix the storage remote's "
            "url in .dvc/config), then run the command again.")

    def missing(self, oids: Iterable[str]) -> set[str]:
        wanted = set(oids)
        if wanted:
            self.check_location()  # else every object would look missing, and be re-sent
        return {oid for oid in wanted if not self._path(oid).is_file()}

    def _make_folder_of(self, oid: str) -> None:
        """Create ``files/md5/ab`` as needed below the root, which must exist: never the root
        itself (no ``parents=True``)."""
        leaf = self._path(oid).parent
        if leaf.is_dir():
            return
        for folder in (self.root / "files", leaf.parent, leaf):
            try:
                folder.mkdir(exist_ok=True)
            except FileNotFoundError as e:
                raise self._gone() from e
            except OSError as e:
                explained = explain_os_error(e, folder)  # read-only, refused: said as such
                if explained is not e:
                    raise explained from e
                raise StorageError(f"Cannot create {folder}: {e.strerror or e}",
                                   hint="Check the storage folder's permissions; nothing was "
                                   "committed.") from e

    def upload(self, oid: str, source: Path, *, progress: Progress | None = None) -> int:
        """Copy ``source`` to object ``oid`` through its partial file, renamed into place once
        complete; returns the bytes an interrupted copy had already written.

        The partial file has a name of its own (``.{name}.cpv-partial`` in the object's
        folder), so a rerun finds what a killed copy left: its leading bytes that equal the
        source's are kept, and the copy continues from there.
        """
        target = self._path(oid)
        self._make_folder_of(oid)
        try:
            size = source.stat().st_size
            with explained(target, needed=size), open(source, "rb") as reader, \
                    claimed(partial_beside(target)) as (partial, fd):
                kept = matching_prefix(reader.fileno(), fd, size)
                os.ftruncate(fd, kept)
                if kept:
                    logger.info("Resuming the copy of %s to %s: %d of %d bytes already there",
                                oid, self.root, kept, size)
                    progress_resumed(progress, kept, size)
                    copy_range(reader.fileno(), fd, kept, size, progress=progress)
                else:
                    with os.fdopen(fd, "r+b", closefd=False) as writer:
                        copy_file_md5(reader, writer, total=size, progress=paced(progress))
                crash_point("storage_upload")
                os.fsync(fd)
                os.fchmod(fd, 0o444)
                os.replace(partial, target)
            return kept
        except CPVError:  # a full, read-only or refused storage folder, already explained
            raise
        except OSError as e:
            raise StorageError(f"Cannot write {oid} to storage {self.root}: {e.strerror or e}",
                               hint="Check free space and permissions, then run the command "
                               "again; nothing was committed.") from e

    def download(self, oid: str, target: Path, *, progress: Progress | None = None,
                 size: int | None = None, resume: bool = False) -> str:
        source = self._path(oid)
        try:
            with open(source, "rb") as reader:
                total = os.fstat(reader.fileno()).st_size
                if resume:
                    fd = os.open(target, os.O_RDWR | getattr(os, "O_BINARY", 0))
                    try:
                        md5 = copy_resumable(reader.fileno(), DownloadState(
                            target, fd, oid, total), progress=progress)
                    finally:
                        os.close(fd)
                else:
                    with open(target, "x+b") as writer:
                        md5, _ = copy_file_md5(reader, writer, total=total, progress=progress)
                crash_point("storage_download")
        except FileNotFoundError as e:
            if not self.root.is_dir():
                raise self._gone() from e  # the better explanation: not a lost object
            raise StorageError(f"Object {oid} is missing from storage {self.root}",
                               hint="Run 'cpv doctor --repair' on a machine that has it cached."
                               ) from e
        except OSError as e:
            if explain_os_error(e) is not e:
                raise  # a full, read-only or refused disk: the caller names what it writes
            raise StorageError(f"Cannot read {oid} from storage {self.root}: {e.strerror or e}"
                               ) from e
        return md5

    def leftovers(self) -> list[Leftover]:
        """Partial files of interrupted uploads in this storage folder."""
        return file_leftovers(partial_files(self.root / "files" / "md5",
                                            f".*{PARTIAL_SUFFIX}"))

    def remove_leftover(self, leftover: Leftover) -> None:
        discard(Path(leftover.where))

    def iter_oids(self) -> Iterator[str]:
        base = self.root / "files" / "md5"
        if not base.is_dir():
            return
        for prefix in sorted(base.iterdir()):
            for entry in sorted(prefix.iterdir()):
                if not entry.name.endswith((".cpv-tmp", PARTIAL_SUFFIX)) and \
                        not entry.name.startswith("."):
                    yield prefix.name + entry.name

    def iter_objects(self) -> Iterator[StoredObject]:
        base = self.root / "files" / "md5"
        for oid in self.iter_oids():
            with contextlib.suppress(FileNotFoundError):  # removed meanwhile
                info = (base / oid[:2] / oid[2:]).stat()
                yield StoredObject(oid, info.st_size, info.st_mtime)

    def delete(self, oid: str) -> None:
        """Remove an object (gc; tests). Gone already is fine."""
        with contextlib.suppress(FileNotFoundError):
            os.chmod(self._path(oid), 0o644)
            os.unlink(self._path(oid))

    def remove_all(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def open_storage(url: str, *, config: object | None = None) -> Storage:
    """The storage remote behind a DVC remote URL (a local path, ``file://`` or ``s3://``)."""
    parsed = urlparse(url)
    if parsed.scheme in ("", "file") or (len(parsed.scheme) == 1 and os.name == "nt"):
        return LocalStorage(Path(parsed.path if parsed.scheme == "file" else url))
    if parsed.scheme == "s3":
        from cp_manage.backends.s3 import S3Storage

        return S3Storage(url, config=config)
    raise StorageError(f"Unsupported storage URL {url!r}",
                       hint="Use a local path or s3://bucket/prefix.")
