"""Crash points for the crash-consistency and interruption tests.

A test sets ``CPV_TEST_KILL_AT=<point>`` in a cpv subprocess's environment; when the run reaches
that point the process kills itself with SIGKILL, exactly as an OOM-killer or a pulled plug
would, leaving whatever was half-done. ``CPV_TEST_SIGNAL_AT=<point>`` sends the process
``CPV_TEST_SIGNAL`` (SIGINT or SIGTERM, default SIGTERM) there instead: a real signal, handled
as one from a terminal or a batch scheduler would be. ``CPV_TEST_PAUSE_AT=<point>`` with
``CPV_TEST_PAUSE_FILE=<path>`` holds the process there instead: it creates ``<path>.reached`` and
waits (up to ``PAUSE_LIMIT`` seconds) until the test creates ``<path>``, so a test can act
between two steps of a real run (a teammate pushing while gc is between its plan and its
deletion). Unset, this costs three dictionary lookups.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

POINTS = ("hashing", "storage_upload", "multipart_part", "storage_download", "after_blobs",
          "after_commit", "after_push", "after_tag_created", "after_tag_pushed",
          "gc_before_recheck")
PAUSE_LIMIT = 300


def crash_point(name: str) -> None:
    """SIGKILL this process, or send it the requested signal, if the test asked for ``name``."""
    if os.environ.get("CPV_TEST_KILL_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
    if os.environ.get("CPV_TEST_SIGNAL_AT") == name:
        os.kill(os.getpid(), signal.Signals[os.environ.get("CPV_TEST_SIGNAL", "SIGTERM")])
    if os.environ.get("CPV_TEST_PAUSE_AT") == name:
        _pause(Path(os.environ["CPV_TEST_PAUSE_FILE"]))


def _pause(release: Path) -> None:
    release.with_name(f"{release.name}.reached").touch()
    deadline = time.monotonic() + PAUSE_LIMIT
    while not release.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
