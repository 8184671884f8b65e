"""What cpv returns: artifacts on disk and the metadata of a version.

A version's metadata travels in its annotated tag as one JSON line after the marker
``cpv-metadata:``, so listing and showing versions needs git alone.

Metrics may hold NaN and ±inf (a diverged run still saves its checkpoint). JSON has no such
numbers, so wherever metrics are written as JSON (``metrics.log``, the tag, ``--json``) they are
the strings ``"nan"``, ``"inf"`` and ``"-inf"``; reading turns those strings back into floats.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

from cp_manage.errors import CPVError

METADATA_MARKER = "cpv-metadata: "
MAX_METRICS_BYTES = 64 * 1024
NON_FINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}
"""How NaN and ±inf are written in JSON, and the floats they stand for."""
MODEL_ONLY = ("data_version",)
DATA_ONLY = ("splits", "sample_count")
TREE_ONLY = ("file_count", "files")
"""What a folder has (data, or a model folder) and a single file does not."""


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

    def __post_init__(self) -> None:
        self.metrics = decode_metrics(self.metrics)
        self.created_at = utc_timestamp(self.created_at)

    @property
    def size_mb(self) -> float:
        return round(self.size_bytes / (1024 * 1024), 3)

    def to_dict(self) -> dict[str, Any]:
        """The version's record: each field once, under one name, and only the fields that
        mean something for its kind (what ``--json`` prints; metrics hold floats, NaN too)."""
        data = asdict(self)
        for key in DATA_ONLY if self.kind == "model" else MODEL_ONLY:
            del data[key]
        if self.file_count is None:  # a single file
            for key in TREE_ONLY:
                del data[key]
        return data

    def seed_dict(self) -> dict[str, Any]:
        """The record plus the keys the seed's ``get_model_metadata()`` / ``get_data_metadata()``
        return (``tag``, ``model_size_mb``, ``timestamp``, ``team_name``, ``model_name``, ...),
        which scripts written for the seed read."""
        data = self.to_dict()
        data["size_mb"] = self.size_mb
        data["timestamp"] = self.created_at
        data["team_name"] = self.team
        data["model_name"] = self.model
        data[f"{self.kind}_size_mb"] = self.size_mb  # the seed's model_size_mb, data_size_mb
        return data

    def tag_message(self) -> str:
        """The annotation of this version's tag: the human message, then the metadata line."""
        stored = {k: v for k, v in asdict(self).items() if k not in ("commit", "tag")}
        stored["metrics"] = encode_metrics(self.metrics)
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
    """Metrics must be a JSON object, at most 64 KiB serialised.

    Returns:
        The metrics as they are stored: NaN and ±inf as ``"nan"``, ``"inf"``, ``"-inf"``.

    Raises:
        CPVError: naming the offending key and what to do.
    """
    if metrics is None:
        return {}
    if not isinstance(metrics, dict):
        raise CPVError(f"Metrics must be a dict, not {type(metrics).__name__}",
                       hint="Pass metrics like {'accuracy': 0.93, 'loss': 0.21}.")
    for key in metrics:
        if not isinstance(key, str) or not key:
            raise CPVError(f"Metric names must be non-empty strings, not {key!r}")
    try:
        text = json.dumps(encode_metrics(metrics), sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise CPVError(f"Metrics are not JSON-serialisable ({e})",
                       hint="Use numbers, strings, booleans, lists and dicts only "
                       "(convert tensors with float()).") from e
    if len(text.encode()) > MAX_METRICS_BYTES:
        raise CPVError(f"Metrics are {len(text.encode())} bytes serialised, more than "
                       f"{MAX_METRICS_BYTES}", hint="Record summary numbers, not raw arrays.")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def encode_metrics(value: Any) -> Any:
    """``value`` ready for JSON: every NaN or ±inf float, however deeply nested, becomes
    ``"nan"``, ``"inf"`` or ``"-inf"``."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: encode_metrics(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [encode_metrics(v) for v in value]
    return value


def decode_metrics(value: Any) -> Any:
    """The inverse of ``encode_metrics``: ``"nan"``, ``"inf"``, ``"-inf"`` become floats."""
    if isinstance(value, str):
        return NON_FINITE.get(value, value)
    if isinstance(value, dict):
        return {k: decode_metrics(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode_metrics(v) for v in value]
    return value


def is_finite_number(value: object) -> bool:
    """A number a delta can be taken of: int or float, not bool, not NaN or ±inf."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return isinstance(value, int) or math.isfinite(value)


def metric_delta(old: Any, new: Any) -> int | float | None:
    """``new - old`` at the precision the two values were written with (``0.83 - 0.81`` is
    ``0.02``, not ``0.019999999999999907``); None unless both are finite numbers."""
    if not (is_finite_number(old) and is_finite_number(new)):
        return None
    if isinstance(old, int) and isinstance(new, int):
        return new - old
    # repr() is the shortest text that reads back as the same float: subtract those decimals.
    return float(Decimal(repr(new)) - Decimal(repr(old)))


def utc_timestamp(text: str) -> str:
    """``text`` as UTC ISO 8601 with a ``Z`` (``2024-05-01T12:00:00Z``); text that is not a
    timestamp with a zone is returned as it is."""
    try:
        parsed = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        return text
    if parsed.tzinfo is None:
        return text
    return parsed.astimezone(timezone.utc).replace(tzinfo=None).isoformat(
        timespec="seconds") + "Z"
