"""What cpv returns: artifacts on disk and the metadata of a version.

A version's metadata travels in its annotated tag as one JSON line after the marker
``cpv-metadata:``, so listing and showing versions needs git alone.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cp_manage.errors import CPVError

METADATA_MARKER = "cpv-metadata: "
MAX_METRICS_BYTES = 64 * 1024


@dataclass
class VersionInfo:
    """The metadata of one version (or of HEAD, when ``version`` is None)."""

    kind: str
    version: str | None
    tag: str | None
    path: str
    md5: str
    size_bytes: int
    metrics: dict[str, Any]
    created_at: str
    author: str
    message: str
    cpv_version: str
    commit: str | None = None
    team: str | None = None
    model: str | None = None
    file_count: int | None = None
    splits: dict[str, int] | None = None
    sample_count: int | None = None
    data_version: str | None = None
    files: dict[str, dict[str, Any]] | None = None
    """A folder's files (relative path → ``{"size", "md5"}``), for at most 1,000 files."""

    @property
    def size_mb(self) -> float:
        return round(self.size_bytes / (1024 * 1024), 3)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict, with the seed's keys (``tag``, ``model_size_mb``, ...) as well."""
        data = asdict(self)
        data["size_mb"] = self.size_mb
        data["timestamp"] = self.created_at
        data["team_name"] = self.team
        data["model_name"] = self.model
        data[f"{self.kind}_size_mb"] = self.size_mb  # the seed's model_size_mb, data_size_mb
        return data

    def tag_message(self) -> str:
        """The annotation of this version's tag: the human message, then the metadata line."""
        stored = {k: v for k, v in asdict(self).items() if k not in ("commit", "tag")}
        summary = self.message or f"cpv {self.kind} {self.version}"
        return f"{summary}\n\n{METADATA_MARKER}{json.dumps(stored, sort_keys=True)}\n"

    @classmethod
    def from_tag(cls, tag: str, commit: str, contents: str) -> VersionInfo | None:
        """Read the metadata of a tag written by cpv, or None for a tag cpv did not write."""
        for line in reversed(contents.splitlines()):
            if line.startswith(METADATA_MARKER):
                try:
                    raw = json.loads(line[len(METADATA_MARKER) :])
                except ValueError:
                    return None
                if not isinstance(raw, dict):
                    return None
                known = {k: raw[k] for k in cls.__dataclass_fields__ if k in raw}
                known.update(tag=tag, commit=commit)
                try:
                    return cls(**known)
                except TypeError:
                    return None
        return None


@dataclass
class ModelArtifacts:
    """A model checkpoint on disk (the seed's ``ModelArtifacts``)."""

    model_path: Path
    metrics: dict[str, Any]
    tag: str | None
    size_mb: float
    timestamp: str
    md5: str
    commit: str | None
    info: VersionInfo | None = field(default=None, repr=False)


@dataclass
class DataArtifacts:
    """A dataset on disk (the seed's ``DataArtifacts``)."""

    data_path: Path
    version: str | None
    tag: str | None
    size_mb: float
    timestamp: str
    file_count: int
    sample_count: int | None
    md5: str = ""
    commit: str | None = None
    info: VersionInfo | None = field(default=None, repr=False)


def check_metrics(metrics: object) -> dict[str, Any]:
    """Metrics must be a JSON object of finite values, at most 64 KiB serialised.

    Raises:
        CPVError: naming the offending key and what to do.
    """
    if metrics is None:
        return {}
    if not isinstance(metrics, dict):
        raise CPVError(f"Metrics must be a dict, not {type(metrics).__name__}",
                       hint="Pass metrics like {'accuracy': 0.93, 'loss': 0.21}.")
    for key, value in metrics.items():
        if not isinstance(key, str) or not key:
            raise CPVError(f"Metric names must be non-empty strings, not {key!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise CPVError(f"Metric {key!r} is {value}", hint="Record only finite numbers.")
    try:
        text = json.dumps(metrics, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise CPVError(f"Metrics are not JSON-serialisable ({e})",
                       hint="Use numbers, strings, booleans, lists and dicts only "
                       "(convert tensors with float()).") from e
    if len(text.encode()) > MAX_METRICS_BYTES:
        raise CPVError(f"Metrics are {len(text.encode())} bytes serialised, more than "
                       f"{MAX_METRICS_BYTES}", hint="Record summary numbers, not raw arrays.")
    loaded: dict[str, Any] = json.loads(text)
    return loaded
