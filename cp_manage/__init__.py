"""cpv: version ML model checkpoints and training data with git + DVC.

The public surface: the seed's manager classes, the artifacts they return, and the errors.
"""

from __future__ import annotations

from cp_manage._version import __version__
from cp_manage.artifacts import DataArtifacts, ModelArtifacts, VersionInfo
from cp_manage.config import CPVConfig
from cp_manage.errors import (
    AmbiguousCommitError,
    ArtifactNotFoundError,
    ConcurrentModificationError,
    ConfigError,
    CPVError,
    GitError,
    IntegrityError,
    InvalidDatasetError,
    InvalidNameError,
    InvalidVersionError,
    NotARepositoryError,
    NothingToDoError,
    PointerError,
    RemoteError,
    RetiredVersionError,
    StageNotFoundError,
    StorageError,
    UnknownMetricError,
    UnsavedChangesError,
    VersionExistsError,
    VersionNotFoundError,
)
from cp_manage.manage.combined import CombinedCheckpointsManage
from cp_manage.manage.data import DataCheckpointsManage
from cp_manage.manage.models import ModelsCheckpointsManage

__all__ = [
    "AmbiguousCommitError",
    "ArtifactNotFoundError",
    "CPVConfig",
    "CPVError",
    "CombinedCheckpointsManage",
    "ConcurrentModificationError",
    "ConfigError",
    "DataArtifacts",
    "DataCheckpointsManage",
    "GitError",
    "IntegrityError",
    "InvalidDatasetError",
    "InvalidNameError",
    "InvalidVersionError",
    "ModelArtifacts",
    "ModelsCheckpointsManage",
    "NotARepositoryError",
    "NothingToDoError",
    "PointerError",
    "RemoteError",
    "RetiredVersionError",
    "StageNotFoundError",
    "StorageError",
    "UnknownMetricError",
    "UnsavedChangesError",
    "VersionExistsError",
    "VersionInfo",
    "VersionNotFoundError",
    "__version__",
]
