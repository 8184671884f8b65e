"""Stages and retirements: an append-only, totally ordered log of annotated git tags.

Every promote, demote and retire of an artifact is one annotated tag in one sequence of its
own: ``stage/000001``, ``stage/000002``, ... for the model and ``data/stage/000001``, ... for the
data. The tag's name is its sequence slot, taken exactly as a version number is: the next free
number after those fetched from the git remote, pushed alone in one atomic push; when another
clone took that slot first the push is refused, and the log is read again and the next number
taken. So every event is recorded once, every clone sees the same order, and a stage's current
version is that of the last event naming it.

The tag points at the commit of the version it names (for a demote, the version the stage
held), and its annotation is a subject line a person can read (``git tag -n1 'stage/*'``:
"promote v1.2 to production (replacing v1.1)"), the message, and one line ``cpv-event: {JSON}``
with the fields of ``StageEvent``. Nothing here rewrites or deletes a pushed tag.

The read API (``StageLog``, ``stage_events``, ``current_stages``, ``retired``) reads the tags of
a clone (a ``Repository``), of the bare mirror a machine without a clone reads from (a
``DetachedSource``), or of the ``Catalog`` of either; ``refresh`` (or ``fetch=True``) first
brings them in step with the git remote.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any, Literal, TypeAlias

from cp_manage._version import __version__
from cp_manage.backends.git import Git, TagRecord
from cp_manage.errors import (
    ConcurrentModificationError,
    CPVError,
    InvalidNameError,
    RemoteError,
)
from cp_manage.manage.catalog import Catalog, VersionSource
from cp_manage.manage.detached import DetachedSource
from cp_manage.manage.repository import (
    TAG_ATTEMPTS,
    Repository,
    backoff,
    is_lost_race,
    utc_now,
)
from cp_manage.spec import ArtifactSpec

logger = logging.getLogger(__name__)

Action = Literal["promote", "demote", "retire"]
ACTIONS: tuple[Action, ...] = ("promote", "demote", "retire")
EVENT_FOLDER = "stage/"
"""Below the artifact's tag prefix: ``stage/000007`` (model), ``data/stage/000007`` (data)."""
EVENT_MARKER = "cpv-event: "
SEQ_DIGITS = 6
MAX_MESSAGE = 4000

_STAGE_RE = re.compile(r"[a-z][a-z0-9-]{0,31}")
_VERSION_LIKE = re.compile(r"(data/)?[vV]?[0-9]+(\.[0-9]+)*|v[0-9][a-z0-9.-]*", re.S)
_HEX = re.compile(r"[0-9a-f]+")
MIN_COMMIT_DIGITS = 4
"""The shortest commit hash a version argument may be (git's own minimum)."""
RESERVED_STAGES = frozenset({
    "all", "current", "data", "head", "latest", "model", "none", "null", "retired", "stage",
    "stages", "version", "versions"})
"""Words a command reads in place of a version, or that would read as one."""
_STAGE_HINT = ("A stage name is 1 to 32 lowercase letters, digits and '-', starting with a "
               "letter, such as production, staging or canary-eu; not a version (v1, v1.0), "
               "not 4 or more of only a-f and digits (it would read as a commit), and not "
               f"one of {', '.join(sorted(RESERVED_STAGES))}.")


def validate_stage_name(name: object) -> str:
    """Check a stage name and return it.

    Raises:
        InvalidNameError: saying why, with what a stage name looks like.
    """
    if not isinstance(name, str) or not name:
        raise InvalidNameError("The stage name is empty", hint=_STAGE_HINT)
    shown = repr(name[:40])
    if name.startswith("-"):
        raise InvalidNameError(f"The stage name {shown} looks like an option", hint=_STAGE_HINT)
    if _VERSION_LIKE.fullmatch(name):
        raise InvalidNameError(f"The stage name {shown} looks like a version", hint=_STAGE_HINT)
    if not _STAGE_RE.fullmatch(name):
        why = ("uses uppercase letters" if _STAGE_RE.fullmatch(name.lower()) else
               "is longer than 32 characters" if len(name) > 32 and _STAGE_RE.fullmatch(
                   name[:32]) else "is not a valid stage name")
        raise InvalidNameError(f"The stage name {shown} {why}", hint=_STAGE_HINT)
    if is_commit_prefix(name):
        raise InvalidNameError(f"The stage name {shown} looks like a commit hash",
                               hint=_STAGE_HINT)
    if name in RESERVED_STAGES:
        raise InvalidNameError(f"The stage name {shown} is reserved", hint=_STAGE_HINT)
    return name


def is_commit_prefix(text: object) -> bool:
    """Whether ``text`` reads as (the start of) a commit hash: 4 to 64 of ``0-9a-f``."""
    return isinstance(text, str) and MIN_COMMIT_DIGITS <= len(text) <= 64 and bool(
        _HEX.fullmatch(text))


def is_stage_name(text: object) -> bool:
    """Whether ``text`` is a valid stage name (never raises)."""
    try:
        validate_stage_name(text)
    except InvalidNameError:
        return False
    return True


def event_tag(spec: ArtifactSpec, seq: int) -> str:
    """The tag of event number ``seq``: ``stage/000007`` (model), ``data/stage/000007``."""
    return f"{spec.tag_prefix}{EVENT_FOLDER}{seq:0{SEQ_DIGITS}d}"


def seq_of(spec: ArtifactSpec, tag: str) -> int | None:
    """The sequence number a tag name stands for, or None when it is not an event slot."""
    head = f"{spec.tag_prefix}{EVENT_FOLDER}"
    if not tag.startswith(head):
        return None
    digits = tag[len(head):]
    if len(digits) < SEQ_DIGITS or not digits.isascii() or not digits.isdigit():
        return None
    return int(digits)


def clean_message(message: str | None) -> str:
    """A message as an event records it: control characters other than newline and tab are
    dropped, surrounding blank space trimmed.

    Raises:
        CPVError: longer than ``MAX_MESSAGE`` characters.
    """
    if message is None:
        return ""
    if not isinstance(message, str):
        raise CPVError(f"The message must be text, not {type(message).__name__}")
    text = "".join(c for c in message if c in "\n\t" or c.isprintable())
    text = text.strip()
    if len(text) > MAX_MESSAGE:
        raise CPVError(f"The message is {len(text)} characters long, more than {MAX_MESSAGE}",
                       hint="Keep it to a few lines; put long notes in the repository.")
    return text


@dataclass(frozen=True)
class StageEvent:
    """One promote, demote or retire, as its tag records it.

    Attributes:
        seq: its place in the artifact's sequence (the number in its tag's name).
        tag: the tag (``stage/000007``, ``data/stage/000007``).
        action: ``promote``, ``demote`` or ``retire``.
        stage: the stage (None for a retire).
        version: the version promoted or retired (None for a demote).
        replaced: the version the stage held before (None when it held none, or a retire).
        commit: the commit the tag points at: the version's (for a demote, the version the
            stage held).
        author: who (git's ``Name <email>``).
        created_at: when, UTC ISO 8601, by the clock of the machine that made it; the order
            is ``seq``'s.
        message: why, as given (may be empty).
        kind: ``model`` or ``data``.
        cpv_version: the cpv that wrote it.
    """

    seq: int
    tag: str
    action: Action
    stage: str | None
    version: str | None
    replaced: str | None
    commit: str | None
    author: str
    created_at: str
    message: str
    kind: str
    cpv_version: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def summary(self) -> str:
        """The subject line of the tag: what happened, in words."""
        if self.action == "retire":
            return f"retire {self.version}"
        if self.action == "demote":
            return f"demote {self.stage} (was {self.replaced})"
        replacing = f" (replacing {self.replaced})" if self.replaced else ""
        return f"promote {self.version} to {self.stage}{replacing}"

    def annotation(self) -> str:
        """The tag's message: the summary, the message, then the machine-readable line."""
        stored = {k: v for k, v in self.to_dict().items() if k not in ("seq", "tag", "commit")}
        body = f"\n\n{self.message}" if self.message else ""
        return f"{self.summary}{body}\n\n{EVENT_MARKER}{json.dumps(stored, sort_keys=True)}\n"

    @property
    def when(self) -> datetime | None:
        """``created_at`` as an aware datetime (None when it is not a timestamp)."""
        return parse_time(self.created_at)


def parse_time(text: str) -> datetime | None:
    """An ISO 8601 timestamp (``Z`` or an offset; none means UTC) as an aware datetime."""
    try:
        parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except (AttributeError, ValueError):
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _event_from_tag(spec: ArtifactSpec, record: TagRecord, seq: int) -> StageEvent:
    """Read one event tag.

    Raises:
        ValueError: the tag is not a well-formed event of ``spec``'s artifact.
    """
    lines = [line for line in record.contents.splitlines() if line.startswith(EVENT_MARKER)]
    if not lines:
        raise ValueError("not a cpv event (no cpv-event line)")
    raw = json.loads(lines[-1][len(EVENT_MARKER):])
    if not isinstance(raw, dict):
        raise ValueError("its cpv-event line is not a JSON object")
    action, stage, version = raw.get("action"), raw.get("stage"), raw.get("version")
    replaced = raw.get("replaced")
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}")
    if raw.get("kind", spec.kind) != spec.kind:
        raise ValueError(f"an event of the {raw.get('kind')}, not the {spec.kind}")
    if action == "retire":
        stage = None
    else:
        validate_stage_name(stage)
    if action == "demote":
        version = None
    else:
        version = str(spec.parse(version))
    if replaced is not None:
        replaced = str(spec.parse(replaced))
    texts = {key: raw.get(key, "") for key in ("author", "created_at", "message", "cpv_version")}
    if not all(isinstance(value, str) for value in texts.values()):
        raise ValueError("a text field is not text")
    return StageEvent(seq=seq, tag=record.name, action=action, stage=stage, version=version,
                      replaced=replaced, commit=record.commit or None, author=texts["author"],
                      created_at=texts["created_at"], message=texts["message"],
                      kind=spec.kind, cpv_version=texts["cpv_version"])


class StageLog:
    """The events of one artifact held by the tags of a git directory, in sequence order.

    Reads the tags once, when first asked; nothing here fetches or writes (see ``refresh``).
    """

    def __init__(self, git: Git, spec: ArtifactSpec) -> None:
        self.git = git
        self.spec = spec
        self.skipped: dict[str, str] = {}
        """Tags in the event folder that are not readable events (and why); they still hold
        their slot."""
        self._events: list[StageEvent] | None = None
        self._last_slot = 0

    @property
    def events(self) -> list[StageEvent]:
        """Every readable event, in sequence order."""
        if self._events is None:
            self._events = self._read()
        return self._events

    def _read(self) -> list[StageEvent]:
        events: list[StageEvent] = []
        pattern = f"{self.spec.tag_prefix}{EVENT_FOLDER}*"
        for record in self.git.tags(pattern):
            seq = seq_of(self.spec, record.name)
            if seq is None:
                continue
            self._last_slot = max(self._last_slot, seq)
            try:
                events.append(_event_from_tag(self.spec, record, seq))
            except (ValueError, CPVError) as e:
                self.skipped[record.name] = str(e)
        # Lightweight tags (Git.tags leaves them out) still take a slot.
        names = self.git.out("for-each-ref", "--format=%(refname:strip=2)",
                             f"refs/tags/{self.spec.tag_prefix}{EVENT_FOLDER}").split()
        read = {event.tag for event in events} | set(self.skipped)
        for name in names:
            seq = seq_of(self.spec, name)
            if seq is not None:
                self._last_slot = max(self._last_slot, seq)
                if name not in read:
                    self.skipped[name] = "not an annotated tag"
        for tag, why in self.skipped.items():
            logger.warning("Ignoring %s: %s", tag, why)
        return sorted(events, key=lambda e: e.seq)

    @property
    def last_seq(self) -> int:
        """The highest slot taken (0 when there is none), readable events or not."""
        _ = self.events
        return self._last_slot

    def current(self, *, upto: int | None = None) -> dict[str, StageEvent]:
        """Each stage that holds a version → the promote that put it there, after the events
        up to sequence number ``upto`` (all when None); sorted by stage name."""
        held: dict[str, StageEvent] = {}
        for event in self.events:
            if upto is not None and event.seq > upto:
                break
            if event.stage is None:
                continue
            if event.action == "promote":
                held[event.stage] = event
            else:
                held.pop(event.stage, None)
        return dict(sorted(held.items()))

    def stages(self) -> dict[str, str]:
        """Each stage that holds a version → that version."""
        return {stage: str(event.version) for stage, event in self.current().items()}

    def stages_of(self, version: str) -> list[str]:
        """The stages that hold ``version`` now, by name."""
        return [stage for stage, held in self.stages().items() if held == version]

    def retired(self) -> dict[str, StageEvent]:
        """Each retired version → the event that retired it (a version is retired once)."""
        found: dict[str, StageEvent] = {}
        for event in self.events:
            if event.action == "retire" and event.version is not None:
                found.setdefault(event.version, event)
        return found

    def history(self, stage: str | None = None) -> list[StageEvent]:
        """Every event in order; with ``stage``, the promotes and demotes of that stage."""
        return [e for e in self.events if stage is None or e.stage == stage]

    def known_stages(self) -> list[str]:
        """Every stage any event ever named, by name."""
        return sorted({e.stage for e in self.events if e.stage is not None})

    def at(self, when: datetime) -> dict[str, StageEvent]:
        """The stages as they were at ``when`` (naive means UTC): after the events, in sequence
        order, up to the first one made later than ``when``.

        Timestamps come from the clocks of the machines that made the events, so they need not
        grow with the sequence; a prefix of the sequence is a state that existed, and no event
        stamped later than ``when`` counts.
        """
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        upto = 0
        for event in self.events:
            made = event.when
            if made is not None and made > when:
                break
            upto = event.seq
        return self.current(upto=upto)


EventSource: TypeAlias = "VersionSource | Catalog"
"""Where events are read: a clone (``Repository``), a mirror (``DetachedSource``), or the
``Catalog`` of either."""


def _git_of(source: EventSource) -> Git:
    return source.git if isinstance(source, Catalog) else source.catalog.git


def refresh(source: EventSource, spec: ArtifactSpec, *, strict: bool = False) -> None:
    """Bring the events of ``source`` in step with the git remote.

    A clone fetches the remote's event tags over its own (``--prune``: a tag the remote lacks,
    left by a killed run, is no event, and goes); a mirror fetches every tag. Offline, reading
    goes on with the events known here, with a warning, unless ``strict``.

    Raises:
        RemoteError: with ``strict``, the remote cannot be read.
    """
    try:
        if isinstance(source, DetachedSource):
            source.refresh()
        elif isinstance(source, Repository):
            folder = f"refs/tags/{spec.tag_prefix}{EVENT_FOLDER}"
            source.git.fetch("--prune", f"+{folder}*:{folder}*")
    except RemoteError as e:
        if strict:
            raise
        logger.warning("Could not fetch stages from the git remote (%s); showing those known "
                       "here", e.message)


def read_log(source: EventSource, spec: ArtifactSpec, *, fetch: bool = False) -> StageLog:
    """The event log of ``spec``'s artifact in ``source`` (after ``refresh`` with ``fetch``)."""
    if fetch:
        refresh(source, spec)
    return StageLog(_git_of(source), spec)


def stage_events(source: EventSource, spec: ArtifactSpec, *, fetch: bool = False
                 ) -> list[StageEvent]:
    """Every promote, demote and retire of ``spec``'s artifact, in sequence order."""
    return read_log(source, spec, fetch=fetch).events


def current_stages(source: EventSource, spec: ArtifactSpec, *, fetch: bool = False
                   ) -> dict[str, str]:
    """Each stage that holds a version → that version."""
    return read_log(source, spec, fetch=fetch).stages()


def retired(source: EventSource, spec: ArtifactSpec, *, fetch: bool = False
            ) -> dict[str, StageEvent]:
    """Each retired version → the event that retired it."""
    return read_log(source, spec, fetch=fetch).retired()


@dataclass(frozen=True)
class Proposal:
    """An event to record: what ``append_event``'s ``decide`` returns."""

    action: Action
    stage: str | None
    version: str | None
    replaced: str | None
    commit: str
    message: str


Decide = Callable[[StageLog], "Proposal | StageEvent"]
"""Given the log as the remote has it now, the event to record, or the event that already
says so (nothing to record)."""


def append_event(repo: Repository, spec: ArtifactSpec, decide: Decide) -> tuple[StageEvent, bool]:
    """Record the event ``decide`` proposes as the next tag of the sequence, pushed alone.

    ``decide`` runs on the log just fetched from the remote, so it sees every event recorded
    so far; it may raise to refuse. When another clone takes the slot first, the log is read
    again and ``decide`` runs again (the event may have become unnecessary, or impossible).

    Returns:
        The event and True, or the event ``decide`` found already saying so and False.

    Raises:
        RemoteError: the remote cannot be reached or refused the tag; nothing is recorded.
        ConcurrentModificationError: every one of ``TAG_ATTEMPTS`` attempts lost a race.
    """
    for attempt in range(TAG_ATTEMPTS):
        refresh(repo, spec, strict=True)
        log = StageLog(repo.git, spec)
        proposal = decide(log)
        if isinstance(proposal, StageEvent):
            return proposal, False
        seq = log.last_seq + 1
        event = StageEvent(
            seq=seq, tag=event_tag(spec, seq), action=proposal.action, stage=proposal.stage,
            version=proposal.version, replaced=proposal.replaced, commit=proposal.commit,
            author=repo.author(), created_at=utc_now(), message=proposal.message,
            kind=spec.kind, cpv_version=__version__)
        try:
            _push_event(repo, event)
        except CPVError as e:
            if not is_lost_race(e):
                raise
            if attempt + 1 == TAG_ATTEMPTS:
                raise ConcurrentModificationError(
                    f"Gave up after {TAG_ATTEMPTS} lost races for the next stage event",
                    hint="Many clones are changing stages at once; run the command again.") from e
            logger.info("%s was taken meanwhile; reading the stages again", event.tag)
            backoff(attempt)
            continue
        logger.info("Recorded %s: %s", event.tag, event.summary)
        return event, True
    raise AssertionError("unreachable")


def _push_event(repo: Repository, event: StageEvent) -> None:
    """Push the event's tag alone, then record it here (``Git.push_new_tag``): a run killed at
    any point leaves no local tag the remote lacks."""
    assert event.commit is not None
    repo.git.push_new_tag(event.tag, event.annotation(), event.commit)
