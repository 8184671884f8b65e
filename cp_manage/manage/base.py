"""The checkpoint lifecycle shared by models and data: upload, tag, list, download, revert.

``CheckpointManager`` holds the one implementation, driven by the artifact's ``ArtifactSpec``
(file or folder, where, which tags); ``ModelsCheckpointsManage`` and ``DataCheckpointsManage``
only name their kind and add the seed's method names.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cp_manage.artifacts import VersionInfo, check_metrics
from cp_manage.config import CPVConfig
from cp_manage.errors import (
    CPVError,
    NotARepositoryError,
    NothingToDoError,
    StorageError,
)
from cp_manage.faults import crash_point
from cp_manage.fsutil import Progress
from cp_manage.manage.calls import caller_path, enable_verbose
from cp_manage.manage.catalog import VersionSource
from cp_manage.manage.compare import (
    delta_row,
    entries_from_metadata,
    file_changes,
    file_selector,
    metric_rows,
)
from cp_manage.manage.dataset import (
    cached_sizes,
    left_by_an_interrupted_upload,
    read_listing,
)
from cp_manage.manage.detached import DetachedSource
from cp_manage.manage.gc_record import removal_error
from cp_manage.manage.handlers import same_path, upload_objects
from cp_manage.manage.history import Report, build_report
from cp_manage.manage.references import resolve_reference
from cp_manage.manage.registry import StageRegistry
from cp_manage.manage.repository import InitResult, Repository
from cp_manage.manage.sending import EarlyUploads
from cp_manage.manage.tagging import TagResult, VersionTagging
from cp_manage.manage.workspace import (
    Restore,
    WorkspaceCopies,
    check_workspace,
    handler_for,
    pointer_changes,
    restore_and_commit,
)
from cp_manage.pictures.page import write_report
from cp_manage.spec import ArtifactSpec
from cp_manage.swap import recover
from cp_manage.versions import Kind, validate_name

if TYPE_CHECKING:
    from cp_manage.manage.gc import GCResult, UsageReport

logger = logging.getLogger("cp_manage")

__all__ = ["CheckpointManager", "TagResult", "UploadResult", "caller_path", "enable_verbose"]


@dataclass(frozen=True)
class UploadResult:
    """What an upload did. ``changed`` is False when artifact and metrics were already HEAD's.
    ``uploaded_bytes`` were sent; ``resumed_bytes`` more were already in storage, left by an
    interrupted upload of the same artifact."""

    commit: str
    changed: bool
    md5: str
    size_bytes: int
    uploaded_bytes: int
    resumed_bytes: int = 0


class CheckpointManager(VersionTagging, StageRegistry):
    """One implementation of the lifecycle, for the artifact a subclass names (tagging is in
    ``cp_manage.manage.tagging``; stages, retirement, best and listing in
    ``cp_manage.manage.registry``)."""

    kind: Kind = "model"

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

    def version_source(self, *, verbose: bool = False) -> VersionSource:
        """Where versions are read: the clone at ``repo_path``, else (given the team and the
        model) the git remote itself, through a mirror of its tags.

        Raises:
            NotARepositoryError: no clone, and no team and model to read without one.
        """
        enable_verbose(verbose)
        try:
            return self.repo
        except NotARepositoryError as e:
            if self.team_name is None or self.model_name is None:
                e.hint = ("Pass --team T --model M (API: team_name=, model_name=) to read "
                          "from the team's remotes without a clone, or --repo DIR.")
                raise
            return DetachedSource(self.config, self.team_name, self.model_name)

    def attach(self, repo: Repository, *, verbose: bool = False) -> None:
        """Use ``repo``, already opened (the combined manager's two managers share one)."""
        enable_verbose(verbose)
        self._repo = repo
        self.team_name, self.model_name = repo.team, repo.model

    @property
    def spec(self) -> ArtifactSpec:
        """The artifact this manager versions (the model's is chosen at init)."""
        return self.repo.spec(self.kind)

    def _init(self, *, git_url: str | None = None, storage_url: str | None = None,
              force: bool = False, artifact: str | None = None) -> InitResult:
        if self.team_name is None or self.model_name is None:
            raise CPVError("init needs a team and a model name",
                           hint="Pass team_name= and model_name= (CLI: --team and --model).")
        repo, result = Repository.init(self.repo_path, team=self.team_name,
                                       model=self.model_name, config=self.config,
                                       git_url=git_url, storage_url=storage_url, force=force,
                                       artifact=artifact)
        self._repo = repo
        if result.created:
            logger.info("Initialised %s/%s at %s", repo.team, repo.model, repo.root)
        else:
            logger.info("%s is already initialised; nothing changed", repo.root)
        return result

    # -- upload --------------------------------------------------------------------------------

    def upload(self, source: str | os.PathLike[str] | None = None, *,
               metrics: dict[str, Any] | None = None, message: str | None = None,
               progress: Progress | None = None, force: bool = False,
               verbose: bool = False) -> UploadResult:
        """Store the artifact, then commit its pointer (and metrics) and push.

        Order is what makes it safe: hash into the local cache, push the blobs to storage,
        and only then commit and push git. If storage fails there is no commit. When the
        artifact and the metrics are both unchanged there is no new commit.

        The source is only read (the cache gets a copy, hashed as it is copied). A source
        other than the workspace artifact then replaces the workspace artifact with private,
        writable copies of what was stored, in the same commit.

        Args:
            source: a file or folder anywhere (relative to the current directory); default the
                workspace artifact (``model.bin``, ``checkpoint/``, ``data/``).
            metrics: a JSON object of finite values describing this artifact.
            message: the commit message; the version tagged from this upload carries it.
            force: replace a workspace artifact whose changes were never uploaded.
            verbose: log what happens at INFO level.

        Returns:
            An UploadResult; ``.commit`` is HEAD afterwards.

        Raises:
            ArtifactNotFoundError (also for a source of the wrong kind), InvalidDatasetError,
            UnsavedChangesError, PointerError, StorageError, RemoteError, CPVError.
        """
        enable_verbose(verbose)
        given = caller_path(source) if source else None
        repo, spec = self.repo, self.spec
        handler = handler_for(spec)
        checked_metrics = check_metrics(metrics) if metrics is not None else None
        progress = progress or self.progress
        workspace = repo.root / spec.path
        with repo.locked():
            path = handler.check_source(repo, given or workspace)
            state = copies = None
            if not same_path(path, workspace):
                state = check_workspace(repo, spec, force=force, refusal_hint=(
                    f"Upload them first ('cpv {self.kind} upload' without a path), or pass "
                    "--force to replace them (API: force=True)."))
                # The workspace gets the new files copied as they are hashed, not afterwards.
                copies = WorkspaceCopies(workspace)
            early = EarlyUploads(repo)  # a folder's large files go while the rest is hashed
            try:
                pointer = handler.stage(repo, path, progress=progress, copies=copies,
                                        cached=early.offer)
                missing = repo.missing_in_storage(
                    oid for oid in handler.objects(repo, pointer) if oid not in early.offered)
                if missing or early.offered:
                    # What was hashed is recorded before the (long) upload, so a run killed
                    # meanwhile is resumed from storage's parts without hashing it all again.
                    repo.cache.flush()
                    repo.state.save()
                # Whole files an interrupted upload of this version left in storage (never
                # those sent early: their own check with storage is under way).
                already = left_by_an_interrupted_upload(repo, spec, pointer,
                                                        missing | set(early.offered))
                sent = upload_objects(repo, missing, progress=progress, already=already,
                                      early=early)
                if sent.resumed or already:
                    logger.info("%d of %d bytes were already in storage from an interrupted "
                                "upload", sent.resumed + already, sent.total + already)
                repo.cache.flush()
                crash_point("after_blobs")

                what = f"{self.kind} {spec.name} ({pointer.md5[:8]})"
                text = message or f"Upload {what}"
                if state is None:
                    commit = repo.commit_and_push(lambda head: pointer_changes(
                        repo, spec, head, pointer, checked_metrics), text)
                else:
                    restore = Restore(repo, spec, pointer, checked_metrics, state, copies)
                    commit = restore_and_commit(repo, [restore], text, progress=None)
            finally:
                early.close()
                if copies is not None:
                    copies.discard()
            changed = commit is not None
            if commit is None:
                logger.info("The %s and its metrics are unchanged; no new commit", self.kind)
                commit = repo.head_or_raise()
            else:
                logger.info("Uploaded %s as commit %s", what, commit[:10])
        return UploadResult(commit, changed, pointer.md5, pointer.size, sent.sent,
                            sent.resumed + already)

    # -- reading -------------------------------------------------------------------------------

    def metadata(self, version: str | None = None, *, verbose: bool = False) -> VersionInfo:
        """The metadata of ``version`` (a version, a stage or a commit) from git alone. None
        means HEAD in a clone; without a clone (read from the git remote) it means the latest
        version that is not retired."""
        enable_verbose(verbose)
        source = self.version_source()
        return resolve_reference(source, source.spec(self.kind), version)[1]

    def diff(self, old: str, new: str, *, verbose: bool = False) -> dict[str, Any]:
        """Two versions side by side: metrics (``{metric: {old, new, delta}}``), sizes and, for
        a folder, the files added, removed and modified (``files``: their paths;
        ``file_changes``: one row per file with ``old_size`` and ``new_size`` in bytes). Both
        are None when the listings cannot be reached. A metric's delta is None unless both
        values are finite numbers, and is rounded to the precision of the two values."""
        enable_verbose(verbose)
        return self._compare(self.version_source(), old, new)

    def report(self, *, verbose: bool = False) -> Report:
        """What the HTML report of this artifact shows, from git alone (no download): every
        version, a series per metric (for data: file count, sample count, size), the stages,
        for a folder the files changed between consecutive versions, and the lineage. Works
        without a clone, as ``list_versions`` does."""
        enable_verbose(verbose)
        return build_report(self.version_source(), (self.kind,))

    def write_report(self, output: str | os.PathLike[str], *, verbose: bool = False) -> Path:
        """Write ``report()`` as one self-contained HTML file (no script, no network needed).

        Args:
            output: the file to write, relative to the caller's current directory; replaced
                when it exists.

        Returns:
            The absolute path written.

        Raises:
            RemoteError: without a clone, the git remote cannot be reached.
            LocalFileError: ``output`` cannot be written.
        """
        enable_verbose(verbose)
        return write_report(self.report(), caller_path(output))

    def _compare(self, source: VersionSource, old: str, new: str) -> dict[str, Any]:
        spec = source.spec(self.kind)
        a = resolve_reference(source, spec, old)[1]
        b = resolve_reference(source, spec, new)[1]
        result: dict[str, Any] = {"old": a.to_dict(), "new": b.to_dict(),
                                  "metrics": metric_rows(a, b),
                                  "size_delta_bytes": b.size_bytes - a.size_bytes}
        if spec.tree:
            result["stats"] = {"file_count": delta_row(a.file_count, b.file_count)}
            try:
                result["files"], result["file_changes"] = file_changes(
                    _tree_entries(source, spec, a), _tree_entries(source, spec, b))
            except CPVError as e:
                logger.warning("Cannot compare the files of %s and %s: %s", old, new, e)
                result["files"] = result["file_changes"] = None
        return result

    # -- download and revert -------------------------------------------------------------------

    def download(self, version: str | None = None, *,
                 output_dir: str | os.PathLike[str] | None = None,
                 progress: Progress | None = None, include: Sequence[str] | None = None,
                 exclude: Sequence[str] | None = None, force: bool = False,
                 verbose: bool = False) -> tuple[Path, VersionInfo]:
        """Write ``version`` (HEAD when None) into ``output_dir``; HEAD and the working tree
        are never touched. The md5 of every file is checked before it appears.

        A file lands inside the folder (``DIR/model.bin``); a folder artifact *is* the folder
        (``DIR/config.json``, ``DIR/train/...``).

        Args:
            output_dir: a folder (created when missing), relative to the caller's current
                directory; default ``$CPV_HOME/downloads/{team}/{model}/{version}``.
            include: for a folder, fetch only the files matching one of these patterns.
            exclude: for a folder, skip the files matching one of these patterns (see
                ``cp_manage.manage.compare`` for how patterns match).
            force: replace what the folder holds where it differs from the version (a file is
                never overwritten otherwise; what already matches is kept, not fetched again).

        Returns:
            The path written and the version's metadata.

        Raises:
            VersionNotFoundError, ArtifactNotFoundError (no file matches), IntegrityError,
            StorageError.
            CPVError: ``output_dir`` is a file, the download would overwrite the working tree,
                or a different file (a non-empty folder, for a folder artifact) is in the way.
        """
        enable_verbose(verbose)
        given = caller_path(output_dir) if output_dir is not None else None
        source = self.version_source()
        spec = source.spec(self.kind)
        root = None  # the working tree a download must not overwrite, when there is a clone
        if isinstance(source, Repository):
            root = source.root
            source.warm_up_storage()  # connecting to S3 overlaps with reading git
        commit, info = resolve_reference(source, spec, version)
        pointer = source.catalog.pointer_at(commit, spec.path)
        if pointer is None:
            raise NothingToDoError(f"{info.tag or commit[:10]} has no {self.kind}")
        select = file_selector(include, exclude)
        if select is not None and not spec.tree:
            raise CPVError(f"--include and --exclude pick files of a folder, and this "
                           f"repository's {self.kind} is the file {spec.name}",
                           hint="Download it without them.")
        out = given if given is not None else (
            self.config.home / "downloads" / source.team / source.model / (
                info.version or commit[:12]))
        if out.exists() and not out.is_dir():
            raise CPVError(f"{out} is a file, not a folder",
                           hint="Pass -o (output_dir=) a folder to download into; it is created "
                           "when missing.")
        target = out if spec.tree else out / pointer.path
        if root is not None and os.path.abspath(target) == str(root / spec.path):
            raise CPVError(f"Downloading into {target} would overwrite the working tree",
                           hint=f"Use -o with another folder, or 'cpv {self.kind} revert'.")
        handler = handler_for(spec)
        recover(target)  # a download into this folder killed half-way through its swap
        if _occupied(target) and not force:
            if select is None and handler.holds(source, pointer, target):
                logger.info("%s already holds %s %s", target, self.kind, info.version or "HEAD")
                return target, info
            what = (f"{target} exists and is not empty" if spec.tree
                    else f"{target} exists and is not {info.version or 'HEAD'}")
            raise CPVError(what, hint="Pass --force (API: force=True) to replace " + (
                "the folder's whole content" if spec.tree else "it") +
                ", or download into a new folder with -o.")
        try:
            handler.materialize(source, pointer, target, progress=progress or self.progress,
                                select=select)
        except StorageError as e:
            removed = removal_error(source, source.catalog.git, kind=self.kind, oid=pointer.oid,
                                    label=info.tag or f"commit {commit[:10]}")
            if removed is None:
                raise
            raise removed from e
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

        A folder becomes exactly that version: files the version lacks are removed. Refuses,
        changing nothing, while the working-tree artifact has changes that were never
        uploaded, unless ``force`` (the changes are then set aside until the commit is pushed,
        and dropped).

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
            commit, info = resolve_reference(repo, self.spec, version)
            restore = self.plan_restore(commit, info, force=force)
            try:
                new = restore_and_commit(repo, [restore],
                                         f"Revert {self.kind} to {info.tag or commit[:10]}",
                                         progress=progress or self.progress)
            except StorageError as e:
                removed = removal_error(repo, repo.git, kind=self.kind, oid=restore.wanted.oid,
                                        label=info.tag or f"commit {commit[:10]}")
                if removed is None:
                    raise
                raise removed from e
            logger.info("Reverted %s to %s", self.kind, info.tag or commit[:10])
            return new

    def plan_restore(self, commit: str, info: VersionInfo, *, force: bool,
                     verbose: bool = False) -> Restore:
        """What bringing ``commit``'s artifact back into the working tree involves; changes
        nothing. ``restore_and_commit`` carries it out.

        Raises:
            NothingToDoError: the commit has no such artifact.
            UnsavedChangesError: the working-tree artifact has changes never uploaded and
                ``force`` is False.
        """
        enable_verbose(verbose)
        repo, spec = self.repo, self.spec
        wanted = repo.pointer_at(commit, spec.path)
        if wanted is None:
            raise NothingToDoError(f"{info.tag or commit[:10]} has no {self.kind}",
                                   hint=f"Run 'cpv {self.kind} list' to see the versions.")
        state = check_workspace(repo, spec, force=force, refusal_hint=(
            f"Upload them first ('cpv {self.kind} upload'), or pass --force to discard them."))
        return Restore(repo, spec, wanted, info.metrics, state)


    # -- cleanup -------------------------------------------------------------------------------

    def gc(self, *, keep_last: int = 3, grace: str | float | timedelta = "24h",
           dry_run: bool = False, include_unreferenced: bool = False, cache_only: bool = False,
           verbose: bool = False) -> GCResult:
        """Remove from storage and the local cache the objects only uploads of this artifact
        that nobody needs refer to (see ``cp_manage.manage.gc_plan`` for what is kept), and
        record the run as a ``gc/NNNNNN`` tag; the other artifact's uploads are all kept.

        Args:
            keep_last: keep the last N uploads on the branch (of each artifact).
            grace: keep what storage wrote more recently (``24h``, ``7d``, seconds, timedelta).
            dry_run: only say what would go.
            include_unreferenced: also remove objects no commit refers to (older than grace).
            cache_only: only trim the local cache to what HEAD, the stages and the last N
                need (never an object storage lacks); storage and git are untouched.

        Raises:
            CPVError: an invalid option; RemoteError, StorageError (nothing removed, or how
                far it got).
        """
        enable_verbose(verbose)
        from cp_manage.manage import gc

        return gc.gc(self.repo, (self.kind,), keep_last=keep_last, grace=grace,
                     dry_run=dry_run, include_unreferenced=include_unreferenced,
                     cache_only=cache_only)

    def du(self, *, keep_last: int = 3, grace: str | float | timedelta = "24h",
           include_unreferenced: bool = False, verbose: bool = False) -> UsageReport:
        """Storage use per upload (unique and shared bytes, total) and what ``gc`` with the
        same options would free; changes nothing."""
        enable_verbose(verbose)
        from cp_manage.manage import gc

        return gc.du(self.repo, (self.kind,), keep_last=keep_last, grace=grace,
                     include_unreferenced=include_unreferenced)


def _occupied(target: Path) -> bool:
    """Whether writing ``target`` would replace something: a file, or a non-empty folder."""
    if not os.path.lexists(target):
        return False
    return not target.is_dir() or target.is_symlink() or any(target.iterdir())


def _tree_entries(source: VersionSource, spec: ArtifactSpec, info: VersionInfo
                  ) -> dict[str, tuple[str, int | None]]:
    """A folder version's files with md5 and size: from its tag when it lists them (git
    alone), else from its listing, with the sizes of the files in the local cache."""
    entries = entries_from_metadata(info)
    if entries is not None:
        return entries
    pointer = source.catalog.pointer_at(info.commit, spec.path) if info.commit else None
    if pointer is None or not pointer.is_dir:
        raise NothingToDoError(f"{info.tag or 'HEAD'} has no {spec.name} folder")
    md5s = read_listing(source, pointer)
    sizes = cached_sizes(source, md5s)
    return {relpath: (md5, sizes[relpath]) for relpath, md5 in md5s.items()}
