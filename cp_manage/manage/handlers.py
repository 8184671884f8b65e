"""How one kind of artifact is hashed, cached, stored and brought back.

``FileHandler`` handles a single file (``model.bin``). Each handler turns a workspace artifact
into a DVC pointer plus the cache objects behind it, and turns a pointer back into verified
files, so the managers above never care whether an artifact is a file or a folder.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import queue
import tempfile
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from cp_manage.backends.cache import FileStat
from cp_manage.backends.pointer import Pointer
from cp_manage.errors import ArtifactNotFoundError, IntegrityError
from cp_manage.fsutil import Progress

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

    def describe(self, repo: Repository, pointer: Pointer) -> dict[str, Any]: ...

    def remember_workspace(self, repo: Repository, pointer: Pointer) -> None: ...


T = TypeVar("T")
R = TypeVar("R")
WORKERS = 16
"""Concurrent transfers for many small files (storage backends are thread-safe)."""


def run_parallel(work: Callable[[T], R], items: Sequence[T], *,
                 on_done: Callable[[T, R], None] | None = None) -> list[R]:
    """``work(item)`` for every item on up to ``WORKERS`` threads; ``on_done`` runs in the
    calling thread as each finishes.

    Each thread takes the next item when it is done with one: no future or waiter per item,
    which for 10,000 small files cost the calling thread more than the transfers did. The first
    failure stops the threads from taking more items, and is raised once the ones under way
    have finished.
    """
    if len(items) <= 1:
        results = []
        for item in items:
            results.append(work(item))
            if on_done:
                on_done(item, results[-1])
        return results
    outcomes: queue.SimpleQueue[tuple[int, bool, Any]] = queue.SimpleQueue()
    taken = itertools.count()  # next() is atomic: each index goes to exactly one thread
    stop = threading.Event()

    def worker() -> None:
        while not stop.is_set() and (index := next(taken)) < len(items):
            try:
                outcomes.put((index, True, work(items[index])))
            except BaseException as e:  # handed to the calling thread, which raises it
                stop.set()
                outcomes.put((index, False, e))
                return

    threads = [threading.Thread(target=worker, name="cpv-transfer", daemon=True)
               for _ in range(min(WORKERS, len(items)))]
    for thread in threads:
        thread.start()
    results_by_index: dict[int, R] = {}
    try:
        while len(results_by_index) < len(items):
            index, ok, value = outcomes.get()
            if not ok:
                raise value
            results_by_index[index] = value
            if on_done:
                on_done(items[index], value)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
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
    ``size`` is the pointer's: a file's own size, which tells storage how to fetch it; for a
    listing it is the folder's total, so it is not passed on.
    """
    expected = oid.removesuffix(".dir")
    if repo.cache.has(oid):
        try:
            repo.cache.checkout(oid, target, expected_md5=expected, progress=progress)
            return
        except IntegrityError:
            pass  # the corrupt cache entry is gone; fetch a good copy from storage
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".cpv-tmp",
                                    dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.unlink()
    try:
        md5 = repo.storage.download(oid, tmp, progress=progress,
                                    size=None if oid.endswith(".dir") else size)
        if md5 != expected:
            raise IntegrityError(
                f"The stored object {oid} is corrupt (its bytes hash to {md5})",
                hint="Run 'cpv doctor --repair' from a machine that has a good copy cached.")
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def fetch_tree(repo: ObjectSource, md5s: dict[str, str], root: Path, *, total: int,
               progress: Progress | None) -> None:
    """Write every file of a folder's listing (relative path → md5) below ``root``, from the
    local cache, else from storage, each file's md5 checked as it is written.

    ``root`` is a new folder nobody uses yet, renamed into place only once every file in it has
    been checked (``dataset.swap_into_place``); so each file is written straight at its path in
    it, without the temporary file, rename and permission change per file of ``fetch_object``,
    and every folder is made once, before the transfers.

    Raises:
        IntegrityError: a stored object does not match its md5.
        StorageError, OSError.
    """
    for folder in sorted({os.path.dirname(relpath) for relpath in md5s} - {""}):
        (root / folder).mkdir(parents=True, exist_ok=True)
    done = 0

    def fetch(relpath: str) -> int:
        oid, target = md5s[relpath], root / relpath
        if not repo.cache.export(oid, target):
            md5 = repo.storage.download(oid, target)
            if md5 != oid:
                raise IntegrityError(
                    f"The stored object {oid} is corrupt (its bytes hash to {md5})",
                    hint="Run 'cpv doctor --repair' from a machine that has a good copy cached.")
        return os.stat(target).st_size

    def fetched(_relpath: str, size: int) -> None:
        nonlocal done
        done += size
        if progress:
            progress(done, total)

    run_parallel(fetch, sorted(md5s), on_done=fetched)


class FileHandler:
    """A single-file artifact such as ``model.bin``."""

    def __init__(self, path: str) -> None:
        self.path = path

    def check_source(self, repo: Repository, source: Path) -> Path:
        """The workspace file to upload: must exist, be a regular file inside the repository
        and be the repository's tracked artifact (not a symlink out of it).

        Raises:
            ArtifactNotFoundError: with what to do instead.
        """
        expected = repo.root / self.path
        source = source if source.is_absolute() else repo.root / source
        if source.is_symlink():
            raise ArtifactNotFoundError(
                f"{source} is a symbolic link", hint=f"Copy the checkpoint itself to {expected}.")
        if os.path.abspath(source) != str(expected):
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

    def describe(self, repo: Repository, pointer: Pointer) -> dict[str, Any]:
        return {}

    def remember_workspace(self, repo: Repository, pointer: Pointer) -> None:
        """Record that the workspace file, just written by cpv, holds ``pointer``'s bytes."""
        repo.state.remember(self.path, FileStat.of(repo.root / self.path), pointer.md5)
