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
from typing import Any

from cp_manage import __version__
from cp_manage.artifacts import VersionInfo, check_metrics, encode_metrics, metric_delta
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
from cp_manage.manage.catalog import VersionSource
from cp_manage.manage.detached import DetachedSource
from cp_manage.manage.handlers import Handler, upload_objects
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
from cp_manage.versions import Kind, Version, next_version, parse_version, validate_name

logger = logging.getLogger("cp_manage")
logger.addHandler(logging.NullHandler())


@dataclass(frozen=True)
class TagResult:
    """What a tag did. ``created`` is False when HEAD already was version ``tag``."""

    tag: str
    created: bool


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
        enable_verbose(verbose)

    # -- plumbing ------------------------------------------------------------------------------

    @property
    def repo(self) -> Repository:
        """The repository, opened once."""
        if self._repo is None:
            self._repo = Repository.open(self.repo_path, config=self.config,
                                         team=self.team_name, model=self.model_name)
            self.team_name, self.model_name = self._repo.team, self._repo.model
        return self._repo

    def _source(self) -> VersionSource:
        """Where versions are read: the clone at ``repo_path``, else (given the team and the
        model) the git remote itself, through a mirror of its tags.

        Raises:
            NotARepositoryError: no clone, and no team and model to read without one.
        """
        try:
            return self.repo
        except NotARepositoryError as e:
            if self.team_name is None or self.model_name is None:
                e.hint = ("Pass --team T --model M (API: team_name=, model_name=) to read "
                          "from the team's remotes without a clone, or --repo DIR.")
                raise
            return DetachedSource(self.config, self.team_name, self.model_name)

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
               progress: Progress | None = None, verbose: bool = False) -> UploadResult:
        """Store the artifact, then commit its pointer (and metrics) and push.

        Order is what makes it safe: hash into the local cache, push the blobs to storage,
        and only then commit and push git. If storage fails there is no commit. When the
        artifact and the metrics are both unchanged there is no new commit.

        Args:
            source: the artifact in the working tree (default: the repository's own path); a
                relative path is taken from the caller's current directory.
            metrics: a JSON object of finite values describing this artifact.
            message: the commit message; the version tagged from this upload carries it.
            verbose: log what happens at INFO level.

        Returns:
            An UploadResult; ``.commit`` is HEAD afterwards.

        Raises:
            ArtifactNotFoundError, PointerError, StorageError, RemoteError, CPVError.
        """
        enable_verbose(verbose)
        given = caller_path(source) if source else None
        repo, handler = self.repo, self._handler()
        checked_metrics = check_metrics(metrics) if metrics is not None else None
        progress = progress or self.progress
        with repo.locked():
            path = handler.check_source(repo, given or repo.root / handler.path)
            pointer = handler.stage(repo, path, progress=progress)
            missing = repo.missing_in_storage(handler.objects(repo, pointer))
            uploaded = upload_objects(repo, missing, progress=progress)
            repo.cache.flush()
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
        files = {pointer_file: pointer.dumps().encode()}
        artifact_changed = (repo.git.show(head, pointer_file) if head else None) != files[
            pointer_file]
        if self.records_metrics:
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
            repo.git.show(head, ".gitignore") if head else None, path,
            temporary=artifact_changed or METRICS_FILE in files)
        return files

    # -- tag -----------------------------------------------------------------------------------

    def tag(self, version: str | None = None, *, major: bool = False,
            message: str | None = None, verbose: bool = False) -> TagResult:
        """Give HEAD's artifact a version and push the tag with its commit.

        Tagging is idempotent: when HEAD already carries a version (a training script run
        twice), that version is returned and nothing is pushed; a version an interrupted run
        left unpushed is pushed now.

        Args:
            version: an explicit, unused ``vX.Y`` (or HEAD's own version); None for the next
                minor (or, with ``major``, the next major) version, or HEAD's version.
            message: the tag's message; without one, the version keeps the upload's message.
            verbose: log what happens at INFO level.

        Returns:
            A TagResult; ``.created`` is False when HEAD already was that version.

        Raises:
            InvalidVersionError, VersionExistsError, StorageError, RemoteError.
            NothingToDoError: nothing uploaded yet, or HEAD is already another version than
                the explicit one.
        """
        enable_verbose(verbose)
        repo = self.repo
        explicit = parse_version(version, kind=self.kind) if version is not None else None
        with repo.locked():
            # The commit the user uploaded, even when teammates have pushed since.
            head = repo.head_or_raise()
            # Checked before anything is pushed: a corrupt pointer must not reach the remote.
            info = self._version_info_for(head)
            repo.git.fetch(f"+refs/heads/{repo.branch()}:refs/remotes/origin/{repo.branch()}")
            repo.push_head_if_needed()
            found: list[TagResult] = []

            def propose() -> dict[str, str] | None:
                existing = repo.versions(self.kind, fetch=False)
                done = self._version_on_head(head, existing, explicit) or \
                    self._existing_version(info, existing, explicit)
                if done:
                    found.append(done)
                    return None
                numbers = [parse_version(i.version, kind="model") for i in existing
                           if i.version]
                number = explicit or next_version(numbers, major=major)
                name = number.tag(self.kind)
                if number in numbers:
                    raise VersionExistsError(name)
                info.version, info.tag = str(number), name
                # Without a tag message the version keeps what the upload said about itself.
                info.message = message or info.message
                return {name: info.tag_message()}

            try:
                pushed = repo.push_versions(head, propose, retry=explicit is None)
            except CPVError as e:
                if explicit is not None and is_lost_race(e):
                    raise VersionExistsError(explicit.tag(self.kind)) from e
                raise
            if pushed is None:
                return found[0]
            logger.info("Tagged %s as %s", head[:10], info.tag)
            return TagResult(str(info.tag), created=True)

    def _version_on_head(self, head: str, existing: list[VersionInfo],
                         explicit: Version | None) -> TagResult | None:
        """HEAD's version, when it already carries one (None when it does not).

        A version on the remote is returned as it is; one that an interrupted run left
        unpushed is pushed now. A commit never gets a second version: an explicit version
        other than HEAD's is refused (an unpushed leftover is not a version: it is dropped).
        """
        repo = self.repo
        on_head = [i.tag for i in existing if i.commit == head and i.tag]
        if not on_head:
            return None
        wanted = explicit.tag(self.kind) if explicit is not None else None
        remote = repo.remote_tags()
        pushed = [name for name in on_head if name in remote]
        if pushed:
            name = wanted if wanted in pushed else pushed[-1]
            if wanted is not None and wanted != name:
                raise NothingToDoError(
                    f"HEAD is already {name}, so it cannot also be {wanted}",
                    hint=f"Upload a new {self.kind} checkpoint before tagging again, or omit "
                    "the version.")
            logger.info("HEAD is already %s; nothing to tag", name)
            return TagResult(name, created=False)
        name = wanted if wanted in on_head else on_head[-1]
        if wanted is not None and wanted != name:
            repo.git.delete_tags(*on_head)
            return None
        try:
            repo.git.push(f"refs/tags/{name}")
        except CPVError as e:
            if not is_lost_race(e):
                raise
            repo.git.delete_tags(name)  # someone else took that name meanwhile
            return None
        logger.info("Pushed %s, left unpushed by an interrupted run", name)
        return TagResult(name, created=True)

    def _existing_version(self, info: VersionInfo, existing: list[VersionInfo],
                          explicit: Version | None) -> TagResult | None:
        """A version that already holds HEAD's artifact on another commit, when tagging again
        would add nothing (the data manager's rule: a dataset is versioned once)."""
        return None

    def _version_info_for(self, commit: str) -> VersionInfo:
        """Metadata for a new tag on ``commit``, once storage confirms it holds every object
        of the artifact (a dataset's files as well as its listing)."""
        repo, handler = self.repo, self._handler()
        pointer = repo.pointer_at(commit, handler.path)
        if pointer is None:
            raise NothingToDoError(f"HEAD has no uploaded {self.kind}",
                                   hint=f"Run 'cpv {self.kind} upload' first.")
        missing = repo.missing_in_storage(handler.objects(repo, pointer))
        if missing:
            repo.storage.check_location()  # a missing bucket is the better explanation
            what = pointer.oid if pointer.oid in missing else (
                f"{len(missing)} file(s) of {pointer.oid}")
            raise StorageError(f"The {self.kind} of HEAD ({what}) is not in storage",
                               hint="Run 'cpv doctor --repair' (it uploads what this clone "
                               "has cached), or upload it again.")
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

    def list_versions(self, *, verbose: bool = False) -> list[VersionInfo]:
        """Every version, oldest first, with metadata, from git alone (without a clone, from
        the git remote)."""
        enable_verbose(verbose)
        source = self._source()
        versions = source.versions(self.kind)
        for tag, why in source.catalog.skipped.items():
            logger.warning("Skipping %s: %s", tag, why)
        return versions

    def metadata(self, version: str | None = None, *, verbose: bool = False) -> VersionInfo:
        """The metadata of ``version`` from git alone. None means HEAD in a clone; without a
        clone (read from the git remote) it means the latest version."""
        enable_verbose(verbose)
        return self._source().resolve(self.kind, version)[1]

    def diff(self, old: str, new: str, *, verbose: bool = False) -> dict[str, Any]:
        """Metrics of two versions side by side: ``{metric: {old, new, delta}}`` plus sizes.

        A delta is None unless both values are finite numbers (NaN and ±inf have none), and is
        rounded to the precision of the two values.
        """
        enable_verbose(verbose)
        return self._compare(self._source(), old, new)

    def _compare(self, source: VersionSource, old: str, new: str) -> dict[str, Any]:
        a, b = source.resolve(self.kind, old)[1], source.resolve(self.kind, new)[1]
        rows: dict[str, dict[str, Any]] = {}
        for key in sorted(set(a.metrics) | set(b.metrics)):
            left, right = a.metrics.get(key), b.metrics.get(key)
            rows[key] = {"old": left, "new": right, "delta": metric_delta(left, right)}
        return {"old": a.to_dict(), "new": b.to_dict(), "metrics": rows,
                "size_delta_bytes": b.size_bytes - a.size_bytes}

    # -- download and revert -------------------------------------------------------------------

    def download(self, version: str | None = None, *,
                 output_dir: str | os.PathLike[str] | None = None,
                 progress: Progress | None = None, force: bool = False,
                 verbose: bool = False) -> tuple[Path, VersionInfo]:
        """Write ``version`` (HEAD when None) into ``output_dir``; HEAD and the working tree
        are never touched. The md5 of every file is checked before it appears.

        Args:
            output_dir: a folder (created when missing), relative to the caller's current
                directory; default ``$CPV_HOME/downloads/{team}/{model}/{version}``.
            force: replace what the folder holds where it differs from the version (a file is
                never overwritten otherwise; what already matches is kept, not fetched again).

        Returns:
            The path written and the version's metadata.

        Raises:
            CPVError: ``output_dir`` is a file, the download would overwrite the working tree,
                or a different file (a non-empty folder, for a dataset) is in the way.
        """
        enable_verbose(verbose)
        given = caller_path(output_dir) if output_dir is not None else None
        handler = self._handler()
        source = self._source()
        root = None  # the working tree a download must not overwrite, when there is a clone
        if isinstance(source, Repository):
            root = source.root
            source.warm_up_storage()  # connecting to S3 overlaps with reading git
        commit, info = source.resolve(self.kind, version)
        pointer = source.catalog.pointer_at(commit, handler.path)
        if pointer is None:
            raise NothingToDoError(f"{info.tag or commit[:10]} has no {self.kind}")
        out = given if given is not None else (
            self.config.home / "downloads" / source.team / source.model / (
                info.version or commit[:12]))
        if out.exists() and not out.is_dir():
            raise CPVError(f"{out} is a file, not a folder",
                           hint="Pass -o (output_dir=) a folder to download into; it is created "
                           "when missing.")
        # A file lands inside the folder (DIR/model.bin); a dataset *is* the folder (DIR/train/).
        target = out if pointer.is_dir else out / pointer.path
        if root is not None and os.path.abspath(target) == str(root / handler.path):
            raise CPVError(f"Downloading into {target} would overwrite the working tree",
                           hint=f"Use -o with another folder, or 'cpv {self.kind} revert'.")
        if _occupied(target) and not force:
            if handler.holds(source, pointer, target):
                logger.info("%s already holds %s %s", target, self.kind, info.version or "HEAD")
                return target, info
            what = (f"{target} exists and is not empty" if pointer.is_dir
                    else f"{target} exists and is not {info.version or 'HEAD'}")
            raise CPVError(what, hint="Pass --force (API: force=True) to replace " + (
                "the folder's whole content" if pointer.is_dir else "it") +
                ", or download into a new folder with -o.")
        try:
            handler.materialize(source, pointer, target, progress=progress or self.progress)
        except OSError as e:
            if isinstance(e, CPVError):
                raise
            # The destination, not the remote: e.g. -o names a file, or a folder not writable.
            raise CPVError(f"Cannot write the {self.kind} to {out}: {e.strerror or e}",
                           hint="Pass -o a folder you can write to (it is created when "
                           "missing).") from e
        if root is not None:
            self.repo.warn_if_storage_folder_is_gone()
        logger.info("Downloaded %s %s to %s", self.kind, info.version or "HEAD", target)
        return target, info

    def revert(self, version: str, *, force: bool = False,
               progress: Progress | None = None, verbose: bool = False) -> str | None:
        """Bring ``version``'s artifact back into the working tree as a new commit, pushed.

        Refuses, changing nothing, while the working-tree artifact has changes that were never
        uploaded, unless ``force``.

        Returns:
            The new commit, or None when HEAD already holds that version.

        Raises:
            UnsavedChangesError, VersionNotFoundError, InvalidVersionError, StorageError.
        """
        enable_verbose(verbose)
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


def _occupied(target: Path) -> bool:
    """Whether writing ``target`` would replace something: a file, or a non-empty folder."""
    if not os.path.lexists(target):
        return False
    return not target.is_dir() or target.is_symlink() or any(target.iterdir())


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


def caller_path(path: str | os.PathLike[str]) -> Path:
    """A path the caller gave, made absolute against the caller's current directory.

    Every public method resolves its path arguments with this once, on entry: a relative path
    means what it means in the caller's shell, never something inside the repository.
    """
    return Path(path).expanduser().absolute()


def enable_verbose(verbose: bool) -> None:
    """``verbose=True``: let the ``cp_manage`` logger pass INFO records on to the handlers the
    application configured (the library itself never prints). A lower level set by the
    application (DEBUG) is kept."""
    if verbose and not logger.isEnabledFor(logging.INFO):
        logger.setLevel(logging.INFO)
