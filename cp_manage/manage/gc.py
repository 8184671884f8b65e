"""``cpv gc`` and ``cpv du``: reclaim the storage and local cache of uploads nobody needs, and
show what each version uses. What is kept is decided in ``gc_plan``; each run that removes
anything is recorded as a ``gc/NNNNNN`` tag (``gc_record``) before anything is deleted.

A run fetches the git remote's branches and tags, lists storage (with each object's own
timestamp) and plans; just before deleting it fetches the refs again and plans again, and
removes only what both plans doom: a version tagged or a commit pushed meanwhile keeps its
objects. A dry run changes nothing: no record, no deletion, no cache entry.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import Any

from cp_manage.backends.objects import ObjectId, StoredObject
from cp_manage.errors import CPVError, RemoteError, StorageError
from cp_manage.faults import pause_point
from cp_manage.manage.gc_plan import (
    GRACE,
    KEEP_LAST,
    GCOptions,
    History,
    ListingReader,
    Plan,
    make_plan,
    read_history,
)
from cp_manage.manage.gc_record import GCRecord, RemovedUpload, push_record
from cp_manage.manage.queue import UploadQueue
from cp_manage.manage.repository import Repository
from cp_manage.manage.stages import refresh
from cp_manage.spec import DATA
from cp_manage.versions import Kind

logger = logging.getLogger(__name__)


@dataclass
class GCResult:
    """What a gc run removed (or, ``dry_run``, would remove).

    Attributes:
        uploads: the uploads whose objects go, oldest first, each with its objects and bytes.
        unreferenced: objects no commit refers to that go (only with include_unreferenced).
        object_count, size_bytes: everything that goes from storage (the bytes freed).
        kept_uploads: how many uploads are kept (versions, stages, the last N, branch tips).
        held_objects, held_bytes: objects of unneeded uploads kept because storage wrote them
            within the grace period (or a listing that stays names them).
        rechecked: objects the re-check just before deleting kept (newly referenced).
        record: the ``gc/NNNNNN`` tag recording the run (None for a dry run or no removal).
        cache_objects, cache_bytes: what goes from the local cache.
        warnings: what the user must hear (a listing that cannot be read, ...).
    """

    dry_run: bool
    cache_only: bool
    options: GCOptions
    uploads: list[RemovedUpload] = field(default_factory=list)
    unreferenced: list[str] = field(default_factory=list)
    object_count: int = 0
    size_bytes: int = 0
    kept_uploads: int = 0
    held_objects: int = 0
    held_bytes: int = 0
    rechecked: list[str] = field(default_factory=list)
    record: str | None = None
    cache_objects: int = 0
    cache_bytes: int = 0
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["options"] = self.options.to_dict()
        data["uploads"] = [u.to_dict() for u in self.uploads]
        return data


def fetch_refs(repo: Repository) -> None:
    """Bring every branch and tag of the git remote here (branches gone there go here too).

    Raises:
        RemoteError: the remote cannot be read: gc never decides without it.
    """
    try:
        repo.git.fetch("--prune", "+refs/heads/*:refs/remotes/origin/*")
        repo.git.fetch("+refs/tags/*:refs/tags/*")
        for spec in (repo.model_spec, DATA):
            refresh(repo, spec, strict=True)
    except RemoteError as e:
        e.hint = ("gc decides what to keep from the git remote's branches and tags, so it "
                  "needs to reach it; check the network, then run it again.")
        raise


def _plan(repo: Repository, options: GCOptions, inventory: dict[str, StoredObject], now: float,
          reader: ListingReader) -> Plan:
    history: History = read_history(repo, options, reader)
    # Snapshots waiting in this clone's background upload queue are uploads to be: kept.
    queued = {oid for entry in UploadQueue(repo).entries() for oid in entry.objects}
    return make_plan(history, inventory, options, now, reader, protected=queued)


def _cached_size(repo: Repository, oids: set[str]) -> tuple[list[str], int]:
    """Those of ``oids`` the local cache holds, and their bytes."""
    found, size = [], 0
    for oid in sorted(oids):
        with contextlib.suppress(OSError):
            size += repo.cache.path(oid).stat().st_size
            found.append(oid)
    return found, size


def _result(plan: Plan, *, dry_run: bool, repo: Repository) -> GCResult:
    uploads, unreferenced = plan.removals()
    cached, cache_bytes = _cached_size(repo, plan.doomed | plan.reclaimed)
    result = GCResult(
        dry_run=dry_run, cache_only=False, options=plan.options, uploads=uploads,
        unreferenced=unreferenced, object_count=len(plan.doomed),
        size_bytes=plan.size(plan.doomed),
        kept_uploads=sum(1 for u in plan.kept_uploads() if u.kind in plan.options.kinds),
        held_objects=len(plan.held), held_bytes=plan.size(plan.held),
        cache_objects=len(cached), cache_bytes=cache_bytes)
    if plan.unreadable:
        result.warnings.append(
            f"the folder listing of {', '.join(plan.unreadable)} cannot be read (from the "
            "local cache or storage), so what it needs is unknown and gc removes nothing; "
            "run 'cpv doctor --repair' where it is cached")
    return result


def collect_garbage(repo: Repository, options: GCOptions, *, dry_run: bool = False
                    ) -> GCResult:
    """Remove from storage and the local cache the objects only unneeded uploads refer to.

    Raises:
        RemoteError: the git remote cannot be read, or refused the record (nothing removed).
        StorageError: storage cannot be listed (nothing removed), a kept folder's listing
            cannot be read (nothing removed), or a deletion failed (said how far it got).
    """
    with repo.locked():
        fetch_refs(repo)
        reader = ListingReader(repo)
        inventory = {stored.oid: stored for stored in repo.storage.iter_objects()}
        now = time.time()
        plan = _plan(repo, options, inventory, now, reader)
        if dry_run:
            return _result(plan, dry_run=True, repo=repo)
        if plan.doomed:
            result, final = _remove(repo, options, plan, inventory, now, reader)
        else:
            result, final = _result(plan, dry_run=False, repo=repo), plan
        # What a teammate's gc removed from storage leaves this cache too.
        for oid in _cached_size(repo, final.doomed | final.reclaimed)[0]:
            repo.cache.discard(oid)
        return result


def _remove(repo: Repository, options: GCOptions, plan: Plan,
            inventory: dict[str, StoredObject], now: float, reader: ListingReader
            ) -> tuple[GCResult, Plan]:
    """Re-check, record, then delete from storage what both plans doom; returns the result
    and the plan carried out."""
    _refuse_unreadable(plan)
    pause_point("gc_before_recheck")
    fetch_refs(repo)  # the re-check: what was tagged or pushed meanwhile is kept
    final = _plan(repo, options, inventory, now, reader)
    _refuse_unreadable(final)
    rechecked = sorted(plan.doomed - final.doomed)
    if rechecked:
        logger.info("The re-check keeps %d object(s) referenced meanwhile", len(rechecked))
    final.doomed &= plan.doomed
    result = _result(final, dry_run=False, repo=repo)
    result.rechecked = rechecked
    if final.doomed:
        target = repo.git.rev_parse(f"refs/remotes/origin/{repo.git.branch() or 'main'}") or \
            repo.head_or_raise()
        record = push_record(repo, GCRecord(
            seq=0, tag="", author="", created_at="", options=options.to_dict(),
            uploads=result.uploads, unreferenced=result.unreferenced,
            object_count=result.object_count, size_bytes=result.size_bytes), target)
        result.record = record.tag
        _delete(repo, final.doomed, record.tag)
        logger.info("gc removed %d object(s), %d bytes (%s)", result.object_count,
                    result.size_bytes, record.tag)
    return result, final


def _refuse_unreadable(plan: Plan) -> None:
    if plan.unreadable:
        raise StorageError(
            f"gc cannot read the folder listing of {', '.join(plan.unreadable)}, so it cannot "
            "tell which objects that kept version needs; nothing was removed",
            hint="Run 'cpv doctor --repair' on a machine that has it cached, then gc again.")


def _delete(repo: Repository, doomed: set[str], record: str) -> None:
    """Remove ``doomed`` from storage: files first, folder listings last. An interrupted run
    so leaves a listing until its files are gone, and the next run still knows them (removed
    first, the listing would leave files no commit refers to)."""
    order = sorted(doomed, key=lambda oid: (ObjectId(oid).is_listing, oid))
    for done, oid in enumerate(order):
        try:
            repo.storage.delete(oid)
        except CPVError as e:
            raise StorageError(
                f"gc removed {done} of {len(order)} objects, then: {e.message}",
                hint=f"Run 'cpv gc' again to finish ({record} records the whole run).") from e


def trim_cache(repo: Repository, options: GCOptions, *, dry_run: bool = False) -> GCResult:
    """Remove from the local cache what the workspace (HEAD), the stages and the last N
    uploads do not need; an object storage does not hold is never removed (it may be the only
    copy). Storage and git are not changed; nothing is recorded.
    """
    with repo.locked():
        for spec in (repo.model_spec, DATA):
            refresh(repo, spec)
        reader = ListingReader(repo)
        history = read_history(repo, options, reader, cache_only=True)
        needed: set[str] = set()
        scoped: set[str] = set()
        for upload in history.uploads.values():
            objects = upload.objects if upload.objects is not None else frozenset({upload.oid})
            if upload.keep:
                needed |= objects
            if upload.kind in options.kinds:
                scoped |= objects
        cached = set(repo.cache.iter_oids())
        candidates = cached - needed
        if set(options.kinds) != {repo.model_spec.kind, DATA.kind}:
            candidates &= scoped  # the other artifact's entries are not this run's to trim
        only_copies = repo.storage.missing(candidates) if candidates else set()
        removable, size = _cached_size(repo, candidates - only_copies)
        result = GCResult(dry_run=dry_run, cache_only=True, options=options,
                          kept_uploads=sum(1 for u in history.uploads.values() if u.keep),
                          cache_objects=len(removable), cache_bytes=size)
        if only_copies:
            result.warnings.append(f"{len(only_copies)} cached object(s) storage does not "
                                   "hold were kept (the cache may be their only copy; 'cpv "
                                   "doctor' tells whether a version needs them)")
        if not dry_run:
            for oid in removable:
                repo.cache.discard(oid)
        return result


@dataclass(frozen=True)
class UsageRow:
    """The storage one upload uses.

    Attributes:
        objects: its objects storage holds; ``missing``: those it does not.
        total_bytes: their size; ``unique_bytes``: of those no other upload refers to;
            ``shared_bytes``: of those another upload refers to too.
        keep: why gc keeps it (empty: gc may remove it).
        gc_objects, gc_bytes: what gc with the same options would free of it.
        held_bytes: what gc would free of it but for the grace period (or a folder listing
            that stays).
    """

    kind: str
    label: str
    versions: list[str]
    retired: list[str]
    commits: list[str]
    oid: str
    objects: int
    missing: int
    total_bytes: int
    unique_bytes: int
    shared_bytes: int
    keep: list[str]
    gc_objects: int
    gc_bytes: int
    held_bytes: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class UsageReport:
    """``cpv du``: every upload's use, storage as a whole, and what gc would free."""

    options: GCOptions
    rows: list[UsageRow]
    storage_objects: int
    storage_bytes: int
    unreferenced_objects: int
    unreferenced_bytes: int
    gc_objects: int
    gc_bytes: int
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["options"] = self.options.to_dict()
        return data


def disk_usage(repo: Repository, options: GCOptions) -> UsageReport:
    """What each upload uses in storage, and what ``collect_garbage`` with ``options`` would
    free; changes nothing.

    Raises:
        RemoteError, StorageError: the git remote or storage cannot be read.
    """
    with repo.locked():
        fetch_refs(repo)
        reader = ListingReader(repo)
        inventory = {stored.oid: stored for stored in repo.storage.iter_objects()}
        plan = _plan(repo, options, inventory, time.time(), reader)
    uploads = list(plan.history.uploads.values())
    users: dict[str, int] = {}
    for upload in uploads:
        for oid in upload.objects or {upload.oid}:
            users[oid] = users.get(oid, 0) + 1
    freed = {(r.kind, r.oid): r for r in plan.removals()[0]}
    rows = []
    for upload in uploads:
        objects = upload.objects or frozenset({upload.oid})
        present = {oid for oid in objects if oid in inventory}
        unique = {oid for oid in present if users[oid] == 1}
        gone = freed.get((upload.kind, upload.oid))
        rows.append(UsageRow(
            kind=upload.kind, label=upload.label, versions=list(upload.versions),
            retired=list(upload.retired), commits=list(upload.commits), oid=upload.oid,
            objects=len(present), missing=len(objects) - len(present),
            total_bytes=plan.size(present), unique_bytes=plan.size(unique),
            shared_bytes=plan.size(present - unique), keep=list(upload.keep),
            gc_objects=len(gone.objects) if gone else 0, gc_bytes=gone.size_bytes if gone else 0,
            held_bytes=0 if upload.keep else plan.size(present & plan.held)))
    unreferenced = set(inventory) - set(users)
    report = UsageReport(
        options=options, rows=rows, storage_objects=len(inventory),
        storage_bytes=plan.size(set(inventory)), unreferenced_objects=len(unreferenced),
        unreferenced_bytes=plan.size(unreferenced), gc_objects=len(plan.doomed),
        gc_bytes=plan.size(plan.doomed))
    report.warnings = _result(plan, dry_run=True, repo=repo).warnings
    return report


def gc(repo: Repository, kinds: tuple[Kind, ...], *, keep_last: int = KEEP_LAST,
       grace: str | float | timedelta = GRACE, dry_run: bool = False,
       include_unreferenced: bool = False, cache_only: bool = False) -> GCResult:
    """What the managers' ``gc`` does: check the options, then ``trim_cache`` (``cache_only``)
    or ``collect_garbage``, collecting the uploads of ``kinds``.

    Raises:
        CPVError: an option is invalid (nothing was read or changed); and see
            ``collect_garbage``.
    """
    options = GCOptions.make(keep_last=keep_last, grace=grace,
                             include_unreferenced=include_unreferenced, kinds=kinds)
    if cache_only:
        return trim_cache(repo, options, dry_run=dry_run)
    return collect_garbage(repo, options, dry_run=dry_run)


def du(repo: Repository, kinds: tuple[Kind, ...], *, keep_last: int = KEEP_LAST,
       grace: str | float | timedelta = GRACE, include_unreferenced: bool = False
       ) -> UsageReport:
    """What the managers' ``du`` does: ``disk_usage`` with checked options."""
    return disk_usage(repo, GCOptions.make(keep_last=keep_last, grace=grace,
                                           include_unreferenced=include_unreferenced,
                                           kinds=kinds))
