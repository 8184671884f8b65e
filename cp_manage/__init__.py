"""cpv: version ML model checkpoints and training data with git + DVC.

The public surface: the seed's manager classes, the artifacts they return, and the errors.
"""

from __future__ import annotations

__version__ = "0.1.0"

from cp_manage.artifacts import DataArtifacts, ModelArtifacts, VersionInfo
from cp_manage.config import CPVConfig
from cp_manage.errors import (
    ArtifactNotFoundError,
    ConcurrentModificationError,
    ConfigError,
    CPVError,
    GitError,
    IntegrityError,
    InvalidNameError,
    InvalidVersionError,
    NotARepositoryError,
    NothingToDoError,
    PointerError,
    RemoteError,
    StorageError,
    UnsavedChangesError,
    VersionExistsError,
    VersionNotFoundError,
)
from cp_manage.manage.models import ModelsCheckpointsManage

__all__ = [
    "ArtifactNotFoundError",
    "CPVConfig",
    "CPVError",
    "ConcurrentModificationError",
    "ConfigError",
    "DataArtifacts",
    "GitError",
    "IntegrityError",
    "InvalidNameError",
    "InvalidVersionError",
    "ModelArtifacts",
    "ModelsCheckpointsManage",
    "NotARepositoryError",
    "NothingToDoError",
    "PointerError",
    "RemoteError",
    "StorageError",
    "UnsavedChangesError",
    "VersionExistsError",
    "VersionInfo",
    "__version__",
]
