"""The record of each gc run: an append-only annotated tag ``gc/000001``, ``gc/000002``, ...

Each run that removes something is recorded before it deletes: who, when, with which options,
and every upload (by version and commit) and object it removes. The tag's name is its slot in
one sequence per repository, taken the way stage events take theirs: the next number after
those fetched from the git remote, pushed alone in one atomic push; when another clone took
the slot first the push is refused and the next number is tried. The tag points at the branch
tip of the time (a tag must name a commit; gc never keeps anything because of its own
records), and its annotation is a line a person can read (``git tag -n1 'gc/*'``) and one line
``cpv-gc: {JSON}``.

``find_removal`` answers the question a failed download asks: did gc remove this, and when?
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from cp_manage._version import __version__
from cp_manage.backends.git import Git, TagRecord
from cp_manage.errors import ConcurrentModificationError, CPVError, StorageError
from cp_manage.manage.repository import TAG_ATTEMPTS, Repository, backoff, is_lost_race, utc_now

logger = logging.getLogger(__name__)

RECORD_FOLDER = "gc/"
RECORD_MARKER = "cpv-gc: "
SEQ_DIGITS = 6


def upload_label(versions: list[str], retired: list[str], commits: list[str], oid: str) -> str:
    """How an upload is named to a person: its versions (``v0.1 (retired)``), else the commit
    that recorded it (``commit 1a2b3c4d5e``), else its object id."""
    if versions:
        return ", ".join(f"{v} (retired)" if v in retired else v for v in versions)
    return f"commit {commits[0][:10]}" if commits else oid


@dataclass(frozen=True)
class RemovedUpload:
    """One upload gc removes (or would): the artifact a pointer names, the versions whose tags
    name it, the commits that recorded it, and the objects of it that go.

    Attributes:
        kind: ``model`` or ``data``.
        oid: the pointer's object id (for a folder, its ``.dir`` listing).
        versions: the version tags naming it (kept: history stays true).
        retired: those of ``versions`` that were retired.
        commits: the commits that recorded it, oldest first.
        objects: the object ids of it removed from storage (a shared object is counted with
            the oldest upload that goes).
        size_bytes: their total size in storage.
    """

    kind: str
    oid: str
    versions: list[str]
    retired: list[str]
    commits: list[str]
    objects: list[str]
    size_bytes: int

    @property
    def label(self) -> str:
        """``v0.1 (retired)``, or ``commit 1a2b3c4d5e`` for an upload without a version."""
        return upload_label(self.versions, self.retired, self.commits, self.oid)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class GCRecord:
    """One gc run as its tag records it.

    Attributes:
        seq: its place in the sequence (the number in its tag's name).
        tag: ``gc/000007``.
        author: who ran it (git's ``Name <email>``).
        created_at: when, UTC ISO 8601.
        options: what it was asked (keep_last, grace_seconds, kinds, include_unreferenced).
        uploads: what it removed, upload by upload.
        unreferenced: objects no commit referred to that it removed (only when asked to).
        object_count, size_bytes: everything it removed from storage.
        cpv_version: the cpv that ran it.
    """

    seq: int
    tag: str
    author: str
    created_at: str
    options: dict[str, Any]
    uploads: list[RemovedUpload]
    unreferenced: list[str] = field(default_factory=list)
    object_count: int = 0
    size_bytes: int = 0
    cpv_version: str = __version__

    @property
    def summary(self) -> str:
        """The subject line: what the run removed, in words."""
        count = len(self.uploads)
        extra = f" and {len(self.unreferenced)} unreferenced" if self.unreferenced else ""
        return (f"gc: removed {count} upload{'' if count == 1 else 's'}{extra} "
                f"({self.object_count} objects, {self.size_bytes} bytes)")

    def annotation(self) -> str:
        """The tag's message: the summary, one line per upload, then the machine-readable
        line."""
        stored = {k: v for k, v in self.to_dict().items() if k not in ("seq", "tag")}
        parts = [self.summary]
        if self.uploads:
            parts.append("\n".join(f"{u.kind} {u.label}" for u in self.uploads))
        parts.append(f"{RECORD_MARKER}{json.dumps(stored, sort_keys=True)}")
        return "\n\n".join(parts) + "\n"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["uploads"] = [u.to_dict() for u in self.uploads]
        return data

    def removal_of(self, *, oid: str | None = None, commit: str | None = None
                   ) -> RemovedUpload | None:
        """The upload of this run that was artifact ``oid``, or recorded by ``commit``."""
        for upload in self.uploads:
            if (oid is not None and upload.oid == oid) or (
                    commit is not None and commit in upload.commits):
                return upload
        return None

    def removed_object(self, oid: str) -> bool:
        return oid in self.unreferenced or any(oid in u.objects for u in self.uploads)


def record_tag(seq: int) -> str:
    return f"{RECORD_FOLDER}{seq:0{SEQ_DIGITS}d}"


def seq_of(tag: str) -> int | None:
    digits = tag.removeprefix(RECORD_FOLDER)
    if digits == tag or len(digits) < SEQ_DIGITS or not digits.isascii() or not digits.isdigit():
        return None
    return int(digits)


def _record_from_tag(record: TagRecord, seq: int) -> GCRecord:
    """Raises ValueError (or TypeError, KeyError) when the tag is not a readable record."""
    lines = [line for line in record.contents.splitlines() if line.startswith(RECORD_MARKER)]
    if not lines:
        raise ValueError("no cpv-gc line")
    raw = json.loads(lines[-1][len(RECORD_MARKER):])
    uploads = [RemovedUpload(**{k: u[k] for k in RemovedUpload.__dataclass_fields__})
               for u in raw.get("uploads", [])]
    return GCRecord(seq=seq, tag=record.name, author=str(raw.get("author", "")),
                    created_at=str(raw.get("created_at", "")),
                    options=dict(raw.get("options", {})), uploads=uploads,
                    unreferenced=list(raw.get("unreferenced", [])),
                    object_count=int(raw.get("object_count", 0)),
                    size_bytes=int(raw.get("size_bytes", 0)),
                    cpv_version=str(raw.get("cpv_version", "")))


def read_records(git: Git) -> tuple[list[GCRecord], int]:
    """Every readable gc record of a git directory in sequence order, and the highest slot
    taken (readable or not)."""
    records, last = [], 0
    for tag in git.tags(f"{RECORD_FOLDER}*"):
        seq = seq_of(tag.name)
        if seq is None:
            continue
        last = max(last, seq)
        try:
            records.append(_record_from_tag(tag, seq))
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            logger.warning("Ignoring %s: not a readable gc record (%s)", tag.name, e)
    names = git.out("for-each-ref", "--format=%(refname:strip=2)", f"refs/tags/{RECORD_FOLDER}")
    for name in names.split():  # a lightweight tag still takes its slot
        last = max(last, seq_of(name) or 0)
    return sorted(records, key=lambda r: r.seq), last


def find_removal(git: Git, *, oid: str, objects: list[str] | None = None
                 ) -> tuple[GCRecord, RemovedUpload | None] | None:
    """The latest gc record that removed artifact ``oid`` (its upload), or else one of
    ``objects``; None when no record of this git directory says so."""
    for record in reversed(read_records(git)[0]):
        upload = record.removal_of(oid=oid)
        if upload is not None or any(record.removed_object(o) for o in [oid, *(objects or [])]):
            return record, upload
    return None


def fetch_records(repo: Repository) -> None:
    """Bring this clone's gc records in step with the git remote (the remote's only)."""
    folder = f"refs/tags/{RECORD_FOLDER}"
    repo.git.fetch("--prune", f"+{folder}*:{folder}*")


def push_record(repo: Repository, record: GCRecord, target: str) -> GCRecord:
    """Record a run as the next tag of the sequence, on commit ``target``, pushed alone.

    Returns:
        The record with its slot (``seq`` and ``tag``).

    Raises:
        RemoteError: the remote cannot be reached or refused it; nothing is recorded.
        ConcurrentModificationError: every one of ``TAG_ATTEMPTS`` attempts lost a race.
    """
    for attempt in range(TAG_ATTEMPTS):
        fetch_records(repo)
        seq = read_records(repo.git)[1] + 1
        placed = replace(record, seq=seq, tag=record_tag(seq), author=repo.author(),
                         created_at=utc_now())
        try:
            # On the remote first, or nowhere: a killed run leaves no local tag for the next
            # 'git fetch --tags' to refuse.
            repo.git.push_new_tag(placed.tag, placed.annotation(), target)
        except CPVError as e:
            if not is_lost_race(e):
                raise
            if attempt + 1 == TAG_ATTEMPTS:
                raise ConcurrentModificationError(
                    f"Gave up after {TAG_ATTEMPTS} lost races for the next gc record",
                    hint="Several clones are running gc at once; run it again.") from e
            backoff(attempt)
            continue
        logger.info("Recorded %s: %s", placed.tag, placed.summary)
        return placed
    raise AssertionError("unreachable")


def removal_error(source: object, git: Git, *, kind: str, oid: str, label: str
                  ) -> StorageError | None:
    """The error to raise when fetching artifact ``oid`` (``label``: its version or commit)
    failed because a gc run removed it, naming that run; None when no gc record says so.

    ``source`` is where it was read: a clone fetches the remote's records first (a teammate's
    gc); a mirror has fetched every tag already.
    """
    if isinstance(source, Repository):
        try:
            fetch_records(source)
        except CPVError as e:
            logger.info("Could not fetch the gc records: %s", e)
    found = find_removal(git, oid=oid)
    if found is None:
        return None
    record, _ = found
    when = record.created_at.replace("T", " ").replace("Z", " UTC")
    return StorageError(
        f"The {kind} {label} was removed by gc on {when} by {record.author} ({record.tag}), "
        "so storage no longer holds it",
        hint=f"'git show {record.tag}' lists what that run removed; 'cpv {kind} list' shows "
        "the versions gc keeps.")
