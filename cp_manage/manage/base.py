"""The checkpoint lifecycle shared by models and data: upload, tag, list, download, revert.

``CheckpointManager`` holds the one implementation; ``ModelsCheckpointsManage`` and
``DataCheckpointsManage`` only name their artifact and add the seed's method names.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard

from cp_manage import __version__
from cp_manage.artifacts import VersionInfo, check_metrics
from cp_manage.backends.pointer import Pointer
from cp_manage.config import CPVConfig
from cp_manage.errors import (
    CPVError,
    NotARepositoryError,
    NothingToDoError,
    PointerError,
    StorageError,
    UnsavedChangesError,
    VersionExistsError,
)
from cp_manage.faults import crash_point
from cp_manage.fsutil import Progress
from cp_manage.manage.detached import DetachedSource
from cp_manage.manage.handlers import Handler, ObjectSource, upload_objects
from cp_manage.manage.repository import (
    METRICS_FILE,
    InitResult,
    Repository,
    append_metrics,
    ensure_ignored,
    is_lost_race,
    last_metrics,
    utc_now,
)
from cp_manage.versions import Kind, next_version, parse_version, validate_name

logger = logging.getLogger("cp_manage")
logger.addHandler(logging.NullHandler())


@dataclass(frozen=True)
class UploadResult:
    """What an upload did. ``changed`` is False when artifact and metrics were already HEAD's."""

    commit: str
    changed: bool
    md5: str
    size_bytes: int
    uploaded_bytes: int


class CheckpointManager:
    """One implementation of the lifecycle, for the artifact a subclass names."""

    kind: Kind = "model"
    records_metrics = True
    """Whether each version carries a ``metrics.log`` line (models do, datasets do not)."""

    def __init__(self, team_name: str | None = None, model_name: str | None = None,
                 repo_path: str | os.PathLike[str] | None = None, verbose: bool = False, *,
                 config: CPVConfig | None = None, progress: Progress | None = None) -> None:
        if team_name is not None:
            validate_name(team_name, "team")
        if model_name is not None:
            validate_name(model_name, "model")
        if repo_path is None and model_name is None:
            raise CPVError("Nothing identifies the repository",
                           hint="Pass repo_path=, or team_name= and model_name=.")
        self.team_name = team_name
        self.model_name = model_name
        self.repo_path = Path(repo_path if repo_path is not None else Path.cwd() / str(
            model_name)).expanduser().absolute()
        self.config = config or CPVConfig()
        self.progress = progress
        self._repo: Repository | None = None
        if verbose:
            logger.setLevel(logging.INFO)

    # -- plumbing ------------------------------------------------------------------------------

    @property
    def repo(self) -> Repository:
        """The repository, opened once."""
        if self._repo is None:
            self._repo = Repository.open(self.repo_path, config=self.config,
                                         team=self.team_name, model=self.model_name)
            self.team_name, self.model_name = self._repo.team, self._repo.model
        return self._repo

    def _handler(self) -> Handler:
        raise NotImplementedError

    def _init(self, *, git_url: str | None = None, storage_url: str | None = None,
              force: bool = False) -> InitResult:
        if self.team_name is None or self.model_name is None:
            raise CPVError("init needs a team and a model name",
                           hint="Pass team_name= and model_name= (CLI: --team and --model).")
        repo, result = Repository.init(self.repo_path, team=self.team_name,
                                       model=self.model_name, config=self.config,
                                       git_url=git_url, storage_url=storage_url, force=force)
        self._repo = repo
        if result.created:
            logger.info("Initialised %s/%s at %s", repo.team, repo.model, repo.root)
        else:
            logger.info("%s is already initialised; nothing changed", repo.root)
        return result

    # -- upload --------------------------------------------------------------------------------

    def upload(self, source: str | os.PathLike[str] | None = None, *,
               metrics: dict[str, Any] | None = None, message: str | None = None,
               progress: Progress | None = None) -> UploadResult:
        """Store the artifact, then commit its pointer (and metrics) and push.

        Order is what makes it safe: hash into the local cache, push the blobs to storage,
        and only then commit and push git. If storage fails there is no commit. When the
        artifact and the metrics are both unchanged there is no new commit.

        Args:
            source: the artifact in the working tree (default: the repository's own path).
            metrics: a JSON object of finite values describing this artifact.
            message: the commit message.

        Returns:
            An UploadResult; ``.commit`` is HEAD afterwards.

        Raises:
            ArtifactNotFoundError, PointerError, StorageError, RemoteError, CPVError.
        """
        repo, handler = self.repo, self._handler()
        checked_metrics = check_metrics(metrics) if metrics is not None else None
        progress = progress or self.progress
        with repo.locked():
            path = handler.check_source(repo, Path(source) if source else Path(handler.path))
            pointer = handler.stage(repo, path, progress=progress)
            missing = repo.missing_in_storage(handler.objects(repo, pointer))
            uploaded = upload_objects(repo, missing, progress=progress)
            repo.cache.flush()
            repo.record_stored(missing)
            crash_point("after_blobs")

            def changes(head: str | None) -> dict[str, bytes]:
                return self._pointer_changes(head, pointer, checked_metrics)

            what = f"{self.kind} {handler.path} ({pointer.md5[:8]})"
            commit = repo.commit_and_push(changes, message or f"Upload {what}")
            changed = commit is not None
            if commit is None:
                logger.info("The %s and its metrics are unchanged; no new commit", self.kind)
                commit = repo.head_or_raise()
            else:
                logger.info("Uploaded %s as commit %s", what, commit[:10])
        return UploadResult(commit, changed, pointer.md5, pointer.size, uploaded)

    def _pointer_changes(self, head: str | None, pointer: Pointer,
                         metrics: dict[str, Any] | None) -> dict[str, bytes]:
        """The files a commit recording ``pointer`` changes, computed on top of ``head``.

        With metrics, a ``metrics.log`` line is added when the artifact or the metrics differ
        from HEAD's; a new artifact without metrics gets an empty line, so the last line always
        describes the current artifact.
        """
        repo, path = self.repo, self._handler().path
        pointer_file = f"{path}.dvc"
        files = {
            pointer_file: pointer.dumps().encode(),
            ".gitignore": ensure_ignored(repo.git.show(head, ".gitignore") if head else None,
                                         path),
        }
        if self.records_metrics:
            old_metrics_raw = repo.git.show(head, METRICS_FILE) if head else None
            old_pointer = repo.git.show(head, pointer_file) if head else None
            artifact_changed = old_pointer != files[pointer_file]
            wanted = metrics if metrics is not None else ({} if artifact_changed else None)
            if wanted is not None and (artifact_changed or wanted != last_metrics(
                    old_metrics_raw or b"")):
                files[METRICS_FILE] = append_metrics(old_metrics_raw, wanted)
        return files

    # -- tag -----------------------------------------------------------------------------------

    def tag(self, version: str | None = None, *, major: bool = False,
            message: str | None = None) -> str:
        """Give HEAD's artifact a version and push the tag with its commit.

        Args:
            version: an explicit, unused ``vX.Y``; None for the next minor (or, with ``major``,
                the next major) version.

        Returns:
            The tag name.

        Raises:
            InvalidVersionError, VersionExistsError, NothingToDoError, StorageError, RemoteError.
        """
        repo = self.repo
        explicit = parse_version(version, kind=self.kind) if version is not None else None
        with repo.locked():
            # The commit the user uploaded, even when teammates have pushed since.
            head = repo.head_or_raise()
            # Checked before anything is pushed: a corrupt pointer must not reach the remote.
            info = self._version_info_for(head)
            repo.git.fetch(f"+refs/heads/{repo.branch()}:refs/remotes/origin/{repo.branch()}")
            repo.push_head_if_needed()
            finished: list[str] = []

            def propose() -> dict[str, str] | None:
                existing = repo.versions(self.kind, fetch=False)
                done = self._finish_interrupted_tag(head, existing)
                if done:
                    finished.append(done)
                    return None
                self._check_new_version(info, existing)
                numbers = [parse_version(i.version, kind="model") for i in existing
                           if i.version]
                number = explicit or next_version(numbers, major=major)
                name = number.tag(self.kind)
                if number in numbers:
                    raise VersionExistsError(name)
                info.version, info.tag = str(number), name
                info.message = message or f"{self.kind.capitalize()} {number}"
                return {name: info.tag_message()}

            try:
                pushed = repo.push_versions(head, propose, retry=explicit is None)
            except CPVError as e:
                if explicit is not None and is_lost_race(e):
                    raise VersionExistsError(explicit.tag(self.kind)) from e
                raise
            if pushed is None:
                return finished[0]
            logger.info("Tagged %s as %s", head[:10], info.tag)
            return str(info.tag)

    def _finish_interrupted_tag(self, head: str, existing: list[VersionInfo]) -> str | None:
        """When HEAD already carries a version: push it if an earlier run died before doing
        so and return it; refuse to give the same commit a second version."""
        repo = self.repo
        on_head = [i.tag for i in existing if i.commit == head and i.tag]
        if not on_head:
            return None
        remote = repo.remote_tags()
        for name in on_head:
            if name in remote:
                raise NothingToDoError(
                    f"HEAD is already {name}",
                    hint=f"Upload a new {self.kind} checkpoint before tagging again.")
        name = on_head[-1]
        try:
            repo.git.push(f"refs/tags/{name}")
        except CPVError as e:
            if not is_lost_race(e):
                raise
            repo.git.delete_tags(name)  # someone else took that name meanwhile
            return None
        logger.info("Pushed %s, left unpushed by an interrupted run", name)
        return name

    def _check_new_version(self, info: VersionInfo, existing: list[VersionInfo]) -> None:
        """Refuse a version that would add nothing (the data manager refuses a dataset that
        is already a version)."""

    def _version_info_for(self, commit: str) -> VersionInfo:
        """Metadata for a new tag on ``commit``, checking its blobs are in storage."""
        repo, handler = self.repo, self._handler()
        pointer = repo.pointer_at(commit, handler.path)
        if pointer is None:
            raise NothingToDoError(f"HEAD has no uploaded {self.kind}",
                                   hint=f"Run 'cpv {self.kind} upload' first.")
        if repo.missing_in_storage([pointer.oid]):
            raise StorageError(f"The {self.kind} of HEAD ({pointer.oid}) is not in storage",
                               hint="Run 'cpv doctor --repair' or upload it again.")
        base = repo.info_from_commit(self.kind, commit, tag=None)
        assert base is not None
        base.created_at = utc_now()
        base.author = repo.author()
        base.cpv_version = __version__
        extra = self._handler().describe(repo, pointer)
        for key, value in extra.items():
            setattr(base, key, value)
        return base

    # -- reading -------------------------------------------------------------------------------

    def list_versions(self) -> list[VersionInfo]:
        """Every version, oldest first, with metadata, from git alone."""
        versions = self.repo.versions(self.kind)
        for tag, why in self.repo.skipped.items():
            logger.warning("Skipping %s: %s", tag, why)
        return versions

    def metadata(self, version: str | None = None) -> VersionInfo:
        """The metadata of ``version`` (HEAD when None), from git alone."""
        return self.repo.resolve(self.kind, version)[1]

    def diff(self, old: str, new: str) -> dict[str, Any]:
        """Metrics of two versions side by side: ``{metric: {old, new, delta}}`` plus sizes."""
        a, b = self.metadata(old), self.metadata(new)
        rows: dict[str, dict[str, Any]] = {}
        for key in sorted(set(a.metrics) | set(b.metrics)):
            left, right = a.metrics.get(key), b.metrics.get(key)
            delta = right - left if _is_number(left) and _is_number(right) else None
            rows[key] = {"old": left, "new": right, "delta": delta}
        return {"old": a.to_dict(), "new": b.to_dict(), "metrics": rows,
                "size_delta_bytes": b.size_bytes - a.size_bytes}

    # -- download and revert -------------------------------------------------------------------

    def download(self, version: str | None = None, *,
                 output_dir: str | os.PathLike[str] | None = None,
                 progress: Progress | None = None) -> tuple[Path, VersionInfo]:
        """Write ``version`` (HEAD when None) into ``output_dir``; HEAD and the working tree
        are never touched. The md5 of every file is checked before it appears.

        Returns:
            The path written and the version's metadata.
        """
        handler = self._handler()
        source: ObjectSource
        try:
            repo = self.repo
        except NotARepositoryError:
            if self.team_name is None or self.model_name is None:
                raise
            # No clone here: fetch just this version from the configured remotes.
            detached = DetachedSource(self.config, self.team_name, self.model_name)
            commit, info, pointer = detached.resolve(self.kind, version, handler.path)
            source, team, model, root = detached, self.team_name, self.model_name, None
        else:
            repo.warm_up_storage()
            commit, info = repo.resolve(self.kind, version)
            found = repo.pointer_at(commit, handler.path)
            assert found is not None
            pointer, source, team, model, root = found, repo, repo.team, repo.model, repo.root
        out = Path(output_dir) if output_dir is not None else (
            self.config.home / "downloads" / team / model / (info.version or commit[:12]))
        out = out.expanduser().absolute()
        # A file lands inside the folder (DIR/model.bin); a dataset *is* the folder (DIR/train/).
        target = out if pointer.is_dir else out / pointer.path
        if root is not None and os.path.abspath(target) == str(root / handler.path):
            raise CPVError(f"Downloading into {target} would overwrite the working tree",
                           hint=f"Use -o with another folder, or 'cpv {self.kind} revert'.")
        if pointer.is_dir and output_dir is not None and out.exists() and (
                not out.is_dir() or any(out.iterdir())):
            raise CPVError(f"{out} exists and is not empty",
                           hint="Download the dataset into a new or empty folder (it replaces "
                           "the folder's whole content), or delete that folder first.")
        try:
            handler.materialize(source, pointer, target, progress=progress or self.progress)
        except OSError as e:
            if isinstance(e, CPVError):
                raise
            # The destination, not the remote: e.g. -o names a file, or a folder not writable.
            raise CPVError(f"Cannot write the {self.kind} to {out}: {e.strerror or e}",
                           hint="Pass -o a folder you can write to (it is created when "
                           "missing).") from e
        logger.info("Downloaded %s %s to %s", self.kind, info.version or "HEAD", target)
        return target, info

    def revert(self, version: str, *, force: bool = False,
               progress: Progress | None = None) -> str | None:
        """Bring ``version``'s artifact back into the working tree as a new commit, pushed.

        Refuses, changing nothing, while the working-tree artifact has changes that were never
        uploaded, unless ``force``.

        Returns:
            The new commit, or None when HEAD already holds that version.

        Raises:
            UnsavedChangesError, VersionNotFoundError, InvalidVersionError, StorageError.
        """
        if version is None:
            raise CPVError("revert needs a version", hint=f"Run 'cpv {self.kind} list'.")
        repo = self.repo
        with repo.locked():
            repo.sync()
            commit, info = repo.resolve(self.kind, version)
            restore = self._plan_restore(commit, info, force=force)
            new = restore_and_commit(repo, [restore], f"Revert {self.kind} to {info.tag}",
                                     progress=progress or self.progress)
            logger.info("Reverted %s to %s", self.kind, info.tag)
            return new

    def _plan_restore(self, commit: str, info: VersionInfo, *, force: bool) -> Restore:
        """What bringing ``commit``'s artifact back involves; changes nothing.

        Raises:
            UnsavedChangesError: the working-tree artifact has changes never uploaded and
                ``force`` is False.
        """
        repo, handler = self.repo, self._handler()
        wanted = repo.pointer_at(commit, handler.path)
        if wanted is None:
            raise NothingToDoError(f"{info.tag or commit[:10]} has no {self.kind}",
                                   hint=f"Run 'cpv {self.kind} list' to see the versions.")
        current = repo.pointer_at(repo.head_or_raise(), handler.path)
        workspace = handler.workspace_oid(repo)
        if workspace is not None and (current is None or workspace != current.oid):
            # Not unsaved when an earlier commit recorded it: a teammate's upload, brought in
            # by sync, has replaced the workspace's own upload at HEAD.
            current = self._committed_pointer(workspace)
        unsaved = workspace is not None and (current is None or workspace != current.oid)
        if unsaved and not force:
            raise UnsavedChangesError(
                f"{handler.path} has changes that were never uploaded",
                hint=f"Upload them first ('cpv {self.kind} upload'), or pass --force to "
                "discard them.")
        return Restore(self, handler, info, wanted, current, workspace, unsaved)

    def _committed_pointer(self, oid: str) -> Pointer | None:
        """The pointer of a commit on this branch that recorded object ``oid``, if any."""
        repo, path = self.repo, self._handler().path
        # -S: only the commits that added or removed the hash; one of them recorded it.
        found = repo.git.out("log", "--format=%H", f"-S{oid}", "--", f"{path}.dvc")
        for commit in found.splitlines():
            try:
                pointer = repo.pointer_at(commit, path)
            except PointerError:
                continue
            if pointer is not None and pointer.oid == oid:
                return pointer
        return None


@dataclass
class Restore:
    """One artifact going back to a version in the working tree, undoable until committed."""

    manager: CheckpointManager
    handler: Handler
    info: VersionInfo
    wanted: Pointer
    current: Pointer | None
    workspace: str | None
    unsaved: bool
    applied: bool = False
    kept: Path | None = None

    def apply(self, progress: Progress | None) -> None:
        repo = self.manager.repo
        if self.workspace != self.wanted.oid:
            target = repo.root / self.handler.path
            if self.unsaved:
                # Forced: the work is discarded only once the revert is pushed; until then it
                # waits beside the artifact (where a killed run leaves it for the user to see).
                self.kept = target.with_name(f".{target.name}.cpv-discarded")
                _remove(self.kept)
                os.replace(target, self.kept)
            elif self.workspace is not None and self._poolable(target):
                repo.pool.put(target, self.workspace)  # saved bytes: keep them for switching back
            if not (self._poolable(target) and repo.pool.take(self.wanted.oid, target)):
                self.handler.materialize(repo, self.wanted, target, progress=progress)
            self.handler.remember_workspace(repo, self.wanted)
            self.applied = True

    def _poolable(self, target: Path) -> bool:
        return not self.wanted.is_dir and not target.is_dir()

    def finish(self) -> None:
        """The revert is pushed: drop the discarded work."""
        if self.kept is not None:
            _remove(self.kept)
            self.kept = None

    def undo(self) -> None:
        """Put back what the working tree held: the artifact of HEAD, or the forced work."""
        repo = self.manager.repo
        if self.kept is not None:
            target = repo.root / self.handler.path
            _remove(target)
            os.replace(self.kept, target)
            self.kept = None
            return
        if self.applied and self.current is not None and not self.unsaved:
            target = repo.root / self.handler.path
            if self._poolable(target):
                repo.pool.put(target, self.wanted.oid)
                if repo.pool.take(self.current.oid, target):
                    self.handler.remember_workspace(repo, self.current)
                    return
            if repo.cache.has(self.current.oid):
                self.handler.materialize(repo, self.current, target, progress=None)
                self.handler.remember_workspace(repo, self.current)

    def changes(self, head: str | None) -> dict[str, bytes]:
        return self.manager._pointer_changes(head, self.wanted, self.info.metrics)


def restore_and_commit(repo: Repository, restores: list[Restore], message: str, *,
                       progress: Progress | None) -> str | None:
    """Bring every artifact of ``restores`` back and commit all their pointers in one commit,
    pushed. On any failure the working tree is put back as it was.

    Returns:
        The new commit, or None when HEAD already holds all of them.
    """

    def changes(head: str | None) -> dict[str, bytes]:
        files: dict[str, bytes] = {}
        for restore in restores:
            for path, content in restore.changes(head).items():
                files[path] = ensure_ignored(files[path], restore.handler.path) if (
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


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


def _is_number(value: object) -> TypeGuard[float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
