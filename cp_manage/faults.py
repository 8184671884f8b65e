"""Crash points for the crash-consistency and interruption tests.

A test sets ``CPV_TEST_KILL_AT=<point>`` in a cpv subprocess's environment; when the run reaches
that point the process kills itself with SIGKILL, exactly as an OOM-killer or a pulled plug
would, leaving whatever was half-done. ``CPV_TEST_SIGNAL_AT=<point>`` sends the process
``CPV_TEST_SIGNAL`` (SIGINT or SIGTERM, default SIGTERM) there instead: a real signal, handled
as one from a terminal or a batch scheduler would be. Unset, this costs two dictionary lookups.

``CPV_TEST_PAUSE_AT=<point>`` with ``CPV_TEST_PAUSE_FILE=<path>`` makes the run wait at that
point for as long as the file exists: a test holds a background upload there (a slow worker)
and lets it go by removing the file. With ``CPV_TEST_PAUSED_FILE=<path>`` too, the run creates
that file once it waits, so the test knows when to act (a teammate pushing while gc is between
its plan and its deletion).

``CPV_TEST_NO_RENAME_EXCHANGE=1`` makes cpv swap files and folders the way it does where the
platform has no atomic exchange (``cp_manage.swap``).

``CPV_TEST_PACE`` and ``CPV_TEST_PART_SIZE`` slow transfers down and cut them into small parts,
so a test can kill a real transfer from outside at a real point.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable

POINTS = ("hashing", "storage_upload", "multipart_part", "storage_download", "after_blobs",
          "after_commit", "after_push", "after_tag_created", "after_tag_pushed", "queue_entry",
          "queue_done", "gc_before_recheck", "workspace_staged", "workspace_half_swapped",
          "workspace_swapped")


def crash_point(name: str) -> None:
    """SIGKILL this process, or send it the requested signal, if the test asked for ``name``."""
    if os.environ.get("CPV_TEST_KILL_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
    if os.environ.get("CPV_TEST_SIGNAL_AT") == name:
        os.kill(os.getpid(), signal.Signals[os.environ.get("CPV_TEST_SIGNAL", "SIGTERM")])


def pause_point(name: str) -> None:
    """Wait while ``CPV_TEST_PAUSE_FILE`` exists, if the test asked for ``name``."""
    if os.environ.get("CPV_TEST_PAUSE_AT") == name:
        if os.environ.get("CPV_TEST_PAUSED_FILE"):
            open(os.environ["CPV_TEST_PAUSED_FILE"], "a").close()
        while os.path.exists(os.environ.get("CPV_TEST_PAUSE_FILE", "")):
            time.sleep(0.05)
    crash_point(name)


def exchange_disabled() -> bool:
    """Whether a test asked for swaps without ``renameat2(RENAME_EXCHANGE)``."""
    return os.environ.get("CPV_TEST_NO_RENAME_EXCHANGE") == "1"


_pace_lock = threading.Lock()


def pace() -> None:
    """Tests only: with ``CPV_TEST_PACE=<seconds>``, every transfer step (a part sent or
    received, a chunk copied) waits its turn, one at a time, that many seconds apart, so a
    test can stop a transfer of a few MiB half-way from outside, as a slow link would allow."""
    delay = os.environ.get("CPV_TEST_PACE")
    if delay:
        with _pace_lock:
            time.sleep(float(delay))


def part_size(default: int) -> int:
    """The transfer part size: ``default``, or ``CPV_TEST_PART_SIZE`` (bytes) in tests, so a
    multi-part transfer needs a few MiB, not hundreds (read once, when cpv's modules load)."""
    value = os.environ.get("CPV_TEST_PART_SIZE")
    return int(value) if value else default


def paced(progress: Callable[[int, int], None] | None) -> Callable[[int, int], None] | None:
    """``progress``, made to ``pace()`` at every call when ``CPV_TEST_PACE`` is set (a copy
    reports each chunk, so this paces the copy itself)."""
    if not os.environ.get("CPV_TEST_PACE"):
        return progress

    def step(done: int, total: int) -> None:
        pace()
        if progress:
            progress(done, total)

    return step
