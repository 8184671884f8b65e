"""What gc would remove: the objects that only uploads nobody needs refer to. Reads git and
storage, changes nothing.

An upload is one artifact a pointer names (a file, or a folder: its ``.dir`` listing plus every
object the listing names), of the model or of the data, with the commits that recorded it and
the version tags that name it. Every commit of every local ref (which after gc's fetch include
the git remote's branches and tags) is read.

A commit is *kept* when it is
- the commit of a version that is not retired (model or data),
- the commit of a stage's current version,
- one of the last N uploads (of either artifact) on the branch, as the git remote has it,
- a branch tip (the remote's, or a local one) or HEAD, or
- named by a tag cpv did not write (a tag of the team's own);
and every pointer of a kept commit is kept (model *and* data), so stock ``dvc pull`` of any kept
tag works. Everything a kept upload refers to stays, so an object shared with a kept version is
never removed. Of the rest, an object in storage goes unless storage wrote it within the grace
period (a teammate's upload whose commit is not pushed yet), or a folder listing that stays in
storage names it (storage never holds a listing without its files). Objects no commit refers to
at all stay, unless ``include_unreferenced`` (and they are older than the grace period).
"""

from __future__ import annotations

import logging
import math
import re
import tempfile
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from cp_manage.backends.objects import ObjectId, StoredObject
from cp_manage.backends.pointer import Pointer, parse_pointer
from cp_manage.errors import CPVError, PointerError
from cp_manage.fsutil import md5_file
from cp_manage.manage.dataset import parse_listing
from cp_manage.manage.gc_record import RECORD_FOLDER, RemovedUpload, upload_label
from cp_manage.manage.repository import Repository
from cp_manage.manage.stages import EVENT_FOLDER, StageLog
from cp_manage.spec import DATA, ArtifactSpec
from cp_manage.versions import Kind

logger = logging.getLogger(__name__)

KEEP_LAST = 3
GRACE = timedelta(hours=24)
KINDS: tuple[Kind, ...] = ("model", "data")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION_RE = re.compile(r"(?:(\d+(?:\.\d+)?)([smhdw]))+")
_PART_RE = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_DURATION_HINT = ("Give a number with a unit: 30m, 24h, 7d, 1h30m (s, m, h, d, w); 0 means "
                  "no grace period.")


def parse_duration(value: str | float | timedelta) -> timedelta:
    """A grace period: a timedelta, seconds, or text such as ``24h``, ``7d``, ``1h30m``, ``0``.

    Raises:
        CPVError: negative, not finite, or text that is no duration (``5x``, ``24``).
    """
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower()
        if text in ("0", "0s"):
            seconds = 0.0
        elif _DURATION_RE.fullmatch(text):
            seconds = sum(float(n) * _UNITS[u] for n, u in _PART_RE.findall(text))
        else:
            raise CPVError(f"{value[:40]!r} is not a duration", hint=_DURATION_HINT)
    else:
        raise CPVError(f"A grace period must be a duration, not {type(value).__name__}",
                       hint=_DURATION_HINT)
    if not math.isfinite(seconds) or seconds < 0 or seconds > 100 * 365 * 86400:
        raise CPVError(f"{value!r} is not a usable grace period", hint=_DURATION_HINT)
    return timedelta(seconds=seconds)


@dataclass(frozen=True)
class GCOptions:
    """What gc keeps beyond versions, stages and branch tips, and what it may collect.

    Attributes:
        keep_last: the last N uploads of each artifact on the branch are kept.
        grace: objects storage wrote more recently than this are kept.
        include_unreferenced: also remove objects no commit refers to (older than ``grace``).
        kinds: whose uploads may be removed (the other artifact's are all kept).
    """

    keep_last: int = KEEP_LAST
    grace: timedelta = GRACE
    include_unreferenced: bool = False
    kinds: tuple[Kind, ...] = KINDS

    @classmethod
    def make(cls, *, keep_last: int = KEEP_LAST, grace: str | float | timedelta = GRACE,
             include_unreferenced: bool = False, kinds: tuple[Kind, ...] = KINDS) -> GCOptions:
        """Checked options.

        Raises:
            CPVError: ``keep_last`` is not a whole number >= 0, or ``grace`` no duration.
        """
        if isinstance(keep_last, bool) or not isinstance(keep_last, int) or keep_last < 0:
            raise CPVError(f"keep_last must be a whole number of uploads, 0 or more, not "
                           f"{keep_last!r}", hint="The default keeps the last 3.")
        if not kinds or any(kind not in KINDS for kind in kinds):
            raise CPVError(f"kinds must name model and/or data, not {kinds!r}")
        return cls(keep_last, parse_duration(grace), bool(include_unreferenced), tuple(kinds))

    def to_dict(self) -> dict[str, Any]:
        return {"keep_last": self.keep_last, "grace_seconds": self.grace.total_seconds(),
                "include_unreferenced": self.include_unreferenced, "kinds": list(self.kinds)}


@dataclass
class Upload:
    """One artifact some commit recorded, and why it is kept (``keep`` empty: nobody needs it).

    ``objects`` is None when it is a folder whose listing cannot be read (from the local cache
    or storage)."""

    kind: Kind
    pointer: Pointer
    commits: list[str] = field(default_factory=list)
    versions: list[str] = field(default_factory=list)
    retired: list[str] = field(default_factory=list)
    keep: list[str] = field(default_factory=list)
    objects: frozenset[str] | None = None

    @property
    def oid(self) -> str:
        return self.pointer.oid

    @property
    def label(self) -> str:
        return upload_label(self.versions, self.retired, self.commits, self.oid)

    def removed(self, objects: list[str], size: int) -> RemovedUpload:
        return RemovedUpload(self.kind, self.oid, list(self.versions), list(self.retired),
                             list(self.commits), objects, size)


class ListingReader:
    """The object ids a folder listing names, from the local cache, else from storage (into a
    temporary file: reading changes no cache). Remembered by listing id, which never changes."""

    def __init__(self, repo: Repository) -> None:
        self.repo = repo
        self._known: dict[str, frozenset[str] | None] = {}

    def entries(self, oid: str) -> frozenset[str] | None:
        """What listing ``oid`` names; None when it cannot be read or is no listing."""
        if oid not in self._known:
            self._known[oid] = self._read(oid)
        return self._known[oid]

    def _read(self, oid: str) -> frozenset[str] | None:
        expected = oid.removesuffix(".dir")
        cached = self.repo.cache.path(oid)
        try:
            if cached.is_file() and md5_file(cached) == expected:
                return frozenset(parse_listing(cached.read_bytes(), oid=oid).values())
            with tempfile.TemporaryDirectory(prefix="cpv-gc-") as scratch:
                target = Path(scratch) / "listing"
                if self.repo.storage.download(oid, target) != expected:
                    return None
                return frozenset(parse_listing(target.read_bytes(), oid=oid).values())
        except (CPVError, OSError) as e:
            logger.info("Cannot read the listing %s: %s", oid, e)
            return None


def _specs(repo: Repository) -> list[ArtifactSpec]:
    return [repo.model_spec, DATA]


def _refs(repo: Repository) -> list[tuple[str, str]]:
    """Every local branch, remote-tracking branch and tag, with the commit it names."""
    out = repo.git.out("for-each-ref", "--format=%(refname)%00%(objectname)%00%(*objectname)",
                       "refs/heads", "refs/remotes", "refs/tags")
    found = []
    for line in out.splitlines():
        name, target, peeled = [*line.split("\0"), "", ""][:3]
        found.append((name, peeled or target))
    return found


def _pointers(repo: Repository, spec: ArtifactSpec, commits: list[str]
              ) -> dict[str, Pointer | None]:
    """The pointer of ``spec`` at each commit (None where absent or unreadable), in one call."""
    unique = list(dict.fromkeys(commits))
    raws = repo.git.show_many([f"{c}:{spec.pointer_file}" for c in unique])
    found: dict[str, Pointer | None] = {}
    for commit, raw in zip(unique, raws, strict=True):
        try:
            found[commit] = parse_pointer(raw, source=spec.pointer_file,
                                          expected_path=Path(spec.path).name) if raw else None
        except PointerError as e:
            logger.warning("Ignoring the %s of commit %s: %s", spec.pointer_file, commit[:10], e)
            found[commit] = None
    return found


@dataclass
class History:
    """Every upload of both artifacts (oldest first) and every kept commit with its reasons."""

    uploads: dict[tuple[Kind, str], Upload]
    roots: dict[str, list[str]]


VersionTags = dict[Kind, list[tuple[str, str, bool]]]
"""Each artifact's version tags: (tag, its commit, whether the version is retired)."""


def read_history(repo: Repository, options: GCOptions, reader: ListingReader, *,
                 cache_only: bool = False) -> History:
    """Every upload reachable from a local ref, each with why it is kept (if it is).

    With ``cache_only`` the kept commits are only HEAD (the workspace), the stages' versions and
    the last N uploads: what a local cache needs to hold.
    """
    specs = _specs(repo)
    roots, version_tags = _kept_commits(repo, specs, options, cache_only=cache_only)
    uploads = _uploads(repo, specs, roots, version_tags)
    for upload in uploads.values():
        if upload.kind not in options.kinds:
            upload.keep.append(f"{upload.kind} (not collected)")
        upload.keep.sort(key=_weight)
        if not upload.pointer.is_dir:
            upload.objects = frozenset({upload.oid})
        else:
            listed = reader.entries(upload.oid)
            upload.objects = None if listed is None else listed | {upload.oid}
    return History(uploads, roots)


def _kept_commits(repo: Repository, specs: list[ArtifactSpec], options: GCOptions, *,
                  cache_only: bool) -> tuple[dict[str, list[str]], VersionTags]:
    """The kept commits with their reasons (see the module), and every version tag."""
    logs = {spec.kind: StageLog(repo.git, spec) for spec in specs}
    roots: dict[str, list[str]] = {}

    def keep(commit: str | None, reason: str) -> None:
        if commit and reason not in roots.setdefault(commit, []):
            roots[commit].append(reason)

    head = repo.git.head()
    keep(head, "the workspace (HEAD)" if cache_only else "HEAD")
    branch = repo.git.branch() or "main"
    main = f"refs/remotes/origin/{branch}" if repo.git.rev_parse(
        f"refs/remotes/origin/{branch}") else "HEAD"
    for spec in specs:
        label = "" if spec.kind == "model" else "data "
        for stage, event in logs[spec.kind].current().items():
            keep(event.commit, f"{label}stage {stage}")
        if options.keep_last and head is not None:
            for info in repo.catalog.uploads(spec, [main])[-options.keep_last:]:
                keep(info.commit, f"last {options.keep_last} {spec.kind} uploads")
    retired = {spec.kind: set(logs[spec.kind].retired()) for spec in specs}
    version_tags: VersionTags = {spec.kind: [] for spec in specs}
    for name, commit in _refs(repo):
        short = name.split("/", 2)[2]
        if name.startswith("refs/tags/"):
            role = _version_of(short, specs)
            if role is not None:
                gone = role[1] in retired[role[0]]
                version_tags[role[0]].append((short, commit, gone))
                if not gone and not cache_only:
                    keep(commit, short)
            elif not _is_cpv_record(short, specs) and not cache_only:
                keep(commit, f"tag {short}")
        elif not cache_only and not name.endswith("/HEAD"):
            keep(commit, f"branch {name.removeprefix('refs/heads/').removeprefix('refs/')}")
    return roots, version_tags


def _uploads(repo: Repository, specs: list[ArtifactSpec], roots: dict[str, list[str]],
             version_tags: VersionTags) -> dict[tuple[Kind, str], Upload]:
    """Every distinct pointer of each artifact in the history of every local ref (oldest
    first), with the commits that recorded it, the version tags naming it, and the reasons of
    the kept commits holding it."""
    uploads: dict[tuple[Kind, str], Upload] = {}

    def upload_of(kind: Kind, pointer: Pointer) -> Upload:
        return uploads.setdefault((kind, pointer.oid), Upload(kind, pointer))

    for spec in specs:
        logged = repo.git.run("log", "--all", "--topo-order", "--reverse", "--format=%H", "--",
                              spec.pointer_file, check=False).stdout.decode().split()
        tagged = version_tags[spec.kind]
        at = _pointers(repo, spec, [*logged, *roots, *(commit for _, commit, _ in tagged)])
        for commit in logged:
            pointer = at[commit]
            if pointer is not None and commit not in upload_of(spec.kind, pointer).commits:
                upload_of(spec.kind, pointer).commits.append(commit)
        for tag, commit, gone in tagged:
            pointer = at[commit]
            if pointer is not None:
                upload_of(spec.kind, pointer).versions.append(tag)
                if gone:
                    upload_of(spec.kind, pointer).retired.append(tag)
        for commit, reasons in roots.items():
            pointer = at[commit]
            if pointer is not None:
                upload = upload_of(spec.kind, pointer)
                upload.keep += [r for r in reasons if r not in upload.keep]
    return uploads


def _weight(reason: str) -> int:
    """The order reasons to keep are told in: versions, stages, the last N, the rest."""
    if _version_of(reason, [ArtifactSpec.model(), DATA]) is not None:
        return 0
    for rank, start in enumerate(("stage ", "data stage ", "last ", "HEAD", "the workspace",
                                  "branch ", "tag "), start=1):
        if reason.startswith(start):
            return rank
    return 9


def _version_of(tag: str, specs: list[ArtifactSpec]) -> tuple[Kind, str] | None:
    """For a version tag: its artifact's kind and its version (``v1.2``); None otherwise."""
    for spec in specs:
        number = spec.version_of(tag)
        if number is not None:
            return spec.kind, str(number)
    return None


def _is_cpv_record(tag: str, specs: list[ArtifactSpec]) -> bool:
    """A stage event or a gc record: tags that name commits only because a tag must."""
    return tag.startswith(RECORD_FOLDER) or any(
        tag.startswith(f"{spec.tag_prefix}{EVENT_FOLDER}") for spec in specs)


@dataclass
class Plan:
    """What gc removes, given the history and what storage holds (``inventory``).

    Attributes:
        kept: objects some kept upload refers to.
        doomed: objects to remove from storage.
        held: objects of unneeded uploads that stay: written within the grace period, or named
            by a folder listing that stays.
        reclaimed: objects of unneeded uploads that storage no longer holds (a local cache may).
        unreferenced: objects in storage no commit refers to.
        unreadable: kept uploads (labels) whose folder listing cannot be read: then nothing can
            be removed safely.
    """

    options: GCOptions
    now: float
    history: History
    inventory: dict[str, StoredObject]
    kept: set[str]
    doomed: set[str]
    held: set[str]
    reclaimed: set[str]
    unreferenced: set[str]
    unreadable: list[str]

    def size(self, oids: set[str] | list[str]) -> int:
        """The bytes storage holds for ``oids``."""
        return sum(self.inventory[o].size for o in oids if o in self.inventory)

    def removals(self) -> tuple[list[RemovedUpload], list[str]]:
        """The doomed objects upload by upload, oldest first (an object several unneeded
        uploads share counts with the oldest), and those no commit refers to."""
        taken: set[str] = set()
        rows = []
        for upload in self.history.uploads.values():
            if upload.keep:
                continue
            mine = sorted(((upload.objects or {upload.oid}) & self.doomed) - taken)
            if mine:
                rows.append(upload.removed(mine, self.size(mine)))
                taken.update(mine)
        return rows, sorted(self.doomed - taken)

    def kept_uploads(self) -> list[Upload]:
        return [u for u in self.history.uploads.values() if u.keep]


def make_plan(history: History, inventory: dict[str, StoredObject], options: GCOptions,
              now: float, reader: ListingReader, *, protected: set[str] | None = None) -> Plan:
    """Apply the rules (see the module) to ``history`` and ``inventory``; changes nothing.

    ``protected`` objects are never doomed (the snapshots of queued background uploads)."""
    kept: set[str] = set()
    candidates: set[str] = set()
    unreadable = []
    for upload in history.uploads.values():
        objects = upload.objects if upload.objects is not None else frozenset({upload.oid})
        if upload.keep:
            kept |= objects
            if upload.objects is None:
                unreadable.append(f"{upload.kind} {upload.label}")
        else:
            candidates |= objects
    candidates -= kept
    unreferenced = set(inventory) - kept - candidates
    cutoff = now - options.grace.total_seconds()
    old = {oid for oid, stored in inventory.items() if stored.modified <= cutoff}
    doomed = candidates & old
    if options.include_unreferenced:
        doomed |= unreferenced & old
    doomed -= protected or set()
    listings = (oid for oid in inventory if ObjectId(oid).is_listing and oid not in doomed)
    for listing in sorted(listings):
        named = reader.entries(listing)
        if named:
            doomed -= named  # storage never holds a listing without its files
    return Plan(options, now, history, inventory, kept, doomed,
                held=(candidates & set(inventory)) - doomed,
                reclaimed=candidates - set(inventory), unreferenced=unreferenced - doomed,
                unreadable=unreadable)
