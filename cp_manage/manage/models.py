"""ModelsCheckpointsManage: the model checkpoint lifecycle under the seed's names."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cp_manage.artifacts import ModelArtifacts
from cp_manage.errors import NotARepositoryError
from cp_manage.fsutil import Progress
from cp_manage.manage.base import CheckpointManager, caller_path, enable_verbose
from cp_manage.manage.repository import MODEL_PATH, InitResult

if TYPE_CHECKING:
    from cp_manage.manage.background import BackgroundUploads
    from cp_manage.manage.queue import Completed, QueueEntry


class ModelsCheckpointsManage(CheckpointManager):
    """Version the model checkpoint of one (team, model) repository: one file (``model.bin`` by
    default, or another name) or one folder (such as ``checkpoint/``), chosen at init.

    Args:
        team_name: the team, e.g. ``AI-Convo``.
        model_name: the model, e.g. ``faster-whisper``.
        repo_path: the repository folder (default: ``./{model_name}``).
        verbose: log what happens at INFO level (the library never prints).
    """

    kind = "model"

    def import_model_init(self, data_path: str | os.PathLike[str] | None = None,
                          force: bool = False, verbose: bool = False, *,
                          git_url: str | None = None, storage_url: str | None = None,
                          artifact: str | None = None) -> InitResult:
        """Create the repository (seed layout, git + DVC, both remotes), push its first commit.

        Running it again changes nothing. With ``data_path`` (relative to the caller's current
        directory), that dataset is imported too.

        Args:
            artifact: the model artifact, recorded in ``.cpv.json``: ``model.bin`` (the
                default), another file name such as ``model.safetensors``, or a name ending in
                ``/`` such as ``checkpoint/`` for a folder checkpoint.

        Raises:
            InvalidNameError, ConfigError (e.g. the repository has another artifact),
            RemoteError, StorageError.
        """
        enable_verbose(verbose)
        dataset = caller_path(data_path) if data_path is not None else None
        result = self._init(git_url=git_url, storage_url=storage_url, force=force,
                            artifact=artifact)
        if dataset is not None:
            from cp_manage.manage.data import DataCheckpointsManage

            data = DataCheckpointsManage(repo_path=self.repo_path, config=self.config)
            data.import_data_init(dataset)
        return result

    init = import_model_init

    def upload_model_checkpoint(self, model_path: str | os.PathLike[str] | None = None,
                                metrics: dict[str, Any] | None = None,
                                message: str | None = None, verbose: bool = False, *,
                                force: bool = False, progress: Progress | None = None) -> str:
        """Upload the checkpoint and its metrics; returns HEAD's commit hash afterwards.

        ``model_path`` may be any file (or, for a folder artifact, any folder), inside or
        outside the repository, relative to the caller's current directory; it is only read,
        and the workspace artifact then holds a private copy of it (``force`` replaces
        workspace changes never uploaded). ``message`` stays with the version tagged from this
        upload.
        """
        return self.upload(model_path, metrics=metrics, message=message, progress=progress,
                           force=force, verbose=verbose).commit

    upload_checkpoint = upload_model_checkpoint

    def tag_model_checkpoint(self, version_tag: str | None = None, message: str | None = None,
                             verbose: bool = False, *, major: bool = False) -> str:
        """Tag HEAD's checkpoint (next minor version, or ``major``, or ``version_tag``).

        When HEAD already is a version (the script ran twice), that version is returned and
        nothing is tagged."""
        return self.tag(version_tag, major=major, message=message, verbose=verbose).tag

    tag_checkpoint = tag_model_checkpoint

    def read_model_checkpoint_tag(self, verbose: bool = False) -> list[str]:
        """Model versions, oldest first."""
        return [str(info.version) for info in self.list_versions(verbose=verbose)]

    read_checkpoint_tag = read_model_checkpoint_tag

    def download_model_checkpoint(self, tag: str | None = None,
                                  output_dir: str | os.PathLike[str] | None = None,
                                  verbose: bool = False, *, progress: Progress | None = None,
                                  include: Sequence[str] | None = None,
                                  exclude: Sequence[str] | None = None,
                                  force: bool = False) -> ModelArtifacts:
        """Fetch ``tag`` (HEAD when None) into ``output_dir``, md5-checked; a different
        ``model.bin`` already there is replaced only with ``force``. A folder checkpoint is
        laid directly in ``output_dir`` (``model_path`` is that folder), all of it or the
        files ``include``/``exclude`` pick."""
        path, info = self.download(tag, output_dir=output_dir, progress=progress,
                                   include=include, exclude=exclude, force=force,
                                   verbose=verbose)
        return ModelArtifacts(model_path=path, metrics=info.metrics, tag=info.tag,
                              size_mb=info.size_mb, timestamp=info.created_at, md5=info.md5,
                              commit=info.commit, info=info)

    download_checkpoint = download_model_checkpoint

    def revert_model_checkpoint(self, tag: str, force: bool = False,
                                verbose: bool = False) -> str | None:
        """Bring ``tag``'s checkpoint back as a new commit; None when HEAD already has it."""
        return self.revert(tag, force=force, verbose=verbose)

    revert_checkpoint = revert_model_checkpoint

    def get_model_metadata(self, tag: str | None = None, verbose: bool = False
                           ) -> dict[str, Any]:
        """Metadata of ``tag`` (HEAD when None), from git alone: the seed's keys (``tag``,
        ``model_size_mb``, ``metrics``, ``timestamp``, ``team_name``, ``model_name``) and the
        version's record (``version``, ``md5``, ``size_bytes``, ``created_at``, ...)."""
        return self.metadata(tag, verbose=verbose).seed_dict()

    get_metadata = get_model_metadata

    # -- background uploads (cp_manage.manage.background, cp_manage.manage.queue) ---------------

    def background(self, max_pending_bytes: int | None = None, *,
                   verbose: bool = False) -> BackgroundUploads:
        """Uploads that run in the background, in order, from a durable queue on disk.

        ``submit(model_path, metrics, message, tag)`` returns a Future as soon as the
        checkpoint is snapshotted into the local cache; storing, commit, push and tag follow
        on one worker thread. Use it as a context manager (leaving waits for every upload) or
        call ``close()``. Uploads an earlier process left queued are completed first.

        Args:
            max_pending_bytes: ``submit`` waits while the snapshots not yet versioned would
                exceed this; default: room for two checkpoints of the size being submitted.

        Raises:
            NotARepositoryError, CPVError.
        """
        enable_verbose(verbose)
        from cp_manage.manage.background import BackgroundUploads

        return BackgroundUploads(self, max_pending_bytes=max_pending_bytes)

    def pending_uploads(self, verbose: bool = False) -> list[QueueEntry]:
        """The uploads waiting in the queue, oldest first (``cpv model pending``)."""
        enable_verbose(verbose)
        from cp_manage.manage.queue import UploadQueue

        return UploadQueue(self.repo).entries()

    def flush_uploads(self, verbose: bool = False, *,
                      on_done: Callable[[Completed], None] | None = None) -> list[Completed]:
        """Complete every queued upload, oldest first, each exactly once (``cpv model flush``).

        Raises:
            QueueError: an upload failed; it and those after it stay queued.
        """
        enable_verbose(verbose)
        from cp_manage.manage.queue import flush

        return flush(self, on_done=on_done)

    def drop_upload(self, ref: str, verbose: bool = False) -> QueueEntry:
        """Take a queued upload (sequence number or id prefix) out of the queue, unversioned.

        Raises:
            QueueError: no such entry.
        """
        enable_verbose(verbose)
        from cp_manage.manage.queue import drop

        return drop(self, ref)

    @property
    def model_path(self) -> Path:
        """The workspace model artifact (a file, or a folder)."""
        try:
            return self.repo.root / self.spec.path
        except NotARepositoryError:  # not made yet: where the seed's layout puts it
            return self.repo_path / MODEL_PATH
