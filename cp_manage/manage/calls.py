"""What every public method of the managers does with its arguments on entry.

Paths the caller gives are relative to the caller's current directory (``caller_path``), and
``verbose=True`` turns on INFO logging (``enable_verbose``); the library never prints.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

logger = logging.getLogger("cp_manage")
logger.addHandler(logging.NullHandler())


def caller_path(path: str | os.PathLike[str]) -> Path:
    """A path the caller gave, made absolute against the caller's current directory.

    Every public method resolves its path arguments with this once, on entry: a relative path
    means what it means in the caller's shell, never something inside the repository.
    """
    return Path(path).expanduser().absolute()


def enable_verbose(verbose: bool) -> None:
    """``verbose=True``: let the ``cp_manage`` logger pass INFO records on to the handlers the
    application configured (the library itself never prints). A lower level set by the
    application (DEBUG) is kept."""
    if verbose and not logger.isEnabledFor(logging.INFO):
        logger.setLevel(logging.INFO)
