"""Giving HEAD's artifact a version: the tag half of the lifecycle.

``VersionTagging`` is mixed into ``CheckpointManager``; it needs only the manager's ``repo``,
``spec`` and ``kind``. A tag is pushed with its commit in one atomic push, after storage has
confirmed the artifact's objects; tagging is idempotent (HEAD's own version is the answer).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from cp_manage._version import __version__
from cp_manage.artifacts import VersionInfo
from cp_manage.errors import CPVError, NothingToDoError, StorageError, VersionExistsError
from cp_manage.manage.calls import enable_verbose
from cp_manage.manage.repository import Repository, is_lost_race, utc_now
from cp_manage.manage.workspace import handler_for
from cp_manage.spec import ArtifactSpec
from cp_manage.versions import Kind, Version, next_version

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TagResult:
    """What a tag did. ``created`` is False when HEAD already was version ``tag``."""

    tag: str
    created: bool


class VersionTagging:
    """``tag`` and ``version_info_for`` for a manager with ``repo``, ``spec`` and ``kind``."""

    kind: Kind

    @property
    def repo(self) -> Repository:
        raise NotImplementedError

    @property
    def spec(self) -> ArtifactSpec:
        raise NotImplementedError

    def tag(self, version: str | None = None, *, major: bool = False,
            message: str | None = None, commit: str | None = None,
            verbose: bool = False) -> TagResult:
        """Give HEAD's artifact (or that of an earlier upload) a version and push the tag with
        its commit.

        Tagging is idempotent: when HEAD already carries a version (a training script run
        twice), that version is returned and nothing is pushed; a version an interrupted run
        left unpushed is pushed now.

        Args:
            version: an explicit, unused ``vX.Y`` (or HEAD's own version); None for the next
                minor (or, with ``major``, the next major) version, or HEAD's version.
            message: the tag's message; without one, the version keeps the upload's message.
            commit: tag this earlier upload instead of HEAD (a commit hash or any git
                revision, already on the git remote); storage must still hold its objects.
            verbose: log what happens at INFO level.

        Returns:
            A TagResult; ``.created`` is False when HEAD already was that version.

        Raises:
            InvalidVersionError, VersionExistsError, StorageError, RemoteError.
            NothingToDoError: nothing uploaded yet, or HEAD is already another version than
                the explicit one.
        """
        enable_verbose(verbose)
        repo, spec = self.repo, self.spec
        explicit = spec.parse(version) if version is not None else None
        with repo.locked():
            # The commit the user uploaded, even when teammates have pushed since.
            head = repo.head_or_raise() if commit is None else self._earlier_upload(commit)
            # Checked before anything is pushed: a corrupt pointer must not reach the remote.
            info = self.version_info_for(head)
            repo.git.fetch(f"+refs/heads/{repo.branch()}:refs/remotes/origin/{repo.branch()}")
            if commit is None:
                repo.push_head_if_needed()
            elif not repo.git.is_ancestor(head, f"refs/remotes/origin/{repo.branch()}"):
                raise NothingToDoError(
                    f"Commit {head[:10]} is not on origin/{repo.branch()}",
                    hint="Only an upload that reached the git remote can be tagged with "
                    "--commit; push it first (or tag HEAD).")
            found: list[TagResult] = []

            def propose() -> dict[str, str] | None:
                existing = repo.versions(spec, fetch=False)
                done = self._version_on_head(head, existing, explicit) or \
                    self._existing_version(info, existing, explicit)
                if done:
                    found.append(done)
                    return None
                numbers = [spec.parse(i.version) for i in existing if i.version]
                number = explicit or next_version(numbers, major=major)
                name = spec.tag(number)
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
                    raise VersionExistsError(spec.tag(explicit)) from e
                raise
            if pushed is None:
                return found[0]
            logger.info("Tagged %s as %s", head[:10], info.tag)
            return TagResult(str(info.tag), created=True)

    def _earlier_upload(self, rev: str) -> str:
        """The commit ``rev`` names (a hash, short or full, or a git revision such as
        ``HEAD~2``).

        Raises:
            CPVError: ``rev`` is no commit of this repository.
        """
        if not isinstance(rev, str) or not rev or rev.startswith("-") or any(
                c.isspace() or not c.isprintable() for c in rev):
            raise CPVError(f"{str(rev)[:80]!r} is not a commit",
                           hint=f"Give a commit hash from 'cpv {self.kind} list --all'.")
        found = self.repo.git.rev_parse(rev)
        if found is None:
            raise CPVError(f"No commit {rev!r} in {self.repo.root}",
                           hint=f"Give a commit hash from 'cpv {self.kind} list --all' (run "
                           "'git pull' first if a teammate made it).")
        return found

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
        wanted = self.spec.tag(explicit) if explicit is not None else None
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

    def version_info_for(self, commit: str, *, verbose: bool = False) -> VersionInfo:
        """Metadata for a new tag on ``commit``, once storage confirms it holds every object
        of the artifact (a folder's files as well as its listing).

        Raises:
            NothingToDoError: the commit holds no uploaded artifact.
            StorageError: its objects are not in storage.
        """
        enable_verbose(verbose)
        repo, spec = self.repo, self.spec
        handler = handler_for(spec)
        pointer = repo.pointer_at(commit, spec.path)
        label = "HEAD" if commit == repo.git.head() else f"commit {commit[:10]}"
        if pointer is None:
            raise NothingToDoError(f"{label} has no uploaded {self.kind}",
                                   hint=f"Run 'cpv {self.kind} upload' first." if
                                   label == "HEAD" else f"Pick an upload from 'cpv {self.kind} "
                                   "list --all'.")
        missing = repo.missing_in_storage(handler.objects(repo, pointer))
        if missing:
            repo.storage.check_location()  # a missing bucket is the better explanation
            what = pointer.oid if pointer.oid in missing else (
                f"{len(missing)} file(s) of {pointer.oid}")
            raise StorageError(f"The {self.kind} of {label} ({what}) is not in storage",
                               hint="Run 'cpv doctor --repair' (it uploads what this clone "
                               "has cached; a clone that still has it cached can), or upload "
                               "it again.")
        base = repo.info_from_commit(spec, commit, tag=None)
        assert base is not None
        base.created_at = utc_now()
        base.author = repo.author()
        base.cpv_version = __version__
        extra = handler.describe(repo, pointer)
        for key, value in extra.items():
            setattr(base, key, value)
        return base
