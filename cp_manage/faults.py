"""Crash points for the crash-consistency tests.

A test sets ``CPV_TEST_KILL_AT=<point>`` in a cpv subprocess's environment; when the run reaches
that point the process kills itself with SIGKILL, exactly as an OOM-killer or a pulled plug
would, leaving whatever was half-done. Unset, this costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

POINTS = ("hashing", "storage_upload", "after_blobs", "after_commit", "after_tag_created")


def crash_point(name: str) -> None:
    """SIGKILL this process if the test asked to die at ``name``."""
    if os.environ.get("CPV_TEST_KILL_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
