"""How one kind of artifact is hashed, cached, stored and brought back.

``FileHandler`` handles a single file (``model.bin``). Each handler turns a workspace artifact
into a DVC pointer plus the cache objects behind it, and turns a pointer back into verified
files, so the managers above never care whether an artifact is a file or a folder.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from cp_manage.backends.cache import FileStat
from cp_manage.backends.pointer import Pointer
from cp_manage.errors import ArtifactNotFoundError, IntegrityError
from cp_manage.fsutil import Progress, explained, progress_phase

if TYPE_CHECKING:
    from cp_manage.backends.cache import LocalCache
    from cp_manage.backends.storage import Storage
    from cp_manage.manage.repository import Repository


class ObjectSource(Protocol):
    """Where objects come from on download: a repository, or a detached mirror (no clone)."""

    @property
    def cache(self) -> LocalCache: ...

    @property
    def storage(self) -> Storage: ...


class Handler(Protocol):
    path: str

    def check_source(self, repo: Repository, source: Path) -> Path: ...

    def stage(self, repo: Repository, source: Path, *, progress: Progress | None) -> Pointer: ...

    def objects(self, repo: Repository, pointer: Pointer) -> list[str]: ...

    def workspace_oid(self, repo: Repository) -> str | None: ...

    def materialize(self, repo: ObjectSource, pointer: Pointer, target: Path, *,
                    progress: Progress | None) -> None: ...

    def holds(self, repo: ObjectSource, pointer: Pointer, target: Path) -> bool: ...

    def describe(self, repo: Repository, pointer: Pointer) -> dict[str, Any]: ...

    def remember_workspace(self, repo: Repository, pointer: Pointer) -> None: ...


T = TypeVar("T")
R = TypeVar("R")
WORKERS = 16
"""Concurrent transfers for many small files (storage backends are thread-safe)."""


def run_parallel(work: Callable[[T], R], items: Sequence[T], *,
                 on_done: Callable[[T, R], None] | None = None) -> list[R]:
    """``work(item)`` for every item on a thread pool; ``on_done`` runs in the calling thread.

    The first failure cancels what has not started yet and is raised once the rest finished.
    """
    if len(items) <= 1:
        results = []
        for item in items:
            results.append(work(item))
            if on_done:
                on_done(item, results[-1])
        return results
    results_by_index: dict[int, R] = {}
    with ThreadPoolExecutor(max_workers=min(WORKERS, len(items))) as pool:
        futures = {pool.submit(work, item): index for index, item in enumerate(items)}
        try:
            for future in as_completed(futures):
                index = futures[future]
                results_by_index[index] = future.result()
                if on_done:
                    on_done(items[index], results_by_index[index])
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    return [results_by_index[index] for index in range(len(items))]


def upload_objects(repo: Repository, oids: Iterable[str], *, progress: Progress | None) -> int:
    """Copy objects from the local cache to storage; returns the bytes sent.

    File objects go first, many at a time; directory listings go last, so a listing in storage
    always means every file it names is there too (DVC relies on that when it pulls).
    """
    ordered = sorted(set(oids))
    files = [oid for oid in ordered if not oid.endswith(".dir")]
    listings = [oid for oid in ordered if oid.endswith(".dir")]
    sizes = {oid: repo.cache.path(oid).stat().st_size for oid in [*files, *listings]}
    if files:
        progress_phase(progress, "sending")
    if len(files) == 1:
        repo.storage.upload(files[0], repo.cache.path(files[0]), progress=progress)
    elif files:
        total, done = sum(sizes[oid] for oid in files), 0

        def sent(oid: str, _result: None) -> None:
            nonlocal done
            done += sizes[oid]
            if progress:
                progress(done, total)

        run_parallel(lambda oid: repo.storage.upload(oid, repo.cache.path(oid)), files,
                     on_done=sent)
    for oid in listings:
        repo.storage.upload(oid, repo.cache.path(oid))
    return sum(sizes.values())


def fetch_object(repo: ObjectSource, oid: str, target: Path, *, size: int,
                 progress: Progress | None) -> None:
    """Write object ``oid`` to ``target`` from the local cache, else from storage; verified.

    The file appears at ``target`` only once its md5 matched: a temporary file next to it is
    renamed into place, so no corrupt or partial file is ever left at the destination.
    """
    expected = oid.removesuffix(".dir")
    if repo.cache.has(oid):
        try:
            repo.cache.checkout(oid, target, expected_md5=expected, progress=progress)
            return
        except IntegrityError:
            pass  # the corrupt cache entry is gone; fetch a good copy from storage
    # A full, read-only or refused disk names the file being written, with the free space
    # measured once the partial file is gone.
    with explained(target, needed=size or None):
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".cpv-tmp",
                                        dir=target.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        tmp.unlink()
        try:
            md5 = repo.storage.download(oid, tmp, progress=progress)
            if md5 != expected:
                raise IntegrityError(
                    f"The stored object {oid} is corrupt (its bytes hash to {md5})",
                    hint="Run 'cpv doctor --repair' from a machine that has a good copy "
                    "cached.")
            os.chmod(tmp, 0o644)
            os.replace(tmp, target)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()


def same_path(path: Path, other: Path) -> bool:
    """Whether two absolute paths name the same entry: their folders may be reached through
    symbolic links or ``..``, the entry itself is compared by name (it is never followed)."""
    def canonical(p: Path) -> Path:
        p = Path(os.path.normpath(p))
        return Path(os.path.realpath(p.parent)) / p.name

    return canonical(path) == canonical(other)


class FileHandler:
    """A single-file artifact such as ``model.bin``."""

    def __init__(self, path: str) -> None:
        self.path = path

    def check_source(self, repo: Repository, source: Path) -> Path:
        """The workspace file to upload: must exist, be a regular file inside the repository
        and be the repository's tracked artifact (not a symlink out of it).

        Args:
            source: an absolute path (the caller's relative path is resolved before).

        Raises:
            ArtifactNotFoundError: with what to do instead.
        """
        expected = repo.root / self.path
        if source.is_symlink():
            raise ArtifactNotFoundError(
                f"{source} is a symbolic link", hint=f"Copy the checkpoint itself to {expected}.")
        if not same_path(source, expected):
            raise ArtifactNotFoundError(
                f"{source} is not this repository's model file",
                hint=f"Write or copy the checkpoint to {expected}, then upload it.")
        if not source.exists():
            raise ArtifactNotFoundError(
                f"Model file {source} does not exist",
                hint="Save the checkpoint there first (e.g. torch.save(model, path)).")
        if not source.is_file():
            raise ArtifactNotFoundError(f"{source} is not a regular file",
                                        hint="Upload a single checkpoint file.")
        return source

    def stage(self, repo: Repository, source: Path, *, progress: Progress | None) -> Pointer:
        stat = FileStat.of(source)
        known = repo.state.lookup(self.path, stat)
        if known is None:
            repo.warm_up_storage()  # connect while hashing: a new file is about to be uploaded
        if known is None or not repo.cache.has(known):
            progress_phase(progress, "hashing")
        md5 = repo.cache.add_file(source, known_md5=known, progress=progress)
        repo.state.remember(self.path, stat, md5)
        return Pointer(path=Path(self.path).name, md5=md5, size=stat.size)

    def objects(self, repo: Repository, pointer: Pointer) -> list[str]:
        return [pointer.oid]

    def workspace_oid(self, repo: Repository) -> str | None:
        """The md5 of the workspace file (from the stat record when unchanged), or None."""
        source = repo.root / self.path
        if not source.is_file():
            return None
        stat = FileStat.of(source)
        known = repo.state.lookup(self.path, stat)
        if known is None:
            from cp_manage.fsutil import md5_file

            known = md5_file(source)
            repo.state.remember(self.path, stat, known)
        return known

    def materialize(self, repo: ObjectSource, pointer: Pointer, target: Path, *,
                    progress: Progress | None) -> None:
        fetch_object(repo, pointer.oid, target, size=pointer.size, progress=progress)

    def holds(self, repo: ObjectSource, pointer: Pointer, target: Path) -> bool:
        """Whether ``target`` is already a file with exactly ``pointer``'s bytes."""
        from cp_manage.fsutil import md5_file

        return (target.is_file() and not target.is_symlink()
                and target.stat().st_size == pointer.size and md5_file(target) == pointer.md5)

    def describe(self, repo: Repository, pointer: Pointer) -> dict[str, Any]:
        return {}

    def remember_workspace(self, repo: Repository, pointer: Pointer) -> None:
        """Record that the workspace file, just written by cpv, holds ``pointer``'s bytes."""
        repo.state.remember(self.path, FileStat.of(repo.root / self.path), pointer.md5)
