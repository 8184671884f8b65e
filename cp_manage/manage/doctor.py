"""``cpv doctor``: check that the clone, the git remote and storage agree, and mend what can be
mended from here.

Checks: every commit and version tag made here is on the git remote; every object any version
that is not retired (and HEAD) needs is in storage; every local cache entry still matches its
md5; no temporary file of an interrupted run is left behind, nor a partial transfer (an
unfinished S3 multipart upload, a partial file in a local storage folder or in the cache) older
than the grace period. ``repair`` pushes what is missing (commits, tags, objects from the local
cache; never what only retired versions need), removes corrupt cache entries and stale
temporary files, and aborts or removes abandoned partial transfers.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from cp_manage.backends.cache import LocalCache
from cp_manage.backends.objects import ObjectId, is_object_id
from cp_manage.backends.partial import DEFAULT_GRACE, Leftover, discard, in_use
from cp_manage.backends.pointer import Pointer
from cp_manage.errors import CPVError
from cp_manage.fsutil import md5_file
from cp_manage.manage.handlers import Handler
from cp_manage.manage.repository import Repository
from cp_manage.manage.stages import StageLog, refresh
from cp_manage.manage.workspace import handler_for
from cp_manage.report import Finding, ValidationReport
from cp_manage.spec import DATA

logger = logging.getLogger(__name__)


def _handlers(repo: Repository) -> list[Handler]:
    return [handler_for(repo.model_spec), handler_for(DATA)]


def run_doctor(repo: Repository, *, repair: bool = False,
               grace: float = DEFAULT_GRACE) -> ValidationReport:
    """Check (and with ``repair``, mend) the agreement of clone, git remote and storage.

    Args:
        grace: seconds. Partial transfers (unfinished S3 uploads, partial files in storage or
            the cache) younger than this, by their own timestamps, may belong to a transfer
            still running elsewhere: they are listed, never removed.
    """
    report = ValidationReport()
    with repo.locked():
        report.findings.append(_check_temp_files(repo, repair))
        report.findings.append(_check_cache(repo, repair))
        report.findings.append(_check_partial_downloads(repo, repair, grace))
        report.findings.append(_check_commits(repo, repair))
        report.findings.append(_check_tags(repo, repair))
        report.findings.append(_check_storage(repo, repair))
        report.findings.append(_check_partial_uploads(repo, repair, grace))
    return report


TEMP_PATTERNS = ("*.cpv-tmp", "*.cpv-tmpdir", "*.cpv-old")
"""Half-written files of killed runs in this clone (doctor holds the clone's lock; a folder a
download is still building is held, and skipped). Partial transfers, which a rerun continues,
are checked with a grace period instead."""


def _check_temp_files(repo: Repository, repair: bool) -> Finding:
    """Half-written files and folders of killed runs. Work a forced revert set aside
    (``.*.cpv-discarded``) is the user's: reported, never removed."""
    leftovers = sorted({path for pattern in TEMP_PATTERNS for base in (repo.root, repo.cache.root)
                        if base.exists() for path in base.rglob(pattern)
                        if (base == repo.cache.root or ".git" not in path.relative_to(
                            repo.root).parts) and not in_use(path)})
    discarded = sorted(repo.root.glob(".*.cpv-discarded"))
    if discarded:
        names = ", ".join(p.name for p in discarded)
        return Finding("temp_files", "failed", f"work set aside by an interrupted forced revert: "
                       f"{names}", "Look at it; move it back over the artifact to keep it, or "
                       "delete it.")
    if not leftovers:
        return Finding("temp_files", "passed", "no temporary files of interrupted runs")
    if repair:
        for path in leftovers:
            if path.is_dir() and not path.is_symlink():
                _make_writable(path)
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        return Finding("temp_files", "passed", f"removed {len(leftovers)} temporary file(s)")
    return Finding("temp_files", "failed", f"{len(leftovers)} temporary file(s) of interrupted "
                   "runs", "Run 'cpv doctor --repair' to remove them.")


def _make_writable(folder: Path) -> None:
    for path in folder.rglob("*"):
        with contextlib.suppress(OSError):
            if path.is_dir() and not path.is_symlink():
                path.chmod(0o755)


def _check_cache(repo: Repository, repair: bool) -> Finding:
    base = repo.cache.root / "files" / "md5"
    corrupt: list[Path] = []
    count = 0
    if base.is_dir():
        for prefix in base.iterdir():
            if not prefix.is_dir():
                continue
            for entry in prefix.iterdir():
                if entry.name.startswith("."):
                    continue
                count += 1
                oid = prefix.name + entry.name
                if not is_object_id(oid) or md5_file(entry) != ObjectId(oid).md5:
                    corrupt.append(entry)
    if not corrupt:
        return Finding("cache", "passed", f"{count} cache entries match their md5")
    if repair:
        for path in corrupt:
            with contextlib.suppress(FileNotFoundError):
                os.chmod(path, 0o644)
                path.unlink()
        return Finding("cache", "passed", f"removed {len(corrupt)} corrupt cache entries; they "
                       "are fetched again from storage when needed")
    return Finding("cache", "failed", f"{len(corrupt)} of {count} cache entries are corrupt",
                   "Run 'cpv doctor --repair' to remove them.")


def _check_commits(repo: Repository, repair: bool) -> Finding:
    try:
        repo.git.fetch(f"+refs/heads/{repo.branch()}:refs/remotes/origin/{repo.branch()}")
    except CPVError as e:
        return Finding("commits", "failed", f"cannot reach the git remote: {e.message}",
                       e.hint or None)
    head, remote = repo.git.head(), repo.remote_head()
    if head is None or (remote is not None and repo.git.is_ancestor(head, remote)):
        return Finding("commits", "passed", "every local commit is on the git remote")
    if repair:
        try:
            repo.push_head_if_needed()
        except CPVError as e:
            return Finding("commits", "failed", f"could not push HEAD: {e.message}",
                           "Run 'git pull --rebase && git push', then 'cpv doctor' again.")
        return Finding("commits", "passed", f"pushed {head[:10]} to the git remote")
    return Finding("commits", "failed", f"HEAD {head[:10]} is not on the git remote",
                   "Run 'cpv doctor --repair' to push it.")


def _check_tags(repo: Repository, repair: bool) -> Finding:
    local = [info.tag for spec in (repo.model_spec, DATA)
             for info in repo.versions(spec, fetch=False) if info.tag]
    try:
        remote = repo.remote_tags()
    except CPVError as e:
        return Finding("tags", "failed", f"cannot list remote tags: {e.message}", e.hint or None)
    missing = [tag for tag in local if tag not in remote]
    if not missing:
        return Finding("tags", "passed", f"all {len(local)} version tags are on the git remote")
    if repair:
        failed = []
        for tag in missing:
            try:
                repo.git.push(f"refs/tags/{tag}")
            except CPVError:
                failed.append(tag)
        if failed:
            return Finding("tags", "failed", f"could not push {', '.join(failed)} (taken on the "
                           "remote by another commit?)",
                           f"Delete them locally with 'git tag -d {' '.join(failed)}' and tag "
                           "again.")
        return Finding("tags", "passed", f"pushed {', '.join(missing)}")
    return Finding("tags", "failed", f"not on the git remote: {', '.join(missing)}",
                   "Run 'cpv doctor --repair' to push them.")


def _check_storage(repo: Repository, repair: bool) -> Finding:
    """Every object a version that is not retired (or HEAD) needs is in storage. What only
    retired versions need is neither asked for nor uploaded again: gc may reclaim it, and
    the retire record on the git remote (read first) binds every clone."""
    needed: dict[str, str] = {}  # oid -> the version that needs it
    head = repo.git.head()
    left_out: list[str] = []
    for handler in _handlers(repo):
        try:  # a repair must know every retirement; a check may go on with what is known
            refresh(repo, handler.spec, strict=repair)
        except CPVError as e:
            return Finding("storage", "failed", "cannot read which versions are retired from "
                           f"the git remote, so nothing was uploaded: {e.message}",
                           e.hint or None)
        retired = StageLog(repo.git, handler.spec).retired()
        pointers: list[tuple[str, Pointer]] = []
        kept_md5s, retired_md5s = set(), set()
        for info in repo.versions(handler.spec, fetch=False):
            if info.version in retired:
                left_out.append(str(info.tag))
                retired_md5s.add(info.md5)
                continue
            kept_md5s.add(info.md5)
            pointer = repo.pointer_at(info.commit, handler.path) if info.commit else None
            if pointer is not None:
                pointers.append((str(info.tag), pointer))
        head_pointer = repo.pointer_at(head, handler.path) if head else None
        if head_pointer is not None and head_pointer.md5 in retired_md5s - kept_md5s:
            left_out.append(f"HEAD's {handler.spec.kind} (a retired version)")
        elif head_pointer is not None:
            pointers.append(("HEAD", head_pointer))
        for label, pointer in pointers:
            try:
                for oid in handler.objects(repo, pointer):
                    needed.setdefault(oid, label)
            except CPVError:
                needed.setdefault(pointer.oid, label)
    try:
        missing = repo.storage.missing(needed)
    except CPVError as e:
        return Finding("storage", "failed", f"cannot reach storage: {e.message}", e.hint or None)
    unchecked = f" (retired, so not checked: {', '.join(left_out)})" if left_out else ""
    if not missing:
        return Finding("storage", "passed", f"all {len(needed)} objects of every version are in "
                       f"storage{unchecked}")
    if repair:
        lost = []
        for oid in sorted(missing):
            cached = repo.cache.path(oid)
            if cached.is_file() and md5_file(cached) == ObjectId(oid).md5:
                repo.storage.upload(oid, cached)
            else:
                lost.append(oid)
        if lost:
            versions = sorted({needed[o] for o in lost})
            return Finding("storage", "failed", f"{len(lost)} object(s) of {', '.join(versions)} "
                           "are in neither storage nor this cache",
                           "Run 'cpv doctor --repair' on a machine that has them cached.")
        return Finding("storage", "passed", f"re-uploaded {len(missing)} object(s) from the "
                       f"cache{unchecked}")
    versions = sorted({needed[o] for o in missing})
    return Finding("storage", "failed", f"{len(missing)} object(s) missing from storage, needed "
                   f"by {', '.join(versions)}", "Run 'cpv doctor --repair' to upload them from "
                   "the local cache.")


def _check_partial_downloads(repo: Repository, repair: bool, grace: float) -> Finding:
    """Downloads interrupted before their bytes were all there, kept in the local caches
    (this clone's, and the one reading without a clone uses) for a rerun to continue."""
    caches = [repo.cache, LocalCache(repo.config.home / "cache" / repo.team / repo.model)]
    found = [item for cache in caches for item in cache.leftovers()]
    return _partials_finding("partial_downloads", "in the local cache", found, repair, grace,
                             lambda item: discard(Path(item.where)))


def _check_partial_uploads(repo: Repository, repair: bool, grace: float) -> Finding:
    """Uploads interrupted before storage held the whole object: unfinished S3 multipart
    uploads, partial files in a local storage folder."""
    try:
        found = repo.storage.leftovers()
    except CPVError as e:
        return Finding("partial_uploads", "failed", f"cannot list unfinished uploads: "
                       f"{e.message}", e.hint or None)
    return _partials_finding("partial_uploads", "in storage", found, repair, grace,
                             repo.storage.remove_leftover)


def _partials_finding(check: str, where: str, found: list[Leftover], repair: bool,
                      grace: float, remove: Callable[[Leftover], None]) -> Finding:
    """One finding for the partial transfers ``found``: those older than ``grace`` and held
    by no running process are abandoned (removed with ``repair``); the others are left alone.
    """
    items = [item.to_dict() for item in found]
    if not found:
        return Finding(check, "passed", f"no partial transfers {where}")
    young = [item for item in found if item.in_use or item.age < grace]
    stale = [item for item in found if item not in young]
    waiting = (f"; {len(young)} younger than {_duration(grace)} or in use left alone (a "
               "running transfer may own it; the same command resumes it)" if young else "")
    if not stale:
        return Finding(check, "passed", f"{_count(young)} {where}{waiting}", items=items)
    size = _size(sum(item.size for item in stale))
    if not repair:
        return Finding(check, "failed", f"{_count(stale)} abandoned {where} ({size}), "
                       f"older than {_duration(grace)}{waiting}",
                       "Run the interrupted command again to finish it, or 'cpv doctor "
                       "--repair' to remove them.", items=items)
    failed = []
    for item in stale:
        try:
            remove(item)
        except (CPVError, OSError) as e:
            failed.append(f"{item.where}: {e}")
    if failed:
        return Finding(check, "failed", f"could not remove {len(failed)} of {_count(stale)}: "
                       f"{'; '.join(failed)}", "Check the permissions, then run 'cpv doctor "
                       "--repair' again.", items=items)
    return Finding(check, "passed", f"removed {_count(stale)} abandoned {where} "
                   f"({size}){waiting}", items=items)


def _count(items: list[Leftover]) -> str:
    return f"{len(items)} partial transfer{'s' if len(items) != 1 else ''}"


def _size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def _duration(seconds: float) -> str:
    for unit, length in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= length and seconds % length == 0:
            return f"{seconds // length:.0f}{unit}"
    return f"{seconds:g}s"
