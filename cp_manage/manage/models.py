"""ModelsCheckpointsManage: the model checkpoint lifecycle under the seed's names."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cp_manage.artifacts import ModelArtifacts
from cp_manage.fsutil import Progress
from cp_manage.manage.base import CheckpointManager
from cp_manage.manage.handlers import FileHandler, Handler
from cp_manage.manage.repository import MODEL_PATH, InitResult


class ModelsCheckpointsManage(CheckpointManager):
    """Version the model checkpoint (``model.bin``) of one (team, model) repository.

    Args:
        team_name: the team, e.g. ``AI-Convo``.
        model_name: the model, e.g. ``faster-whisper``.
        repo_path: the repository folder (default: ``./{model_name}``).
        verbose: log what happens at INFO level (the library never prints).
    """

    kind = "model"

    def _handler(self) -> Handler:
        return FileHandler(MODEL_PATH)

    def import_model_init(self, data_path: str | os.PathLike[str] | None = None,
                          force: bool = False, *, git_url: str | None = None,
                          storage_url: str | None = None) -> InitResult:
        """Create the repository (seed layout, git + DVC, both remotes), push its first commit.

        Running it again changes nothing. With ``data_path``, that dataset is imported too.
        """
        result = self._init(git_url=git_url, storage_url=storage_url, force=force)
        if data_path is not None:
            from cp_manage.manage.data import DataCheckpointsManage

            data = DataCheckpointsManage(repo_path=self.repo_path, config=self.config)
            data.import_data_init(data_path)
        return result

    init = import_model_init

    def upload_model_checkpoint(self, model_path: str | os.PathLike[str] | None = None,
                                metrics: dict[str, Any] | None = None,
                                message: str | None = None, verbose: bool = False, *,
                                progress: Progress | None = None) -> str:
        """Upload the checkpoint and its metrics; returns HEAD's commit hash afterwards."""
        return self.upload(model_path, metrics=metrics, message=message,
                           progress=progress).commit

    upload_checkpoint = upload_model_checkpoint

    def tag_model_checkpoint(self, version_tag: str | None = None, message: str | None = None,
                             *, major: bool = False) -> str:
        """Tag HEAD's checkpoint (next minor version, or ``major``, or ``version_tag``)."""
        return self.tag(version_tag, major=major, message=message)

    tag_checkpoint = tag_model_checkpoint

    def read_model_checkpoint_tag(self) -> list[str]:
        """Model versions, oldest first."""
        return [str(info.version) for info in self.list_versions()]

    read_checkpoint_tag = read_model_checkpoint_tag

    def download_model_checkpoint(self, tag: str | None = None,
                                  output_dir: str | os.PathLike[str] | None = None,
                                  verbose: bool = False, *,
                                  progress: Progress | None = None,
                                  force: bool = False) -> ModelArtifacts:
        """Fetch ``tag`` (HEAD when None) into ``output_dir``, md5-checked; a different
        ``model.bin`` already there is replaced only with ``force``."""
        path, info = self.download(tag, output_dir=output_dir, progress=progress,
                                   force=force)
        return ModelArtifacts(model_path=path, metrics=info.metrics, tag=info.tag,
                              size_mb=info.size_mb, timestamp=info.created_at, md5=info.md5,
                              commit=info.commit, info=info)

    download_checkpoint = download_model_checkpoint

    def revert_model_checkpoint(self, tag: str, force: bool = False) -> str | None:
        """Bring ``tag``'s checkpoint back as a new commit; None when HEAD already has it."""
        return self.revert(tag, force=force)

    revert_checkpoint = revert_model_checkpoint

    def get_model_metadata(self, tag: str | None = None) -> dict[str, Any]:
        """Metadata of ``tag`` (HEAD when None), from git alone: the seed's keys (``tag``,
        ``model_size_mb``, ``metrics``, ``timestamp``, ``team_name``, ``model_name``) and the
        version's record (``version``, ``md5``, ``size_bytes``, ``created_at``, ...)."""
        return self.metadata(tag).seed_dict()

    get_metadata = get_model_metadata

    @property
    def model_path(self) -> Path:
        return self.repo_path / MODEL_PATH
