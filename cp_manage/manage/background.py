"""Background uploads: hand a checkpoint off in the time it takes to snapshot it.

``manager.background()`` returns ``BackgroundUploads``. Its ``submit`` copies the checkpoint
into the local cache (hashed as it is copied), writes a durable queue entry (``queue.py``) and
returns a ``Future``; the training script may then overwrite or delete its file at once. One
worker thread stores, commits, pushes and tags the entries strictly in submit order. A failure
is raised from its own future, and again by the next ``submit`` and by ``close``; the failed
entry and those after it stay queued on disk for ``cpv model flush``.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future
from types import TracebackType
from typing import TYPE_CHECKING, Any

from cp_manage.artifacts import check_metrics
from cp_manage.errors import CPVError
from cp_manage.manage.calls import caller_path
from cp_manage.manage.queue import (
    QueueEntry,
    QueueError,
    TagRequest,
    UploadQueue,
    flush_next,
    new_entry,
    result_of_done,
    source_size,
)
from cp_manage.manage.workspace import handler_for

if TYPE_CHECKING:
    import os

    from cp_manage.manage.base import CheckpointManager

logger = logging.getLogger(__name__)

IDLE_CHECK = 0.5
"""Seconds between the idle worker's checks that the program is still running."""


class BackgroundUploads:
    """Uploads that run on one background thread, in submit order, from a durable queue.

    Use as a context manager (leaving it waits for every upload), or call ``close()``. Entries
    an earlier process left in the queue are completed first. Without ``close()`` the worker
    still finishes the queue when the program's main thread ends; a killed process loses
    nothing (``cpv model flush``, or the next ``background()``, completes the queue).

    Args:
        manager: the manager whose repository the uploads go to.
        max_pending_bytes: ``submit`` waits while the snapshots not yet versioned, with the new
            one, would add up to more than this; None (the default) leaves room for two
            checkpoints of the size being submitted: one uploading, the new one waiting.
    """

    def __init__(self, manager: CheckpointManager, *, max_pending_bytes: int | None = None
                 ) -> None:
        if max_pending_bytes is not None and max_pending_bytes < 1:
            raise CPVError(f"max_pending_bytes must be positive, not {max_pending_bytes}")
        self._manager = manager
        self._repo = manager.repo  # the submitting side's: snapshots go through it
        # The worker's own manager and repository: nothing in them is shared across threads.
        self._worker_manager = type(manager)(repo_path=self._repo.root, config=manager.config)
        self._queue = UploadQueue(self._repo)
        self._max_pending = max_pending_bytes
        self._cond = threading.Condition()
        self._submitting = threading.Lock()  # one submit at a time: order is submit order
        self._futures: dict[str, Future[str]] = {}
        self._entries: dict[str, QueueEntry] = {}  # what this object submitted
        # Every entry still to be versioned, with its bytes: those an earlier process left, then
        # the ones submitted here.
        self._sizes: dict[str, int] = {entry.id: entry.size_bytes
                                       for entry in self._queue.entries()}
        self._failure: QueueError | None = None
        self._stopping = False
        self._closed = False
        self._worker = threading.Thread(target=self._run, name="cpv-background-upload",
                                        daemon=False)
        self._worker.start()

    # -- the caller's side ---------------------------------------------------------------------

    def submit(self, model_path: str | os.PathLike[str] | None = None,
               metrics: dict[str, Any] | None = None, message: str | None = None,
               tag: TagRequest = True, *, source_key: str | None = None) -> Future[str]:
        """Snapshot the checkpoint and queue its upload; returns once the snapshot is durable.

        Args:
            model_path: a file or folder anywhere (relative to the current directory); default
                the workspace artifact. It may be overwritten or deleted once this returns.
            metrics: a JSON object (NaN and ±inf allowed) describing this checkpoint.
            message: the commit message; the version carries it.
            tag: True for the next minor version, ``"major"``, a version such as ``"v2.0"``,
                or False for an upload without a version.
            source_key: recorded with the upload (a commit trailer), so a watcher can tell a
                source it has already submitted.

        Returns:
            A Future whose result is the version (or the commit, when ``tag`` is False).

        Raises:
            QueueError: an earlier upload failed (it stays queued); nothing was submitted.
            ArtifactNotFoundError, InvalidVersionError, CPVError: the checkpoint, the metrics
                or the version asked for cannot be used.
        """
        with self._submitting:
            self._raise_failure()
            if self._closed:
                raise CPVError("These background uploads are closed",
                               hint="Call manager.background() again for new uploads.")
            repo, spec = self._repo, self._manager.spec
            handler = handler_for(spec)
            checked = check_metrics(metrics) if metrics is not None else None
            request = _check_tag(self._manager, tag)
            source = caller_path(model_path) if model_path else repo.root / spec.path
            path = handler.check_source(repo, source)
            self._wait_for_room(source_size(path))
            pointer = handler.stage(repo, path, progress=None)
            objects = handler.objects(repo, pointer)
            repo.cache.flush()  # the snapshot is on disk before the entry names it
            repo.state.save()
            entry = new_entry(pointer, objects, metrics=checked, message=message, tag=request,
                              source=path, source_key=source_key)
            future: Future[str] = Future()
            future.set_running_or_notify_cancel()
            with self._cond:
                self._queue.add(entry)
                self._futures[entry.id] = future
                self._entries[entry.id] = entry
                self._sizes[entry.id] = entry.size_bytes
                self._cond.notify_all()
            logger.info("Queued %s as upload %s", path, entry.describe())
            return future

    def pending(self) -> list[QueueEntry]:
        """The entries waiting in the queue (of every process), oldest first."""
        return self._queue.entries()

    def wait(self) -> None:
        """Wait until every upload submitted (and every one an earlier process left) is
        versioned.

        Raises:
            QueueError: an upload failed (it and those after it stay queued).
        """
        with self._cond:
            while self._sizes and self._failure is None and self._worker.is_alive():
                self._cond.wait()
        self._raise_failure()

    def close(self) -> None:
        """Wait for every upload, then stop the worker.

        Raises:
            QueueError: an upload failed (it and those after it stay queued).
        """
        with self._submitting:
            self._closed = True
        try:
            self.wait()
        finally:
            self.stop()

    def stop(self) -> list[QueueEntry]:
        """Stop once the upload under way is done, leaving the rest queued on disk (for
        ``cpv model flush``); returns what is left. No upload is cut in half."""
        with self._cond:
            self._stopping = True
            self._closed = True
            self._cond.notify_all()
        self._worker.join()
        return self._queue.entries()

    def __enter__(self) -> BackgroundUploads:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        if error is not None and not isinstance(error, Exception):
            # Ctrl-C, SIGTERM, exit: finish the upload under way, keep the rest queued.
            left = self.stop()
            if left:
                logger.warning("%d upload(s) wait in the queue of %s; 'cpv model flush' "
                               "completes them", len(left), self._repo.root)
            return
        self.close()

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise QueueError(self._failure.message, hint=self._failure.hint) from self._failure

    def _wait_for_room(self, size: int) -> None:
        limit = self._max_pending if self._max_pending is not None else 2 * size
        with self._cond:
            while (self._failure is None and self._sizes
                   and sum(self._sizes.values()) + size > limit):
                logger.info("Waiting for earlier uploads to finish (backpressure)")
                self._cond.wait()
        self._raise_failure()

    # -- the worker ----------------------------------------------------------------------------

    def _run(self) -> None:
        manager = self._worker_manager
        queue = UploadQueue(manager.repo)
        while True:
            with self._cond:
                while not self._stopping and not self._sizes:
                    if not threading.main_thread().is_alive():
                        return  # the program has ended and nothing is left to do
                    self._cond.wait(IDLE_CHECK)
                if self._stopping:
                    return
            try:
                completed = flush_next(manager, queue)
                if completed is not None:
                    self._finish(completed.entry.id, completed.result)
                self._settle_vanished(manager, queue)
            except QueueError as e:
                self._fail(e)
                return
            except BaseException as e:  # a bug, or an interruption: never swallowed
                self._fail(QueueError(f"A background upload stopped: {type(e).__name__}: "
                                      f"{e}"))
                if not isinstance(e, Exception):
                    raise
                return

    def _finish(self, entry_id: str, result: str | None, error: CPVError | None = None
                ) -> None:
        with self._cond:
            future = self._futures.pop(entry_id, None)
            self._sizes.pop(entry_id, None)
            self._entries.pop(entry_id, None)
            self._cond.notify_all()
        if future is not None:
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result or "")

    def _settle_vanished(self, manager: CheckpointManager, queue: UploadQueue) -> None:
        """Resolve the entries another flusher completed (or dropped) meanwhile."""
        on_disk = {entry.id for entry in queue.entries()}
        with self._cond:
            gone = [(entry_id, self._entries.get(entry_id)) for entry_id in self._sizes
                    if entry_id not in on_disk]
        for entry_id, entry in gone:
            result = result_of_done(manager, entry) if entry is not None else None
            if entry is None or result is not None:
                self._finish(entry_id, result)
            else:
                self._finish(entry_id, None, QueueError(
                    f"Queued upload {entry.describe()} was dropped from the queue before it "
                    "was versioned", hint="Submit the checkpoint again if it is still wanted."))

    def _fail(self, error: QueueError) -> None:
        """Record the failure: its own future gets it, the later ones say they still wait."""
        with self._cond:
            self._failure = error
            futures, self._futures = self._futures, {}
            self._cond.notify_all()
        for entry_id, future in futures.items():
            future.set_exception(error if entry_id == error.entry_id else QueueError(
                f"Not uploaded yet: an earlier upload failed ({error.message})"))
        logger.warning("%s", error)


def _check_tag(manager: CheckpointManager, tag: object) -> TagRequest:
    """Validate the version asked for before anything is snapshotted.

    Raises:
        InvalidVersionError, CPVError.
    """
    if isinstance(tag, bool):
        return tag
    if tag == "major":
        return "major"
    if not isinstance(tag, str):
        raise CPVError(f"tag must be True, False, 'major' or a version such as 'v1.0', not "
                       f"{tag!r}")
    return manager.spec.tag(manager.spec.parse(tag))

