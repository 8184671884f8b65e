"""DataCheckpointsManage: the training-data lifecycle under the seed's names.

The dataset is the repository's ``data/`` folder (``data/train``, ``data/validation``, ...),
tracked by DVC as ``data.dvc``; its versions are the tags ``data/vMAJOR.MINOR``. Every method
taking a version accepts ``v1.0`` and ``data/v1.0`` alike.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from cp_manage.artifacts import DataArtifacts, VersionInfo
from cp_manage.errors import CPVError, NothingToDoError
from cp_manage.fsutil import Progress
from cp_manage.manage.base import (
    CheckpointManager,
    TagResult,
    UploadResult,
    caller_path,
)
from cp_manage.manage.catalog import VersionSource
from cp_manage.manage.compare import delta_row
from cp_manage.manage.dataset import count_samples, read_listing, splits_of
from cp_manage.spec import DATA_PATH
from cp_manage.versions import Version

logger = logging.getLogger(__name__)


class DataCheckpointsManage(CheckpointManager):
    """Version the training data (``data/``) of one (team, model) repository.

    Args:
        team_name: the team, e.g. ``AI-Convo``.
        model_name: the model, e.g. ``faster-whisper``.
        repo_path: the repository folder (default: ``./{model_name}``).
        verbose: log what happens at INFO level (the library never prints).
    """

    kind = "data"

    # -- upload --------------------------------------------------------------------------------

    def import_data_init(self, data_path: str | os.PathLike[str], force: bool = False,
                         verbose: bool = False, *, message: str | None = None,
                         progress: Progress | None = None) -> str:
        """Make ``data_path`` the repository's dataset and upload it.

        A folder elsewhere (a path relative to the current directory) is copied to ``data/``,
        replacing what is there; the repository's own ``data/`` is adopted as it is. Running it
        again with the same files changes nothing.

        Args:
            data_path: the dataset folder, e.g. one holding ``train/``, ``validation/``, ``test/``.
            force: replace a ``data/`` whose changes were never uploaded.
            verbose: log what happens at INFO level.

        Returns:
            HEAD's commit afterwards.

        Raises:
            ArtifactNotFoundError, InvalidDatasetError, UnsavedChangesError, StorageError,
            RemoteError.
        """
        return self.upload(caller_path(data_path), message=message, progress=progress,
                           force=force, verbose=verbose).commit

    def upload(self, source: str | os.PathLike[str] | None = None, *,
               metrics: dict[str, Any] | None = None, message: str | None = None,
               progress: Progress | None = None, force: bool = False,
               verbose: bool = False) -> UploadResult:
        """Upload ``data/`` (only files that changed since the last upload are read and sent).

        ``source`` is ``data/`` or a folder elsewhere (relative to the current directory),
        which then replaces ``data/``, as ``import_data_init`` does.

        Raises:
            CPVError: metrics were given (a dataset has none; they belong to the model).
        """
        if metrics:
            raise CPVError("A dataset has no metrics",
                           hint="Record metrics with the model upload (cpv model upload "
                           "--metric K=V).")
        return super().upload(source, message=message, progress=progress, force=force,
                              verbose=verbose)

    def upload_data_checkpoint(self, data_path: str | os.PathLike[str] | None = None,
                               message: str | None = None, verbose: bool = False, *,
                               force: bool = False, progress: Progress | None = None) -> str:
        """Upload the dataset (``data/``, or a folder copied there first); returns HEAD's
        commit hash afterwards. A relative ``data_path`` is taken from the caller's current
        directory."""
        return self.upload(data_path, message=message, progress=progress, force=force,
                           verbose=verbose).commit

    upload_checkpoint = upload_data_checkpoint

    # -- tag -----------------------------------------------------------------------------------

    def version_info_for(self, commit: str, *, verbose: bool = False) -> VersionInfo:
        """The generic metadata plus ``splits`` (top-level folder → file count) and
        ``sample_count`` (see ``cp_manage.manage.dataset``)."""
        info = super().version_info_for(commit, verbose=verbose)
        pointer = self.repo.pointer_at(commit, DATA_PATH)
        if pointer is not None:
            md5s = read_listing(self.repo, pointer)
            info.splits = splits_of(md5s)
            info.sample_count = count_samples(self.repo, md5s)
        return info

    def _existing_version(self, info: VersionInfo, existing: list[VersionInfo],
                          explicit: Version | None) -> TagResult | None:
        """A dataset is versioned once: when HEAD's dataset already is a version (on an
        earlier commit, e.g. before a model upload), that version is the answer."""
        same = [i.tag for i in existing if i.md5 == info.md5 and i.tag]
        if not same:
            return None
        remote = self.repo.remote_tags()
        same = [name for name in same if name in remote]  # an unpushed leftover is no version
        if not same:
            return None
        wanted = self.spec.tag(explicit) if explicit is not None else None
        name = wanted if wanted in same else same[-1]
        if wanted is not None and wanted != name:
            raise NothingToDoError(f"HEAD's dataset is already {name}, so it cannot also be "
                                   f"{wanted}", hint="Change and upload the data before tagging "
                                   "again, or omit the version.")
        logger.info("HEAD's dataset is already %s; nothing to tag", name)
        return TagResult(name, created=False)

    def tag_data_checkpoint(self, version_tag: str | None = None, message: str | None = None,
                            verbose: bool = False, *, major: bool = False) -> str:
        """Tag HEAD's dataset (next minor version, or ``major``, or ``version_tag``);
        returns the tag name, e.g. ``data/v0.1``. When the dataset already is a version, that
        version is returned and nothing is tagged."""
        return self.tag(version_tag, major=major, message=message, verbose=verbose).tag

    tag_checkpoint = tag_data_checkpoint

    # -- reading -------------------------------------------------------------------------------

    def read_data_checkpoint_tag(self, verbose: bool = False) -> list[str]:
        """Data versions (``v0.1``, ...), oldest first."""
        return [str(info.version) for info in self.list_versions(verbose=verbose)]

    read_checkpoint_tag = read_data_checkpoint_tag

    def get_data_metadata(self, tag: str | None = None, verbose: bool = False
                          ) -> dict[str, Any]:
        """Metadata of ``tag`` (HEAD when None), from git alone: ``file_count``, ``splits``,
        ``sample_count``, ``size_mb``, ``md5``, ``timestamp``, ..."""
        return self.metadata(tag, verbose=verbose).seed_dict()

    get_metadata = get_data_metadata

    def diff(self, old: str, new: str, *, verbose: bool = False) -> dict[str, Any]:
        """Two versions side by side: sizes, file, split and sample counts with deltas, and
        which files were added, removed or modified (None when the listings are unreachable).
        """
        return super().diff(old, new, verbose=verbose)

    def _compare(self, source: VersionSource, old: str, new: str) -> dict[str, Any]:
        """The generic comparison plus sample and per-split file counts."""
        result = super()._compare(source, old, new)
        a, b = result["old"], result["new"]
        rows: dict[str, dict[str, Any]] = result["stats"]
        rows["sample_count"] = delta_row(a.get("sample_count"), b.get("sample_count"))
        splits_a, splits_b = a.get("splits") or {}, b.get("splits") or {}
        for split in sorted(set(splits_a) | set(splits_b)):
            rows[f"files in {split}"] = delta_row(splits_a.get(split), splits_b.get(split))
        return result

    # -- download and revert -------------------------------------------------------------------

    def download_data_checkpoint(self, tag: str | None = None,
                                 output_dir: str | os.PathLike[str] | None = None,
                                 verbose: bool = False, *,
                                 progress: Progress | None = None,
                                 force: bool = False) -> DataArtifacts:
        """Fetch ``tag`` (HEAD when None) into ``output_dir`` (a new or empty folder, which
        receives the dataset's own tree: ``output_dir/train/...``), every file md5-checked. A
        folder holding anything else is replaced only with ``force``."""
        path, info = self.download(tag, output_dir=output_dir, progress=progress,
                                   force=force, verbose=verbose)
        return DataArtifacts(data_path=path, version=info.version, tag=info.tag,
                             size_mb=info.size_mb, timestamp=info.created_at,
                             file_count=int(info.file_count or 0),
                             sample_count=info.sample_count, md5=info.md5, commit=info.commit,
                             info=info)

    download_checkpoint = download_data_checkpoint

    def revert_data_checkpoint(self, tag: str, force: bool = False,
                               verbose: bool = False) -> str | None:
        """Bring ``tag``'s dataset back into ``data/`` as a new commit; None when HEAD already
        has it."""
        return self.revert(tag, force=force, verbose=verbose)

    revert_checkpoint = revert_data_checkpoint

    @property
    def data_path(self) -> Path:
        return self.repo_path / DATA_PATH
