"""CombinedCheckpointsManage: a model and the data it was trained on, released as one.

A combined release ``vX.Y`` puts the tags ``vX.Y`` and ``data/vX.Y`` on the same commit and
pushes them in one atomic transaction (``git push --atomic``): afterwards both exist, locally and
on the remote, or neither does.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cp_manage.artifacts import VersionInfo
from cp_manage.config import CPVConfig
from cp_manage.errors import (
    CPVError,
    GitError,
    NothingToDoError,
    RemoteError,
    VersionExistsError,
    VersionNotFoundError,
)
from cp_manage.fsutil import Progress
from cp_manage.manage.base import caller_path, enable_verbose
from cp_manage.manage.catalog import VersionSource
from cp_manage.manage.data import DataCheckpointsManage
from cp_manage.manage.history import Report, build_report
from cp_manage.manage.models import ModelsCheckpointsManage
from cp_manage.manage.references import resolve_reference
from cp_manage.manage.repository import Repository, is_lost_race
from cp_manage.manage.workspace import restore_and_commit
from cp_manage.pictures.page import write_report
from cp_manage.spec import DATA
from cp_manage.versions import Version, next_version

if TYPE_CHECKING:
    from cp_manage.manage.gc import GCResult, UsageReport

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReleaseResult:
    """What a combined tag did. ``created`` is False when HEAD already was that release."""

    model_tag: str
    data_tag: str
    created: bool


class CombinedCheckpointsManage:
    """Release, restore and describe the model and the data of one repository together.

    Args:
        team_name: the team, e.g. ``AI-Convo``.
        model_name: the model, e.g. ``faster-whisper``.
        repo_path: the repository folder (default: ``./{model_name}``).
        verbose: log what happens at INFO level (the library never prints).
    """

    def __init__(self, team_name: str | None = None, model_name: str | None = None,
                 repo_path: str | os.PathLike[str] | None = None, verbose: bool = False, *,
                 config: CPVConfig | None = None, progress: Progress | None = None) -> None:
        self.models = ModelsCheckpointsManage(team_name, model_name, repo_path, verbose,
                                              config=config, progress=progress)
        self.data = DataCheckpointsManage(team_name, model_name, self.models.repo_path,
                                          verbose, config=self.models.config, progress=progress)
        self.progress = progress

    @property
    def repo(self) -> Repository:
        """The repository both managers share, opened once."""
        repo = self.models.repo
        self.data.attach(repo)
        return repo

    # -- tag -----------------------------------------------------------------------------------

    def tag_model_and_data(self, version_tag: str | None = None,
                           model_message: str | None = None, data_message: str | None = None,
                           verbose: bool = False, *, major: bool = False) -> tuple[str, str]:
        """Tag HEAD's model ``vX.Y`` and its data ``data/vX.Y`` in one atomic push.

        The seed's name for ``tag`` (see there): when HEAD already is a release, that release
        is returned and nothing is pushed.

        Returns:
            ``(model_tag, data_tag)``, e.g. ``("v1.0", "data/v1.0")``.

        Raises:
            VersionExistsError, NothingToDoError, RemoteError: as ``tag``.
        """
        result = self.tag(version_tag, major=major, model_message=model_message,
                          data_message=data_message, verbose=verbose)
        return result.model_tag, result.data_tag

    def tag(self, version: str | None = None, *, major: bool = False,
            model_message: str | None = None, data_message: str | None = None,
            verbose: bool = False) -> ReleaseResult:
        """Tag HEAD's model ``vX.Y`` and its data ``data/vX.Y`` in one atomic push.

        The automatic version is the next one (minor, or with ``major`` the next major) above
        the highest of both sequences, so it is free in both. HEAD must hold an uploaded model
        and an uploaded dataset. When HEAD already is a release (a script run twice), that
        release is returned and nothing is pushed. Without messages, each version keeps the
        message of its upload.

        Returns:
            A ReleaseResult; ``.created`` is False when HEAD already was that release.

        Raises:
            VersionExistsError: ``version`` is taken in either sequence.
            NothingToDoError: HEAD lacks the model or the data, or its model is already a
                version (other than ``version``) without the data of the same number.
            RemoteError: the remote refused or could not be reached; neither tag exists.
        """
        enable_verbose(verbose)
        repo = self.repo
        explicit = DATA.parse(version) if version is not None else None
        with repo.locked():
            head = repo.head_or_raise()
            branch = repo.branch()
            repo.git.fetch(f"+refs/heads/{branch}:refs/remotes/origin/{branch}")
            repo.push_head_if_needed()
            model_info = self.models.version_info_for(head)
            data_info = self.data.version_info_for(head)
            model_spec = repo.model_spec
            self._drop_unpushed_tags(head)
            chosen: list[tuple[str, str]] = []

            def propose() -> dict[str, str] | None:
                models = repo.versions(model_spec, fetch=False)
                data = repo.versions(DATA, fetch=False)
                on_head = [i.version for i in models if i.commit == head and i.version]
                if on_head:
                    released = self._release_on_head(head, on_head, data, explicit)
                    chosen.append((model_spec.tag(released), DATA.tag(released)))
                    return None
                numbers = {model_spec.parse(i.version) for i in [*models, *data] if i.version}
                number = explicit or next_version(numbers, major=major)
                if number in numbers:
                    taken = [i.tag for i in [*models, *data] if i.version == str(number)]
                    raise VersionExistsError(
                        " and ".join(str(t) for t in taken),
                        hint=f"A combined release needs {number} free in both sequences; "
                        "omit the version to get the next free one.")
                chosen.append((model_spec.tag(number), DATA.tag(number)))
                return self._messages(number, model_info, data_info, model_message,
                                      data_message)

            try:
                pushed = repo.push_versions(head, propose, retry=explicit is None)
            except GitError as e:  # the remote's refusals included
                if not chosen:
                    raise
                names = chosen[-1]
                if explicit is not None and is_lost_race(e):
                    raise VersionExistsError(
                        f"{names[0]} or {names[1]}",
                        hint="Someone released it meanwhile; omit the version to get the "
                        "next free one.") from e
                raise _release_failed(names, e) from e
            if pushed is None:
                logger.info("HEAD is already %s and %s; nothing to tag", *chosen[-1])
                return ReleaseResult(*chosen[-1], created=False)
            logger.info("Released %s and %s on %s", *chosen[-1], head[:10])
            return ReleaseResult(*chosen[-1], created=True)

    def _release_on_head(self, head: str, on_head: list[str], data: list[VersionInfo],
                         explicit: Version | None) -> Version:
        """HEAD's release when its model is already ``vX.Y`` and its data ``data/vX.Y``
        (asked for again, automatically or by that number); else an error: a commit gets one
        model version."""
        released = [v for v in on_head
                    if any(i.commit == head and i.version == v for i in data)]
        if released and (explicit is None or str(explicit) in released):
            return explicit or self.repo.model_spec.parse(released[-1])
        name = released[-1] if released else on_head[-1]
        if released:
            raise NothingToDoError(
                f"HEAD is already {name} and data/{name}, so it cannot also be {explicit}",
                hint="Upload a new model checkpoint before another release, or omit the "
                "version.")
        raise NothingToDoError(
            f"HEAD's model is already {name}",
            hint="Upload a new model checkpoint before a combined release.")

    def _messages(self, number: Version, model_info: VersionInfo, data_info: VersionInfo,
                  model_message: str | None, data_message: str | None) -> dict[str, str]:
        model_tag, data_tag = self.repo.model_spec.tag(number), DATA.tag(number)
        model_info.version = data_info.version = str(number)
        model_info.tag, data_info.tag = model_tag, data_tag
        model_info.data_version = data_tag
        # Without a tag message each version keeps what its upload said about itself.
        model_info.message = model_message or model_info.message
        data_info.message = data_message or model_message or data_info.message
        return {model_tag: model_info.tag_message(), data_tag: data_info.tag_message()}

    def _drop_unpushed_tags(self, head: str) -> None:
        """Tags on HEAD that never reached the remote are leftovers of a killed run: not
        versions (a version exists on the remote), so they must not block a release."""
        repo = self.repo
        local = [name for name in repo.git.tags_at(head)
                 if repo.model_spec.version_of(name) or DATA.version_of(name)]
        if not local:
            return
        remote = repo.remote_tags()
        leftovers = [name for name in local if name not in remote]
        if leftovers:
            logger.info("Dropping tags a killed run left unpushed: %s", ", ".join(leftovers))
            repo.git.delete_tags(*leftovers)

    # -- revert --------------------------------------------------------------------------------

    def revert_model_and_data(self, tag: str, force: bool = False, verbose: bool = False, *,
                              progress: Progress | None = None) -> str | None:
        """Bring back the model of ``tag`` and its data in one new commit, pushed.

        The data is ``data/vX.Y`` when that version exists, else the dataset the model was
        trained on (the one its commit holds). Refuses, changing nothing, while either artifact
        has changes that were never uploaded, unless ``force``.

        Returns:
            The new commit, or None when HEAD already holds both.

        Raises:
            VersionNotFoundError, UnsavedChangesError, NothingToDoError, StorageError,
            RemoteError.
        """
        enable_verbose(verbose)
        if tag is None:
            raise CPVError("revert needs a version", hint="Run 'cpv model list'.")
        repo = self.repo
        with repo.locked():
            repo.sync()
            model_commit, model_info = resolve_reference(repo, repo.model_spec, tag)
            data_commit, data_info = self._data_of(repo, model_commit, model_info)
            restores = [self.models.plan_restore(model_commit, model_info, force=force),
                        self.data.plan_restore(data_commit, data_info, force=force)]
            name = model_info.tag or model_commit[:10]
            new = restore_and_commit(
                repo, restores, f"Revert model to {name} and data to "
                f"{data_info.tag or 'its training data'}", progress=progress or self.progress)
            logger.info("Reverted model and data to %s", name)
            return new

    revert_checkpoint = revert_model_and_data

    def _data_of(self, source: VersionSource, model_commit: str, model_info: VersionInfo
                 ) -> tuple[str, VersionInfo]:
        """The data released with a model version, else the data its commit holds."""
        if model_info.version is not None:
            try:
                return source.resolve(DATA, model_info.version)
            except VersionNotFoundError:
                pass
        info = source.catalog.info_from_commit(DATA, model_commit, tag=None)
        if info is None:
            raise NothingToDoError(
                f"{model_info.tag or 'HEAD'} has no dataset",
                hint="Revert the model alone with 'cpv model revert'.")
        return model_commit, info

    # -- reading -------------------------------------------------------------------------------

    def get_combined_metadata(self, tag: str | None = None, verbose: bool = False, *,
                              record: bool = False) -> dict[str, Any]:
        """The model and the data of ``tag`` and how they are linked, from git alone. None
        means HEAD in a clone; without a clone (read from the git remote, given the team and
        the model) it means the latest model version.

        Args:
            record: describe model and data by their records alone (``VersionInfo.to_dict``:
                each field once, as ``--json`` prints), without the seed's extra keys.

        Returns:
            ``{"version", "model", "data", "lineage"}``: ``model`` and ``data`` are metadata
            dicts as ``get_model_metadata`` and ``get_data_metadata`` return them (``data`` is
            None when there is no dataset); ``lineage`` holds
            ``data_version`` (the data the model was trained on: a data tag, else
            ``md5:<hash>``), ``same_commit`` and ``trained_on_this_data`` (the data shown is
            the data the model's commit holds).
        """
        enable_verbose(verbose)
        source = self.models.version_source()
        model_commit, model_info = resolve_reference(source, source.spec("model"), tag)
        try:
            data_info: VersionInfo | None = self._data_of(source, model_commit, model_info)[1]
        except NothingToDoError:
            data_info = None
        trained_on = source.catalog.pointer_at(model_commit, DATA.path)
        as_dict = VersionInfo.to_dict if record else VersionInfo.seed_dict
        return {
            "version": model_info.version,
            "model": as_dict(model_info),
            "data": as_dict(data_info) if data_info else None,
            "lineage": {
                "data_version": model_info.data_version,
                "same_commit": data_info is not None and data_info.commit == model_commit,
                "trained_on_this_data": data_info is not None and trained_on is not None
                and trained_on.md5 == data_info.md5,
            },
        }

    get_metadata = get_combined_metadata

    def report(self, *, verbose: bool = False) -> Report:
        """The model and the data on one report, from git alone (see
        ``ModelsCheckpointsManage.report``); without a clone, given the team and the model."""
        enable_verbose(verbose)
        return build_report(self.models.version_source(), ("model", "data"))

    def write_report(self, output: str | os.PathLike[str], *, verbose: bool = False) -> Path:
        """Write ``report()`` as one self-contained HTML file; returns its absolute path.

        Raises:
            RemoteError: without a clone, the git remote cannot be reached.
            LocalFileError: ``output`` cannot be written.
        """
        enable_verbose(verbose)
        return write_report(self.report(), caller_path(output))


    # -- cleanup -------------------------------------------------------------------------------

    def gc(self, *, keep_last: int = 3, grace: str | float | timedelta = "24h",
           dry_run: bool = False, include_unreferenced: bool = False, cache_only: bool = False,
           verbose: bool = False) -> GCResult:
        """``gc`` of the model's and the data's uploads together (see
        ``CheckpointManager.gc``)."""
        enable_verbose(verbose)
        from cp_manage.manage import gc

        return gc.gc(self.repo, ("model", "data"), keep_last=keep_last, grace=grace,
                     dry_run=dry_run, include_unreferenced=include_unreferenced,
                     cache_only=cache_only)

    def du(self, *, keep_last: int = 3, grace: str | float | timedelta = "24h",
           include_unreferenced: bool = False, verbose: bool = False) -> UsageReport:
        """Storage use of every upload of the model and the data (see
        ``CheckpointManager.du``)."""
        enable_verbose(verbose)
        from cp_manage.manage import gc

        return gc.du(self.repo, ("model", "data"), keep_last=keep_last, grace=grace,
                     include_unreferenced=include_unreferenced)


def _release_failed(names: tuple[str, str], error: CPVError) -> CPVError:
    what = f"Release {names[0]} + {names[1]} failed, so neither tag was created"
    if isinstance(error, GitError):
        return RemoteError(f"{what}: {error.message}", command=error.command,
                           stderr=error.stderr, hint=error.hint or None, detail="")
    return CPVError(f"{what}: {error.message}", hint=error.hint or None)
