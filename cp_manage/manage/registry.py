"""What a team asks of its versions beyond the lifecycle: which is in which stage, which was
retired, which is best by a metric, and every upload.

``StageRegistry`` is mixed into ``CheckpointManager``, as ``VersionTagging`` is; it needs the
manager's ``repo``, ``spec``, ``kind`` and ``version_source()``. The events themselves are
recorded and read by ``cp_manage.manage.stages``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from cp_manage.artifacts import VersionInfo, is_finite_number
from cp_manage.errors import (
    CPVError,
    NothingToDoError,
    RetiredVersionError,
    StageNotFoundError,
    VersionNotFoundError,
)
from cp_manage.manage.calls import enable_verbose
from cp_manage.manage.catalog import VersionSource
from cp_manage.manage.detached import DetachedSource
from cp_manage.manage.references import resolve_reference
from cp_manage.manage.repository import Repository
from cp_manage.manage.stages import (
    Decide,
    Proposal,
    StageEvent,
    StageLog,
    append_event,
    clean_message,
    parse_time,
    read_log,
    validate_stage_name,
)
from cp_manage.spec import ArtifactSpec
from cp_manage.versions import Kind

logger = logging.getLogger(__name__)

Mode = Literal["min", "max"]


@dataclass(frozen=True)
class StageResult:
    """What promote, demote or retire did: ``event`` is the event recorded, or (``created``
    False) the one that already said so, when there was nothing to record."""

    event: StageEvent
    created: bool


@dataclass
class ListEntry:
    """One row of a listing: a version (or, ``info.version`` None, an untagged upload), the
    stages holding it and, when retired, the event that retired it."""

    info: VersionInfo
    stages: list[str] = field(default_factory=list)
    retired: StageEvent | None = None

    def to_dict(self) -> dict[str, Any]:
        """The version's record (as ``show --json``) plus ``stages`` and ``retired``."""
        data = self.info.to_dict()
        data["stages"] = list(self.stages)
        data["retired"] = self.retired.to_dict() if self.retired else None
        return data


@dataclass(frozen=True)
class BestResult:
    """The best version by a metric; ``skipped`` names the versions without a usable value
    of it (version → why)."""

    version: str
    info: VersionInfo
    metric: str
    mode: Mode
    value: float
    skipped: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "metric": self.metric, "mode": self.mode,
                "value": self.value, "skipped": self.skipped, "info": self.info.to_dict()}


def metric_value(info: VersionInfo, metric: str) -> tuple[float | None, str]:
    """A version's value of ``metric`` as a finite number, or None and why not."""
    if metric not in info.metrics:
        return None, "no such metric"
    value = info.metrics[metric]
    if not is_finite_number(value):
        return None, f"not a finite number ({value!r})"
    return float(value), ""


class StageRegistry:
    """Stages, retirement, the best version and the full listing, for a manager with
    ``repo``, ``spec``, ``kind`` and ``version_source()``."""

    kind: Kind

    @property
    def repo(self) -> Repository:
        raise NotImplementedError

    @property
    def spec(self) -> ArtifactSpec:
        raise NotImplementedError

    def version_source(self, *, verbose: bool = False) -> VersionSource:
        raise NotImplementedError

    # -- recording -----------------------------------------------------------------------------

    def promote(self, version: str, stage: str, message: str | None = None, *,
                verbose: bool = False) -> StageResult:
        """Put ``version`` in ``stage``: record it as the next event, pushed in the same step.

        Args:
            version: a version, a stage (its current version) or a commit carrying a version.
            stage: ``[a-z][a-z0-9-]{0,31}``, such as ``production``.
            message: why (kept in the event).

        Returns:
            A StageResult; ``created`` is False when the stage already held that version.

        Raises:
            InvalidNameError, InvalidVersionError, VersionNotFoundError, StageNotFoundError,
            RetiredVersionError, NothingToDoError (an untagged upload), RemoteError.
        """
        enable_verbose(verbose)
        stage = validate_stage_name(stage)
        text = clean_message(message)
        repo, spec = self.repo, self.spec

        def decide(log: StageLog) -> Proposal | StageEvent:
            commit, info = resolve_reference(repo, spec, version, log=log)
            name = self._versioned(info, version)
            held = log.current().get(stage)
            if held is not None and held.version == name:
                return held
            gone = log.retired().get(name)
            if gone is not None:
                raise RetiredVersionError(
                    f"{name} was retired ({_why(gone)}), so it cannot be promoted",
                    hint=f"Promote another version; 'cpv {self.kind} list' shows those "
                    "that are not retired.")
            self._check_on_remote(str(info.tag))
            return Proposal("promote", stage, name, held.version if held else None, commit,
                            text)

        return self._record(decide)

    def demote(self, stage: str, message: str | None = None, *,
               verbose: bool = False) -> StageResult:
        """Empty ``stage``: record that it holds no version any more.

        Returns:
            A StageResult; ``created`` is False when the stage was already empty.

        Raises:
            InvalidNameError, StageNotFoundError (no event ever named the stage), RemoteError.
        """
        enable_verbose(verbose)
        stage = validate_stage_name(stage)
        text = clean_message(message)

        def decide(log: StageLog) -> Proposal | StageEvent:
            held = log.current().get(stage)
            if held is None:
                named = log.history(stage)
                if not named:
                    raise StageNotFoundError(stage, known=log.stages(), kind=self.kind)
                return named[-1]
            assert held.commit is not None
            return Proposal("demote", stage, None, held.version, held.commit, text)

        return self._record(decide)

    def retire(self, version: str, message: str | None = None, *,
               verbose: bool = False) -> StageResult:
        """Withdraw ``version``: it stays in history (its tag is kept) but is hidden from
        listings and ``best``, cannot be promoted, and its objects may be reclaimed by gc;
        ``cpv doctor --repair`` in any clone never uploads them again.

        Returns:
            A StageResult; ``created`` is False when it was already retired.

        Raises:
            InvalidVersionError, VersionNotFoundError, NothingToDoError (an untagged upload),
            CPVError: a stage holds it (demote it, or promote another version, first).
        """
        enable_verbose(verbose)
        text = clean_message(message)
        repo, spec = self.repo, self.spec

        def decide(log: StageLog) -> Proposal | StageEvent:
            commit, info = resolve_reference(repo, spec, version, log=log)
            name = self._versioned(info, version)
            gone = log.retired().get(name)
            if gone is not None:
                return gone
            holding = log.stages_of(name)
            if holding:
                raise CPVError(
                    f"{name} is in {', '.join(holding)}, so it cannot be retired",
                    hint=f"Promote another version to {holding[0]}, or 'cpv {self.kind} "
                    f"demote {holding[0]}', first.")
            self._check_on_remote(str(info.tag))
            return Proposal("retire", None, name, None, commit, text)

        return self._record(decide)

    def _record(self, decide: Decide) -> StageResult:
        repo = self.repo
        with repo.locked():
            event, created = append_event(repo, self.spec, decide)
        return StageResult(event, created)

    def _versioned(self, info: VersionInfo, given: str) -> str:
        if info.version is None:
            what = f"commit {info.commit[:10]}" if info.commit else given
            raise NothingToDoError(
                f"{what} is an upload without a version",
                hint=f"Give it one first: 'cpv {self.kind} tag VERSION --commit "
                f"{(info.commit or given)[:10]}'.")
        return info.version

    def _check_on_remote(self, tag: str) -> None:
        """A version exists on the remote or not at all: one left unpushed by a killed run is
        no version to record an event about."""
        if tag not in self.repo.remote_tags():
            raise VersionNotFoundError(
                f"{tag} (it is only in this clone: run 'cpv doctor --repair' to push it)",
                known=None, kind=self.kind)

    # -- reading -------------------------------------------------------------------------------

    def stage_log(self, *, verbose: bool = False) -> StageLog:
        """Every event of this artifact, fetched from the git remote (without a clone, from the
        mirror of its tags)."""
        enable_verbose(verbose)
        source = self.version_source()
        return read_log(source, source.spec(self.kind), fetch=True)

    def stages(self, *, at: str | datetime | None = None,
               verbose: bool = False) -> dict[str, str]:
        """Each stage holding a version → that version; with ``at`` (a datetime, or ISO 8601
        text: a date alone means the end of that day, UTC), as they were then."""
        log = self.stage_log(verbose=verbose)
        if at is None:
            return log.stages()
        return {stage: str(e.version) for stage, e in log.at(parse_moment(at)).items()}

    def stage_history(self, stage: str | None = None, *,
                      verbose: bool = False) -> list[StageEvent]:
        """Every promote, demote and retire in sequence order; with ``stage``, the promotes and
        demotes of that stage."""
        if stage is not None:
            validate_stage_name(stage)
        return self.stage_log(verbose=verbose).history(stage)

    def retired_versions(self, *, verbose: bool = False) -> dict[str, StageEvent]:
        """Each retired version → the event that retired it."""
        return self.stage_log(verbose=verbose).retired()

    def describe_version(self, version: str | None = None, *,
                         verbose: bool = False) -> ListEntry:
        """``metadata(version)`` with the stages holding the version and, when retired, the
        event that retired it (read fresh from the git remote)."""
        enable_verbose(verbose)
        source = self.version_source()
        spec = source.spec(self.kind)
        log = read_log(source, spec, fetch=True)
        info = resolve_reference(source, spec, version, log=log)[1]
        name = str(info.version)
        return ListEntry(info, log.stages_of(name) if info.version else [],
                         log.retired().get(name))

    def list_entries(self, *, all: bool = False, sort: str | None = None,
                     descending: bool = False, verbose: bool = False) -> list[ListEntry]:
        """The versions, oldest first, with their stages; retired ones only with ``all``, which
        also adds the uploads no tag names (oldest first, after the versions).

        Args:
            sort: a metric: order by its value (``descending`` for highest first); rows
                without a finite value of it come last, in their order.
        """
        enable_verbose(verbose)
        rows = self._entries(retired=all, uploads=all)
        if sort is not None:
            def key(row: ListEntry) -> tuple[bool, float]:
                value = metric_value(row.info, sort)[0]
                if value is None:
                    return True, 0.0
                return False, -value if descending else value

            rows.sort(key=key)  # stable: equal values keep their order
        return rows

    def _entries(self, *, retired: bool, uploads: bool) -> list[ListEntry]:
        source = self.version_source()
        spec = source.spec(self.kind)
        versions = source.versions(spec)
        for tag, why in source.catalog.skipped.items():
            logger.warning("Skipping %s: %s", tag, why)
        log = StageLog(source.catalog.git, spec)  # the tags just fetched with the versions
        stages, gone = log.stages(), log.retired()
        rows = [ListEntry(info, [s for s, v in stages.items() if v == info.version],
                          gone.get(str(info.version)))
                for info in versions if retired or info.version not in gone]
        if uploads:
            tagged = {i.commit for i in versions}
            revs = ["--tags"] if isinstance(source, DetachedSource) else ["HEAD"]
            rows += [ListEntry(info) for info in source.catalog.uploads(spec, revs)
                     if info.commit not in tagged]
        return rows

    def list_versions(self, *, include_retired: bool = False,
                      verbose: bool = False) -> list[VersionInfo]:
        """Every version, oldest first, with metadata, from git alone (without a clone, from
        the git remote); retired versions only with ``include_retired``."""
        enable_verbose(verbose)
        return [row.info for row in self._entries(retired=include_retired, uploads=False)]

    def best(self, metric: str, mode: Mode = "min", *, verbose: bool = False) -> BestResult:
        """The version with the lowest (``mode="min"``) or highest (``"max"``) value of
        ``metric``, among those not retired; versions without a finite value of it are skipped
        (``skipped``, and logged). Of equal values the newest version wins.

        Raises:
            CPVError: a dataset has no metrics, or ``mode`` is neither min nor max.
            NothingToDoError: no version has a value of ``metric``.
        """
        enable_verbose(verbose)
        if mode not in ("min", "max"):
            raise CPVError(f"mode must be 'min' or 'max', not {mode!r}")
        if not self.version_source().spec(self.kind).records_metrics:
            raise CPVError("A dataset has no metrics", hint="Ask for the best model: "
                           "'cpv model best METRIC --min'.")
        rows = self._entries(retired=False, uploads=False)
        skipped: dict[str, str] = {}
        best: tuple[float, VersionInfo] | None = None
        for row in rows:
            value, why = metric_value(row.info, metric)
            if value is None:
                skipped[str(row.info.version)] = why
                continue
            better = best is None or (value <= best[0] if mode == "min" else value >= best[0])
            if better:
                best = (value, row.info)
        for version, why in skipped.items():
            logger.info("Skipping %s for %s: %s", version, metric, why)
        if best is None:
            raise NothingToDoError(
                f"No {self.kind} version has a value of {metric!r}" if rows else
                f"There is no {self.kind} version yet",
                hint=f"'cpv {self.kind} list' shows the metrics each version has.")
        value, info = best
        return BestResult(str(info.version), info, metric, mode, value, skipped)


def _why(event: StageEvent) -> str:
    said = f": {event.message.splitlines()[0]}" if event.message else ""
    return f"{event.tag}, {event.created_at} by {event.author}{said}"


def parse_moment(value: str | datetime) -> datetime:
    """A moment given by the user: a datetime, or ISO 8601 text; a date alone (``2025-03-03``)
    means the end of that day, and a time without a zone means UTC.

    Raises:
        CPVError: the text is no date.
    """
    if isinstance(value, datetime):
        return value
    text = value.strip()
    if len(text) == 10:
        day = parse_time(f"{text}T23:59:59.999999")
        if day is not None:
            return day
    moment = parse_time(text)
    if moment is None:
        raise CPVError(f"{value!r} is not a date",
                       hint="Give a date such as 2025-03-03 or 2025-03-03T14:00:00Z (UTC).")
    return moment
