"""What a report shows, read from git alone: every version of an artifact, the series a chart
draws (a model's metrics; a dataset's file count, sample count and size), the stages, the files
that changed between consecutive versions of a folder, and which data each model version was
trained on.

Nothing here downloads an object or calls storage: versions and their metadata come from the
catalog (a clone's tags, or the tag mirror of a machine without a clone). A folder's files are
compared only where its tags list them (up to 1,000 files). ``cp_manage.pictures`` draws it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from cp_manage._version import __version__
from cp_manage.artifacts import VersionInfo, is_finite_number
from cp_manage.errors import UnknownMetricError
from cp_manage.formatting import human_size, metric_text
from cp_manage.manage.catalog import VersionSource
from cp_manage.manage.compare import entries_from_metadata, file_changes
from cp_manage.manage.repository import utc_now
from cp_manage.manage.stages import read_log
from cp_manage.spec import ArtifactSpec
from cp_manage.versions import Kind

logger = logging.getLogger(__name__)

__all__ = ["FileStep", "History", "LineageLink", "Report", "Series", "StageEvent",
           "StageRecords", "build_report", "history_of", "stage_records"]


@dataclass(frozen=True)
class StageEvent:
    """One promote (``version`` set) or demote (``version`` None) of a stage."""

    stage: str
    version: str | None
    when: str
    """UTC, ISO 8601."""
    who: str
    message: str = ""


@dataclass(frozen=True)
class StageRecords:
    """The stage history of one artifact: ``events`` in their recorded order (oldest first),
    and ``current``: each stage's version now (a demoted stage is absent)."""

    events: list[StageEvent] = field(default_factory=list)
    current: dict[str, str] = field(default_factory=dict)


def stage_records(source: VersionSource, spec: ArtifactSpec) -> StageRecords:
    """The stages of ``spec``'s versions, read from git alone: the promote and demote tags
    (``cpv model promote``), in the order of their sequence numbers, and each stage's version
    now (the last assignment wins). Retirements are not stage assignments and are left out."""
    log = read_log(source, spec)
    events = [StageEvent(event.stage, event.version if event.action == "promote" else None,
                         event.created_at, event.author, event.message)
              for event in log.events if event.stage is not None]
    return StageRecords(events, log.stages())


@dataclass(frozen=True)
class Series:
    """One chart: a value per version (None where the version has no finite number), with
    what was recorded (``raw``: a label for a gap such as ``nan``)."""

    name: str
    values: list[float | None]
    raw: list[Any]
    unit: Literal["", "bytes"] = ""

    @property
    def points(self) -> int:
        return sum(value is not None for value in self.values)

    def text(self, index: int) -> str:
        """The value of version ``index`` as ``cpv model list`` writes it (``-`` for none)."""
        raw = self.raw[index]
        if raw is None:
            return "-"
        return human_size(raw) if self.unit == "bytes" and isinstance(raw, int) else \
            metric_text(raw)


@dataclass(frozen=True)
class FileStep:
    """What changed in a folder from version ``old`` to ``new``: one row per added, removed or
    modified file (``{"path", "change", "old_size", "new_size"}``, sizes in bytes), or None
    when a tag does not list its files (more than 1,000 files, or tagged by another tool)."""

    old: str
    new: str
    rows: list[dict[str, Any]] | None
    size_delta: int


@dataclass
class History:
    """Every version of one artifact with what the report draws of it."""

    kind: Kind
    artifact: str
    """How the user names it: ``model.bin``, ``checkpoint/``, ``data/``."""
    tree: bool
    versions: list[VersionInfo]
    series: list[Series]
    stages: StageRecords
    file_steps: list[FileStep]

    @property
    def metric_names(self) -> list[str]:
        """Every metric any version records, in order of first appearance (numbers or not)."""
        names: dict[str, None] = {}
        for info in self.versions:
            names.update(dict.fromkeys(info.metrics))
        return list(names)

    def series_named(self, names: Sequence[str]) -> list[Series]:
        """The series called ``names``, in that order.

        Raises:
            UnknownMetricError: one of them is not a series here (naming the known ones).
        """
        by_name = {series.name: series for series in self.series}
        for name in names:
            if name not in by_name:
                raise UnknownMetricError(name, known=list(by_name), kind=self.kind)
        return [by_name[name] for name in names]

    def current_stages(self, version: str | None) -> list[str]:
        """The stages that point at ``version`` now."""
        return sorted(stage for stage, held in self.stages.current.items() if held == version)

    def former_stages(self, version: str | None) -> list[str]:
        """The stages that pointed at ``version`` once and do not any more."""
        now = set(self.current_stages(version))
        return sorted({e.stage for e in self.stages.events if e.version == version} - now)


@dataclass(frozen=True)
class LineageLink:
    """A model version and the data it was trained on: a data tag (``data`` is its metadata
    when that version exists), ``md5:<hash>`` for untagged data, or None when not recorded."""

    model_version: str
    data_version: str | None
    data: VersionInfo | None


@dataclass
class Report:
    """Everything a report shows of one (team, model)."""

    team: str
    model: str
    histories: list[History]
    lineage: list[LineageLink]
    generated_at: str = field(default_factory=utc_now)
    cpv_version: str = __version__


def build_report(source: VersionSource, kinds: Sequence[Kind]) -> Report:
    """The report of ``kinds`` (``("model",)``, ``("data",)`` or both) from ``source``'s tags.

    Raises:
        RemoteError: without a clone, the git remote cannot be reached and no mirror exists.
    """
    specs = {kind: source.spec(kind) for kind in ("model", "data")}
    listed = {kind: source.versions(spec) for kind, spec in specs.items()}
    for tag, why in source.catalog.skipped.items():
        logger.warning("Skipping %s: %s", tag, why)
    histories = [history_of(specs[kind], listed[kind],
                            stages=stage_records(source, specs[kind])) for kind in kinds]
    data_by_tag = {info.tag: info for info in listed["data"] if info.tag}
    lineage = [LineageLink(str(info.version), info.data_version,
                           data_by_tag.get(info.data_version or ""))
               for info in listed["model"]]
    return Report(source.team, source.model, histories, lineage)


def history_of(spec: ArtifactSpec, versions: list[VersionInfo], *,
               stages: StageRecords | None = None) -> History:
    """The history of ``spec``'s ``versions`` (oldest first) with their ``stages``."""
    return History(kind=spec.kind, artifact=spec.name, tree=spec.tree, versions=versions,
                   series=_metric_series(versions) if spec.records_metrics
                   else _data_series(versions),
                   stages=stages or StageRecords(),
                   file_steps=_file_steps(versions) if spec.tree else [])


def _metric_series(versions: list[VersionInfo]) -> list[Series]:
    """One series per metric that at least one version records as a number (not a bool)."""
    names: dict[str, None] = {}
    for info in versions:
        names.update(dict.fromkeys(k for k, v in info.metrics.items() if _is_number(v)))
    return [_series(name, [info.metrics.get(name) for info in versions]) for name in names]


def _data_series(versions: list[VersionInfo]) -> list[Series]:
    """File count, sample count and size (named as ``cpv data list`` names its columns): those
    some version knows."""
    every = [_series("files", [info.file_count for info in versions]),
             _series("samples", [info.sample_count for info in versions]),
             _series("size", [info.size_bytes for info in versions], unit="bytes")]
    return [series for series in every if series.points]


def _series(name: str, raw: list[Any], *, unit: Literal["", "bytes"] = "") -> Series:
    values = [float(v) if is_finite_number(v) else None for v in raw]
    return Series(name, values, raw, unit)


def _is_number(value: object) -> bool:
    """A number, finite or not (NaN and ±inf are gaps in its chart); a bool is no number."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _file_steps(versions: list[VersionInfo]) -> list[FileStep]:
    """What changed between each version and the next, from the file lists of their tags."""
    steps = []
    entries = [entries_from_metadata(info) for info in versions]
    for i in range(1, len(versions)):
        before, after = entries[i - 1], entries[i]
        rows = file_changes(before, after)[1] if before is not None and after is not None \
            else None
        steps.append(FileStep(str(versions[i - 1].version), str(versions[i].version), rows,
                              versions[i].size_bytes - versions[i - 1].size_bytes))
    return steps
