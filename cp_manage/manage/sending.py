"""A folder's large files on their way to storage while the rest of it is still being hashed.

Hashing and sending are each a pass over every byte, and on a folder of shards both are long:
sent one after the other, an upload costs the hashing of the whole folder plus the sending of
it. ``EarlyUploads`` takes each large file as soon as ``DirHandler.stage`` has it in the cache
and sends it on a background thread, while the next files are hashed: the upload then costs
about the hashing of the first shard plus the sending of all. ``upload_objects`` sends the rest
and waits for these before any listing, so a listing in storage still means every file it
names is there.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from cp_manage.manage.repository import Repository

TALLY_KEY = "early uploads"


class Tally(Protocol):
    """Where resumed bytes are counted (``handlers.ResumedTally``)."""

    def resumed(self, key: str, kept: int) -> None: ...


class _Progress:
    """One early upload's progress callback (bytes stored so far), with the ``resumed``
    method ``Storage.upload`` calls when it continues an interrupted upload."""

    def __init__(self, uploads: EarlyUploads, oid: str) -> None:
        self.uploads, self.oid = uploads, oid

    def __call__(self, done: int, _total: int) -> None:
        self.uploads._advance(self.oid, done)

    def resumed(self, done: int, _total: int) -> None:
        self.uploads._resumed_from(self.oid, done)


EARLY_UPLOAD = 16 * 1024 * 1024
"""Files at least this large start for storage as soon as they are in the cache; smaller ones
(a dataset's many files) go together afterwards, many at a time."""


class EarlyUploads:
    """The large files of one upload, each checked with storage (one HEAD) and sent if storage
    lacks it, one at a time on a thread of its own (storage sends large objects one at a time
    anyway, each in parallel parts).

    A file storage holds whole already is not taken (one HEAD at ``offer``): ``upload_objects``
    counts it with what an interrupted upload left. ``offer`` is called as each file lands in
    the cache; ``wait`` (from ``upload_objects``)
    waits for all of them and raises the first failure; ``close`` (always) stops taking more
    and waits for the one under way, so nothing runs on after the upload has failed.
    """

    def __init__(self, repo: Repository) -> None:
        self.repo = repo
        self.offered: dict[str, int] = {}  # object id -> size
        self._done: dict[str, int] = {}  # object id -> bytes of it sent (or known stored)
        self._stored: list[int] = []  # the sizes of those storage lacked, once stored
        self._resumed = 0  # bytes of them storage held from an interrupted upload
        self._kept: dict[str, int] = {}  # object id -> bytes an interrupted upload left of it
        self._finished: set[str] = set()
        self._tally: Tally | None = None
        self._queue: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._report: Callable[[int], None] | None = None
        self._thread: threading.Thread | None = None

    def offer(self, oid: str, size: int) -> None:
        """Send object ``oid`` (in the cache, ``size`` bytes) now if it is large; else leave
        it to ``upload_objects``."""
        if size < EARLY_UPLOAD or self._stop.is_set():
            return
        with self._lock:
            if oid in self.offered:
                return
        if not self.repo.storage.missing([oid]):
            return  # stored whole already (by an interrupted upload, or an earlier version)
        with self._lock:
            self.offered[oid] = size
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="cpv-early-upload",
                                                daemon=True)
                self._thread.start()
        self._queue.put(oid)

    def _run(self) -> None:
        while (oid := self._queue.get()) is not None:
            if self._stop.is_set():
                continue  # failed or closed: drain without sending
            try:
                kept = self.repo.storage.upload(oid, self.repo.cache.path(oid),
                                                progress=_Progress(self, oid))
                with self._lock:
                    self._stored.append(self.offered[oid])
                    self._resumed += kept
                    self._finished.add(oid)
                self._advance(oid, self.offered[oid])
            except BaseException as e:  # raised by wait, in the calling thread
                with self._lock:
                    self._error = e
                self._stop.set()

    def _resumed_from(self, oid: str, kept: int) -> None:
        """Storage held ``kept`` bytes of ``oid`` from an interrupted upload."""
        with self._lock:
            self._kept[oid] = kept
            tally = self._tally
        self._advance(oid, kept)
        if tally is not None:
            tally.resumed(TALLY_KEY, kept)

    def attach(self, tally: Tally) -> None:
        """Tell ``tally`` (``upload_objects``' count of what was resumed) of what the uploads
        resumed so far and from now on; they count as one transfer of its first wave."""
        with self._lock:
            self._tally, kept = tally, sum(self._kept.values())
        tally.resumed(TALLY_KEY, kept)

    def _advance(self, oid: str, done: int) -> None:
        with self._lock:
            self._done[oid] = done
            report, sent = self._report, sum(self._done.values())
        if report is not None:
            report(sent)

    def sent(self) -> int:
        """Bytes of the offered files sent so far (or found already stored)."""
        with self._lock:
            return sum(self._done.values())

    def begun(self) -> int:
        """Bytes in storage of the offered file under way (parts stored, a partial file)."""
        with self._lock:
            return sum(done for oid, done in self._done.items() if oid not in self._finished)

    def stored(self) -> list[int]:
        """The sizes of the offered files storage lacked that are now stored."""
        with self._lock:
            return list(self._stored)

    def wait(self, report: Callable[[int], None] | None = None) -> tuple[int, int]:
        """Wait until every offered file is stored, telling ``report`` the bytes sent so far
        as they grow; returns the bytes of the files storage lacked, and how many of those it
        held already from an interrupted upload (and were not sent again).

        Raises:
            Whatever an upload raised (StorageError, ...).
        """
        with self._lock:
            self._report = report
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join()
        if self._error is not None:
            raise self._error
        with self._lock:
            return sum(self._stored), self._resumed

    def close(self) -> None:
        """Send nothing more; wait for the file under way (its upload is whole or aborted)."""
        self._stop.set()
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join()
