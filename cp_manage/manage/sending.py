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
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cp_manage.manage.repository import Repository

EARLY_UPLOAD = 16 * 1024 * 1024
"""Files at least this large start for storage as soon as they are in the cache; smaller ones
(a dataset's many files) go together afterwards, many at a time."""


class EarlyUploads:
    """The large files of one upload, each checked with storage (one HEAD) and sent if storage
    lacks it, one at a time on a thread of its own (storage sends large objects one at a time
    anyway, each in parallel parts).

    ``offer`` is called as each file lands in the cache; ``wait`` (from ``upload_objects``)
    waits for all of them and raises the first failure; ``close`` (always) stops taking more
    and waits for the one under way, so nothing runs on after the upload has failed.
    """

    def __init__(self, repo: Repository) -> None:
        self.repo = repo
        self.offered: dict[str, int] = {}  # object id -> size
        self._done: dict[str, int] = {}  # object id -> bytes of it sent (or known stored)
        self._stored: list[int] = []  # the sizes of those storage lacked, once stored
        self._resumed = 0  # bytes of them storage held from an interrupted upload
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
                if self.repo.storage.missing([oid]):
                    kept = self.repo.storage.upload(oid, self.repo.cache.path(oid),
                                                    progress=self._progress_of(oid))
                    with self._lock:
                        self._stored.append(self.offered[oid])
                        self._resumed += kept
                self._advance(oid, self.offered[oid])
            except BaseException as e:  # raised by wait, in the calling thread
                with self._lock:
                    self._error = e
                self._stop.set()

    def _progress_of(self, oid: str) -> Callable[[int, int], None]:
        def progress(done: int, _total: int) -> None:
            self._advance(oid, done)

        return progress

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
