"""The workspace artifact: what a commit records for it, and bringing a version back into it.

An upload from elsewhere and a revert both end the same way: the workspace's file or folder is
replaced by a stored version (private, writable files from the cache) and the pointer is
committed. ``Restore`` does that undoably, so a failed commit or push puts back what the
workspace held; work that was never uploaded is refused, or with ``force`` set aside until the
commit is pushed.
"""

from __future__ import annotations

import os
import secrets
import shutil
import stat
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cp_manage.artifacts import encode_metrics
from cp_manage.backends.cache import FileStat
from cp_manage.backends.partial import hold
from cp_manage.backends.pointer import Pointer
from cp_manage.errors import PointerError, UnsavedChangesError
from cp_manage.faults import crash_point
from cp_manage.fsutil import Progress
from cp_manage.interrupts import critical
from cp_manage.manage.dataset import DirHandler, build_next_to
from cp_manage.manage.handlers import FileHandler, Handler, Reuse
from cp_manage.manage.repository import (
    METRICS_FILE,
    Repository,
    append_metrics,
    ensure_ignored,
    last_metrics,
)
from cp_manage.spec import ArtifactSpec
from cp_manage.swap import remove, swap_in


def handler_for(spec: ArtifactSpec) -> Handler:
    """The handler storing ``spec``'s artifact: a folder, or a single file."""
    return DirHandler(spec) if spec.tree else FileHandler(spec)


def pointer_changes(repo: Repository, spec: ArtifactSpec, head: str | None, pointer: Pointer,
                    metrics: dict[str, Any] | None) -> dict[str, bytes]:
    """The files a commit recording ``pointer`` changes, computed on top of ``head``.

    For an artifact that records metrics, a ``metrics.log`` line is added when the artifact or
    the metrics differ from HEAD's; a new artifact without metrics gets an empty line, so the
    last line always describes the current artifact.
    """
    files = {spec.pointer_file: pointer.dumps().encode()}
    artifact_changed = (repo.git.show(head, spec.pointer_file) if head else None) != files[
        spec.pointer_file]
    if spec.records_metrics:
        old_metrics_raw = repo.git.show(head, METRICS_FILE) if head else None
        # Compared and written as stored: NaN and ±inf as strings ("nan" != "nan" is False).
        wanted = encode_metrics(metrics) if metrics is not None else (
            {} if artifact_changed else None)
        if wanted is not None and (artifact_changed or wanted != last_metrics(
                old_metrics_raw or b"")):
            files[METRICS_FILE] = append_metrics(old_metrics_raw, wanted)
    # cpv's temporary-file patterns reach older repositories with their next real change,
    # never as a commit of their own.
    files[".gitignore"] = ensure_ignored(
        repo.git.show(head, ".gitignore") if head else None, spec.path,
        temporary=artifact_changed or METRICS_FILE in files)
    return files


def committed_pointer(repo: Repository, spec: ArtifactSpec, oid: str) -> Pointer | None:
    """The pointer of a commit on this branch that recorded object ``oid``, if any."""
    # -S: only the commits that added or removed the hash; one of them recorded it.
    found = repo.git.out("log", "--format=%H", f"-S{oid}", "--", spec.pointer_file)
    for commit in found.splitlines():
        try:
            pointer = repo.pointer_at(commit, spec.path)
        except PointerError:
            continue
        if pointer is not None and pointer.oid == oid:
            return pointer
    return None


class WorkspaceCopies:
    """The workspace's copies of an upload's new files, written while they are hashed into the
    cache (``LocalCache.add_file(copy_to=...)``), from the very buffers that were hashed.

    An upload from elsewhere ends with the workspace holding the new version; taking these by a
    link spares reading, hashing and writing every new file once more from the cache. They wait
    in a hidden folder beside the workspace artifact (the same filesystem, so a link works);
    ``discard`` removes it, so what was not taken is gone and what was taken is again the
    workspace's only link.
    """

    def __init__(self, artifact: Path) -> None:
        self.artifact = artifact
        self.root: Path | None = None
        self._holding: int | None = None  # so that no other build_next_to takes it for stale
        self._md5s: dict[str, str] = {}
        self._lock = threading.Lock()  # a folder's files are hashed on many threads

    def path_for(self, relpath: str) -> Path:
        """Where to write the copy of ``relpath`` (``/``-separated); its folder is made."""
        with self._lock:
            if self.root is None:
                self.root = build_next_to(self.artifact)
                self._holding = hold(self.root)
            root = self.root
        path = root / relpath
        if "/" in relpath:
            path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def written(self, relpath: str, md5: str) -> None:
        """Record that the copy of ``relpath`` holds ``md5``'s bytes, if it was written."""
        with self._lock:
            if self.root is not None and os.path.lexists(self.root / relpath):
                self._md5s[relpath] = md5

    def reuse(self, relpath: str, md5: str) -> Path | None:
        """The copy of ``relpath`` when it holds ``md5`` (a ``Reuse``)."""
        with self._lock:
            return self.root / relpath if self.root is not None and self._md5s.get(
                relpath) == md5 else None

    def discard(self) -> None:
        with self._lock:
            root, self.root = self.root, None
            holding, self._holding = self._holding, None
            self._md5s.clear()
        if holding is not None:
            os.close(holding)
        if root is not None:
            remove(root)


@dataclass(frozen=True)
class WorkspaceState:
    """What the workspace artifact holds: ``workspace`` (its object id, None when absent),
    ``current`` (the committed pointer recording it, if any) and whether it is ``unsaved``."""

    current: Pointer | None
    workspace: str | None
    unsaved: bool


def check_workspace(repo: Repository, spec: ArtifactSpec, *, force: bool,
                    refusal_hint: str) -> WorkspaceState:
    """Whether the workspace artifact may be replaced; changes nothing.

    Raises:
        UnsavedChangesError: the workspace artifact has changes never uploaded and ``force``
            is False (``refusal_hint`` says what to do).
    """
    handler = handler_for(spec)
    current = repo.pointer_at(repo.head_or_raise(), spec.path)
    workspace = handler.workspace_oid(repo)
    if workspace is not None and (current is None or workspace != current.oid):
        # Not unsaved when an earlier commit recorded it: a teammate's upload, brought in
        # by sync, has replaced the workspace's own upload at HEAD.
        current = committed_pointer(repo, spec, workspace)
    unsaved = workspace is not None and (current is None or workspace != current.oid)
    if unsaved and not force:
        raise UnsavedChangesError(f"{repo.root / spec.path} has changes that were never "
                                  "uploaded", hint=refusal_hint)
    return WorkspaceState(current, workspace, unsaved)


@dataclass
class Restore:
    """One artifact going to a stored version in the workspace, undoable until committed.

    The wanted version is written beside the artifact under a hidden, git-ignored name, checked,
    and swapped in (``cp_manage.swap``): the artifact's path names the old version or the
    wanted one at every instant, even when cpv is killed, and a rerun finds the wanted one
    there and only commits it. The old version waits under the hidden name until the commit
    is pushed (``finish``: pooled or removed); ``undo`` swaps it back. Unsaved work that a
    forced restore replaces is first linked (or copied) to ``.NAME.cpv-discarded``, where it
    stays for the user to see if cpv is killed, and is dropped once the commit is pushed.
    """

    repo: Repository
    spec: ArtifactSpec
    wanted: Pointer
    metrics: dict[str, Any] | None
    state: WorkspaceState
    copies: WorkspaceCopies | None = None
    applied: bool = False
    previous: Path | None = None
    """The version the workspace held, under a hidden name, from ``apply`` until ``finish``."""
    discarded: Path | None = None

    @property
    def target(self) -> Path:
        return self.repo.root / self.spec.path

    @property
    def handler(self) -> Handler:
        return handler_for(self.spec)

    @property
    def current(self) -> Pointer | None:
        return self.state.current

    @property
    def workspace(self) -> str | None:
        return self.state.workspace

    @property
    def unsaved(self) -> bool:
        return self.state.unsaved

    def apply(self, progress: Progress | None) -> None:
        """Write the wanted version into the workspace (unless it is there already)."""
        repo, target = self.repo, self.target
        if self.workspace == self.wanted.oid:
            return
        repo.exclude_temporaries()
        if self.unsaved:
            self.discarded = target.with_name(f".{target.name}.cpv-discarded")
            set_aside(target, self.discarded)
        staged = self._staging_path()
        try:
            self._stage(staged, progress)
            crash_point("workspace_staged")
            with critical():  # a signal cannot fall between the swap and its record
                self.previous = swap_in(staged, target)
                self.applied = True
        except BaseException:
            if not self.applied:
                remove(staged)
            raise
        self.handler.remember_workspace(repo, self.wanted)

    def _staging_path(self) -> Path:
        """A hidden, git-ignored name beside the artifact for the wanted version."""
        target = self.target
        suffix = "cpv-tmpdir" if self.spec.tree else "cpv-tmp"
        return target.with_name(f".{target.name}.{secrets.token_hex(4)}.{suffix}")

    def _stage(self, staged: Path, progress: Progress | None) -> None:
        """Write the wanted version, complete and md5-checked, to ``staged``: from the pool,
        else from the cache or storage (a folder links the files the saved workspace folder
        already holds instead of copying them). An interruption leaves a partial ``staged``,
        which ``apply`` removes."""
        if self._poolable() and self.repo.pool.take(self.wanted.oid, staged):
            return
        self.handler.materialize(self.repo, self.wanted, staged, progress=progress,
                                 reuse=self._reuse())
        if self.copies is not None:
            self.copies.discard()  # what ``staged`` took is its only link again

    def _reuse(self) -> Reuse | None:
        """Where files may be linked from instead of copied out of the cache: the files the
        saved workspace folder already holds, then the upload's own copies."""
        saved = self._saved_file if self.spec.tree and not self.unsaved else None
        copies = self.copies
        if copies is None:
            return saved

        def reuse(relpath: str, md5: str) -> Path | None:
            return (saved(relpath, md5) if saved else None) or copies.reuse(relpath, md5)

        return reuse

    def _saved_file(self, relpath: str, md5: str) -> Path | None:
        """The workspace folder's file ``relpath`` when it holds ``md5`` (by the stat record of
        what cpv wrote or hashed there) and is a private file (one link)."""
        path = self.target / relpath
        try:
            info = os.lstat(path)
        except OSError:
            return None
        if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
            return None
        found = FileStat(info.st_ino, info.st_size, info.st_mtime_ns)
        return path if self.repo.state.lookup(f"{self.spec.path}/{relpath}", found) == md5 \
            else None

    def _poolable(self) -> bool:
        return not self.spec.tree and not self.target.is_dir()

    def finish(self) -> None:
        """The commit is pushed: the old version goes to the pool (a saved file, for switching
        back) or away, and so does the discarded work."""
        previous, self.previous = self.previous, None
        if previous is not None:
            pooled = (not self.spec.tree and not self.unsaved and self.workspace is not None
                      and previous.is_file() and self.repo.pool.put(previous, self.workspace))
            if not pooled:
                remove(previous)
        if self.discarded is not None:
            remove(self.discarded)
            self.discarded = None

    def undo(self) -> None:
        """Put back what the workspace held (the wanted version goes to the pool, or away)."""
        repo, target = self.repo, self.target
        if self.applied:
            with critical():
                back = swap_in(self.previous, target) if self.previous is not None else target
                self.previous, self.applied = None, False
            if back is not None:
                pooled = (not self.spec.tree and back.is_file()
                          and repo.pool.put(back, self.wanted.oid))
                if not pooled:
                    remove(back)
            if self.current is not None and not self.unsaved and (
                    not self.spec.tree or repo.cache.has(self.current.oid)):
                self.handler.remember_workspace(repo, self.current)
        if self.discarded is not None:  # the work is back at (or never left) the artifact
            remove(self.discarded)
            self.discarded = None

    def changes(self, head: str | None) -> dict[str, bytes]:
        return pointer_changes(self.repo, self.spec, head, self.wanted, self.metrics)


def restore_and_commit(repo: Repository, restores: list[Restore], message: str, *,
                       progress: Progress | None) -> str | None:
    """Bring every artifact of ``restores`` into the workspace and commit all their pointers in
    one commit, pushed. On any failure the workspace is put back as it was.

    Returns:
        The new commit, or None when HEAD already holds all of them.
    """

    def changes(head: str | None) -> dict[str, bytes]:
        files: dict[str, bytes] = {}
        for restore in restores:
            for path, content in restore.changes(head).items():
                files[path] = ensure_ignored(files[path], restore.spec.path) if (
                    path == ".gitignore" and path in files) else content
        return files

    pushed = False

    def finish() -> None:  # runs with the push, before a signal that arrived meanwhile
        nonlocal pushed
        pushed = True
        for restore in restores:
            restore.finish()

    try:
        for restore in restores:
            restore.apply(progress)
        return repo.commit_and_push(changes, message, on_pushed=finish)
    except BaseException:
        if not pushed:  # once pushed, the working tree matches the remote: keep it
            for restore in reversed(restores):
                restore.undo()
        raise


def set_aside(target: Path, aside: Path) -> None:
    """Make ``aside`` hold what ``target`` holds (replacing what ``aside`` held) without
    touching ``target``: hard links of its files, or copies where links are refused."""
    remove(aside)
    if not target.is_dir() or target.is_symlink():
        try:
            os.link(target, aside, follow_symlinks=False)
        except OSError:
            shutil.copy2(target, aside, follow_symlinks=False)
        return
    shutil.copytree(target, aside, symlinks=True, copy_function=_link_or_copy)


def _link_or_copy(source: str, destination: str) -> None:
    try:
        os.link(source, destination)
    except OSError:
        shutil.copy2(source, destination)
