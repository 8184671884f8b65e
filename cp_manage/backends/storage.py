"""Storage remotes: where the large files live, in DVC's own remote layout.

An object with md5 ``abcdef...`` lives at ``{url}/files/md5/ab/cdef...`` (a directory listing
has the suffix ``.dir``), exactly where ``dvc push`` puts it, so stock ``dvc pull`` reads what cpv
wrote and the other way round. One class per kind of location; ``open_storage`` picks it by URL.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Protocol
from urllib.parse import urlparse

from cp_manage.backends.objects import object_key
from cp_manage.errors import CPVError, StorageError
from cp_manage.faults import crash_point
from cp_manage.fsutil import Progress, atomic_output, copy_file_md5, explain_os_error

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

    def upload(self, oid: str, source: Path, *, progress: Progress | None = None) -> None:
        """Store ``source`` as object ``oid``; a reader never sees half of it."""

    def download(self, oid: str, target: Path, *, progress: Progress | None = None,
                 size: int | None = None) -> str:
        """Write object ``oid`` to ``target`` (a new file) and return the md5 of what was read.

        ``size``, the object's size when the caller knows it, is a hint: it may save asking
        storage for it, and nothing relies on it (the md5 decides)."""

    def iter_oids(self) -> Iterator[str]:
        """Every object id stored (for checks and tests)."""


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

    def upload(self, oid: str, source: Path, *, progress: Progress | None = None) -> None:
        target = self._path(oid)
        self._make_folder_of(oid)
        try:
            size = source.stat().st_size
            with open(source, "rb") as reader, atomic_output(target, mode=0o444,
                                                             size=size) as writer:
                copy_file_md5(reader, writer, total=size, progress=progress)
                crash_point("storage_upload")
        except CPVError:  # a full, read-only or refused storage folder, already explained
            raise
        except OSError as e:
            raise StorageError(f"Cannot write {oid} to storage {self.root}: {e.strerror or e}",
                               hint="Check free space and permissions, then run the command "
                               "again; nothing was committed.") from e

    def download(self, oid: str, target: Path, *, progress: Progress | None = None,
                 size: int | None = None) -> str:
        source = self._path(oid)
        try:
            with open(source, "rb") as reader, open(target, "x+b") as writer:
                md5, _ = copy_file_md5(reader, writer, total=source.stat().st_size,
                                       progress=progress)
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

    def iter_oids(self) -> Iterator[str]:
        base = self.root / "files" / "md5"
        if not base.is_dir():
            return
        for prefix in sorted(base.iterdir()):
            for entry in sorted(prefix.iterdir()):
                if not entry.name.endswith(".cpv-tmp") and not entry.name.startswith("."):
                    yield prefix.name + entry.name

    def delete(self, oid: str) -> None:
        """Remove an object (only tests and repair use this)."""
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
