"""The durable upload queue: checkpoints snapshotted into the cache, waiting to be versioned.

Each submitted checkpoint is one JSON file in ``.git/cpv/queue/`` (inside the repository, never
in git): its sequence number, the object ids of its snapshot (already in the local cache, on
disk), its metrics, message and the version asked for. The file is written (fsync, atomic
rename) before ``submit`` returns and removed only once its version is on the git remote, so a
process killed at any moment loses nothing: whoever flushes next (``cpv model flush``, or the
next ``background()``) completes the waiting entries in order.

Completing an entry is idempotent. Its commit carries the trailer ``Cpv-Queue-Entry: ID``;
before uploading, the history is searched for it, so an entry whose upload reached the remote
before the process died is not uploaded twice, only tagged if its tag is missing. One flusher
at a time works on the queue (``flush.lock``), always on the oldest entry.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from filelock import FileLock

from cp_manage.artifacts import decode_metrics
from cp_manage.backends.pointer import Pointer
from cp_manage.errors import CPVError, StorageError
from cp_manage.faults import crash_point, pause_point
from cp_manage.fsutil import atomic_write_bytes, fsync_path
from cp_manage.locking import exclusive
from cp_manage.manage.handlers import upload_objects
from cp_manage.manage.repository import Repository, utc_now
from cp_manage.manage.workspace import pointer_changes

if TYPE_CHECKING:
    from cp_manage.manage.base import CheckpointManager

logger = logging.getLogger(__name__)

ENTRY_TRAILER = "Cpv-Queue-Entry"
"""The commit trailer naming the queue entry a commit completes (how a flush knows it is done)."""
SOURCE_TRAILER = "Cpv-Source-Key"
"""The commit trailer with the caller's key for the source (how a watcher knows it was done)."""

TagRequest = bool | str
"""What version an upload gets: True the next minor one, ``"major"``, a name, False none."""


class QueueError(CPVError):
    """A queued upload failed, or could not run because an earlier one failed."""

    default_hint = ("The upload stays queued. Fix the cause, then run 'cpv model flush' "
                    "(see 'cpv model pending').")

    def __init__(self, message: str, *, hint: str | None = None,
                 entry_id: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.entry_id = entry_id
        """The id of the queue entry that failed, when one did."""


@dataclass
class QueueEntry:
    """One checkpoint waiting in the queue. ``tag`` is the version asked for (``TagRequest``)."""

    id: str
    seq: int
    submitted_at: str
    path: str
    md5: str
    size_bytes: int
    file_count: int | None
    objects: list[str]
    metrics: dict[str, Any] | None
    message: str | None
    tag: TagRequest
    source: str
    source_key: str | None = None
    file: Path | None = field(default=None, repr=False, compare=False)

    @property
    def pointer(self) -> Pointer:
        return Pointer(path=self.path, md5=self.md5, size=self.size_bytes, nfiles=self.file_count)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("file")
        return data

    @classmethod
    def from_file(cls, path: Path) -> QueueEntry:
        """Read an entry file.

        Raises:
            QueueError: the file is not an entry (corrupt, or from another cpv).
        """
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            data.pop("file", None)
            entry = cls(**data)
        except (OSError, ValueError, TypeError) as e:
            raise QueueError(f"The queue entry {path} cannot be read ({e})",
                             hint="Move it out of the queue folder if it is not cpv's; "
                             "nothing else is affected.") from e
        entry.file = path
        return entry

    def describe(self) -> str:
        """``#3 (a1b2c3d4)``: how messages name an entry."""
        return f"#{self.seq} ({self.id[:8]})"


class UploadQueue:
    """The queue folder of one repository: entries, the sequence counter, the flush lock."""

    def __init__(self, repo: Repository) -> None:
        self.folder = repo.root / ".git" / "cpv" / "queue"

    def entries(self) -> list[QueueEntry]:
        """Every waiting entry, oldest (lowest sequence number) first."""
        if not self.folder.is_dir():
            return []
        found = [QueueEntry.from_file(path) for path in self.folder.glob("*.json")]
        return sorted(found, key=lambda entry: entry.seq)

    @contextlib.contextmanager
    def _counter(self) -> Iterator[Path]:
        self.folder.mkdir(parents=True, exist_ok=True)
        with exclusive(self.folder / "seq.lock", f"Another process is adding to {self.folder}"):
            yield self.folder / "seq"

    def add(self, entry: QueueEntry) -> QueueEntry:
        """Write ``entry`` durably with the next sequence number (set on it) and return it."""
        with self._counter() as counter:
            try:
                last = int(counter.read_text(encoding="ascii").strip() or 0)
            except (FileNotFoundError, ValueError):
                last = 0
            last = max([last, *(e.seq for e in self.entries())])
            entry.seq = last + 1
            path = self.folder / f"{entry.seq:010d}-{entry.id}.json"
            atomic_write_bytes(path, json.dumps(entry.to_dict(), indent=1).encode())
            atomic_write_bytes(counter, f"{entry.seq}\n".encode())
            fsync_path(self.folder, directory=True)  # the renames themselves reach the disk
        entry.file = path
        return entry

    def remove(self, entry: QueueEntry) -> None:
        """Take ``entry`` out of the queue (its version is on the remote)."""
        if entry.file is not None:
            with contextlib.suppress(FileNotFoundError):
                entry.file.unlink()
            fsync_path(self.folder, directory=True)

    def find(self, ref: str) -> QueueEntry:
        """The entry named by its sequence number (``3`` or ``#3``) or a prefix of its id.

        Raises:
            QueueError: no such entry.
        """
        ref = ref.removeprefix("#")
        for entry in self.entries():
            if ref == str(entry.seq) or (len(ref) >= 4 and entry.id.startswith(ref)):
                return entry
        raise QueueError(f"No queued upload {ref}",
                         hint="Run 'cpv model pending' to see what waits.")

    @contextlib.contextmanager
    def flushing(self) -> Iterator[None]:
        """Hold the flush lock: one flusher at a time works on this queue (waits for it)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(self.folder / "flush.lock"))
        lock.acquire()
        try:
            yield
        finally:
            lock.release()


def new_entry(pointer: Pointer, objects: list[str], *, metrics: dict[str, Any] | None,
              message: str | None, tag: TagRequest, source: Path,
              source_key: str | None) -> QueueEntry:
    """An entry for a snapshot (its sequence number is given by ``UploadQueue.add``)."""
    return QueueEntry(id=uuid.uuid4().hex, seq=0, submitted_at=utc_now(), path=pointer.path,
                      md5=pointer.md5, size_bytes=pointer.size, file_count=pointer.nfiles,
                      objects=sorted(objects), metrics=metrics, message=message, tag=tag,
                      source=str(source), source_key=source_key)


def commit_with_trailer(repo: Repository, key: str, value: str) -> str | None:
    """The newest commit of HEAD's history whose message has the trailer ``key: value``."""
    if repo.git.head() is None:
        return None
    found = repo.git.out("log", "-n", "1", "--format=%H", "-F", f"--grep={key}: {value}",
                         "HEAD").strip()
    return found or None


def _version_on(manager: CheckpointManager, commit: str) -> str | None:
    tags = [i.tag for i in manager.repo.versions(manager.spec, fetch=False)
            if i.commit == commit and i.tag]
    return tags[-1] if tags else None


def complete_entry(manager: CheckpointManager, entry: QueueEntry) -> str:
    """Store, commit, push and tag ``entry``; idempotent (see the module's docstring).

    The workspace artifact is never touched: the training script may be writing it. Only the
    pointer and ``metrics.log`` change, in one commit carrying the entry's trailer.

    Returns:
        The version, or the commit when the entry asked for none.

    Raises:
        CPVError (StorageError, RemoteError, VersionExistsError, ...).
    """
    repo, spec = manager.repo, manager.spec
    pointer = entry.pointer
    with repo.locked():
        repo.sync()
        commit = commit_with_trailer(repo, ENTRY_TRAILER, entry.id)
        if commit is not None:
            logger.info("Queued upload %s was committed before (%s)", entry.describe(),
                        commit[:10])
            repo.push_head_if_needed()
        else:
            missing = repo.missing_in_storage(entry.objects)
            lost = sorted(oid for oid in missing if not repo.cache.has(oid))
            if lost:
                raise StorageError(
                    f"The snapshot of queued upload {entry.describe()} ({entry.source}) is "
                    f"gone from the local cache ({len(lost)} object(s), e.g. {lost[0]})",
                    hint="It cannot be uploaded any more: drop it with 'cpv model pending "
                    f"--drop {entry.seq}' and upload that checkpoint again.")
            upload_objects(repo, missing, progress=None)
            repo.cache.flush()
            crash_point("after_blobs")
            metrics = decode_metrics(entry.metrics) if entry.metrics is not None else None
            text = entry.message or f"Upload {spec.kind} {spec.name} ({entry.md5[:8]})"
            trailers = f"{ENTRY_TRAILER}: {entry.id}"
            if entry.source_key:
                trailers += f"\n{SOURCE_TRAILER}: {entry.source_key}"
            made = repo.commit_and_push(lambda head: pointer_changes(
                repo, spec, head, pointer, metrics), f"{text}\n\n{trailers}\n")
            commit = made or repo.head_or_raise()
            if made is None:
                logger.info("Queued upload %s: the %s and its metrics were HEAD's already",
                            entry.describe(), spec.kind)
    if entry.tag is False:
        return commit
    version = None if entry.tag is True or entry.tag == "major" else str(entry.tag)
    return manager.tag(version, major=entry.tag == "major", commit=commit).tag


def result_of_done(manager: CheckpointManager, entry: QueueEntry) -> str | None:
    """What an entry another flusher completed became (its version, or its commit), or None
    when its commit is not in HEAD's history (the entry was dropped)."""
    with manager.repo.locked():
        manager.repo.sync()
        commit = commit_with_trailer(manager.repo, ENTRY_TRAILER, entry.id)
    if commit is None:
        return None
    if entry.tag is False:
        return commit
    manager.repo.fetch_tags_quietly()
    return _version_on(manager, commit) or commit


@dataclass(frozen=True)
class Completed:
    """One entry a flush completed: ``result`` is its version, or its commit."""

    entry: QueueEntry
    result: str


def flush_next(manager: CheckpointManager, queue: UploadQueue) -> Completed | None:
    """Complete the oldest entry of the queue, holding the flush lock; None when it is empty.

    Raises:
        QueueError: the entry failed (it stays queued); the cause is chained.
    """
    with queue.flushing():
        entries = queue.entries()
        if not entries:
            return None
        entry = entries[0]
        pause_point("queue_entry")
        try:
            result = complete_entry(manager, entry)
        except CPVError as e:
            raise QueueError(f"Queued upload {entry.describe()} of {entry.source} failed: "
                             f"{e.message}", hint=e.hint or None, entry_id=entry.id) from e
        crash_point("queue_done")
        queue.remove(entry)
    logger.info("Queued upload %s done: %s", entry.describe(), result)
    return Completed(entry, result)


def flush(manager: CheckpointManager, *,
          on_done: Callable[[Completed], None] | None = None) -> list[Completed]:
    """Complete every waiting entry, oldest first, each exactly once.

    Raises:
        QueueError: an entry failed; it and those after it stay queued.
    """
    queue = UploadQueue(manager.repo)
    done: list[Completed] = []
    while (completed := flush_next(manager, queue)) is not None:
        done.append(completed)
        if on_done is not None:
            on_done(completed)
    return done


def drop(manager: CheckpointManager, ref: str) -> QueueEntry:
    """Take the entry ``ref`` (sequence number or id prefix) out of the queue, unversioned.

    Raises:
        QueueError: no such entry.
    """
    queue = UploadQueue(manager.repo)
    with queue.flushing():
        entry = queue.find(ref)
        queue.remove(entry)
    logger.info("Dropped queued upload %s of %s", entry.describe(), entry.source)
    return entry


def source_size(path: Path) -> int:
    """The bytes of a file, or of every file below a folder (what its snapshot will take)."""
    if not path.is_dir():
        return path.stat().st_size
    total = 0
    for folder, _dirs, files in os.walk(path, followlinks=True):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.stat(os.path.join(folder, name)).st_size
    return total
