"""Crash points for the crash-consistency and interruption tests.

A test sets ``CPV_TEST_KILL_AT=<point>`` in a cpv subprocess's environment; when the run reaches
that point the process kills itself with SIGKILL, exactly as an OOM-killer or a pulled plug
would, leaving whatever was half-done. ``CPV_TEST_SIGNAL_AT=<point>`` sends the process
``CPV_TEST_SIGNAL`` (SIGINT or SIGTERM, default SIGTERM) there instead: a real signal, handled
as one from a terminal or a batch scheduler would be. Unset, this costs two dictionary lookups.

``CPV_TEST_PAUSE_AT=<point>`` with ``CPV_TEST_PAUSE_FILE=<path>`` makes the run wait at that
point for as long as the file exists: a test holds a background upload there (a slow worker)
and lets it go by removing the file.
"""

from __future__ import annotations

import os
import signal
import time

POINTS = ("hashing", "storage_upload", "multipart_part", "storage_download", "after_blobs",
          "after_commit", "after_push", "after_tag_created", "after_tag_pushed", "queue_entry",
          "queue_done")


def crash_point(name: str) -> None:
    """SIGKILL this process, or send it the requested signal, if the test asked for ``name``."""
    if os.environ.get("CPV_TEST_KILL_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
    if os.environ.get("CPV_TEST_SIGNAL_AT") == name:
        os.kill(os.getpid(), signal.Signals[os.environ.get("CPV_TEST_SIGNAL", "SIGTERM")])


def pause_point(name: str) -> None:
    """Wait while ``CPV_TEST_PAUSE_FILE`` exists, if the test asked for ``name``."""
    if os.environ.get("CPV_TEST_PAUSE_AT") == name:
        while os.path.exists(os.environ.get("CPV_TEST_PAUSE_FILE", "")):
            time.sleep(0.05)
    crash_point(name)
