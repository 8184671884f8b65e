"""Putting a new file or folder in place of another so that the path never goes missing.

A revert or a download prepares the new version beside the old one, under a hidden name in the
same folder (a ``.cpv-tmp`` file or ``.cpv-tmpdir`` folder, which git ignores), and then swaps
the two names. On Linux the swap is one ``renameat2(RENAME_EXCHANGE)``: at every instant the
path names the old version or the new one, complete, and the old one ends under the hidden
name. Elsewhere a file is first hard-linked aside and then replaced by one rename, which is
just as safe; a folder takes two renames (the old one to ``.NAME.cpv-old``, the new one to the
path) with an instant between them in which the path is missing. A process killed in that
instant leaves the old folder at ``.NAME.cpv-old``, and ``recover`` puts it back: cpv calls it
before it touches the path again (every command that takes the repository's lock, and a
download into the same folder).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import shutil
import stat
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cp_manage.faults import crash_point, exchange_disabled
from cp_manage.fsutil import fsync_path

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
_UNSUPPORTED = {errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EPERM}
_renameat2: list[Callable[..., int] | None] = []  # looked up once


def _load_renameat2() -> Callable[..., int] | None:
    if not _renameat2:
        function: Any = None
        if sys.platform.startswith("linux"):
            try:
                function = ctypes.CDLL(None, use_errno=True).renameat2
                function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int,
                                     ctypes.c_char_p, ctypes.c_uint]
                function.restype = ctypes.c_int
            except (OSError, AttributeError):  # no libc renameat2 (glibc < 2.28, musl)
                function = None
        _renameat2.append(function)
    return _renameat2[0]


def exchange(first: Path, second: Path) -> bool:
    """Swap the names ``first`` and ``second`` (both must exist, in the same file system) in
    one atomic step; False when this platform or file system cannot, changing nothing.

    Raises:
        OSError: the swap was refused for another reason (a missing entry, permissions).
    """
    function = None if exchange_disabled() else _load_renameat2()
    if function is None:
        return False
    if function(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second),
                _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in _UNSUPPORTED:
        return False
    raise OSError(code, os.strerror(code), str(first), None, str(second))


def backup_path(target: Path) -> Path:
    """Where a folder waits, between the two renames of a swap without ``exchange``."""
    return target.with_name(f".{target.name}.cpv-old")


def swap_in(new: Path, target: Path) -> Path | None:
    """Make ``new`` (a file or folder beside ``target``) be ``target``.

    ``target`` names the old version or the new one at every instant (see the module for the
    one exception and how ``recover`` covers it). A new file is synced to disk before it takes
    the name. Returns where the old version now is (a hidden name beside ``target``, for the
    caller to remove, keep or pool), or None when there was none.
    """
    if new.is_file() and not new.is_symlink():
        fsync_path(new)
    if not os.path.lexists(target):
        os.rename(new, target)
        _sync_folder(target.parent)
        return None
    if exchange(new, target):
        crash_point("workspace_swapped")
        _sync_folder(target.parent)
        return new
    old = backup_path(target)
    remove(old)  # the path exists, so any backup there is from a swap that finished
    if not new.is_dir() and not os.path.isdir(target) and _linked(target, old):
        try:
            os.replace(new, target)  # the old file is under both names until here
        except BaseException:
            remove(old)
            raise
        crash_point("workspace_swapped")
        _sync_folder(target.parent)
        return old
    os.rename(target, old)
    crash_point("workspace_half_swapped")
    try:
        os.rename(new, target)
    except BaseException:
        os.rename(old, target)
        raise
    crash_point("workspace_swapped")
    _sync_folder(target.parent)
    return old


def _linked(source: Path, link: Path) -> bool:
    """Whether ``link`` could be made a hard link of ``source`` (some file systems refuse)."""
    try:
        os.link(source, link, follow_symlinks=False)
    except OSError:
        return False
    return True


def recover(target: Path) -> bool:
    """Put back the old version a swap killed half-way left at ``backup_path(target)`` when
    ``target`` itself is missing; returns whether it did."""
    old = backup_path(target)
    if os.path.lexists(target) or not os.path.lexists(old):
        return False
    os.rename(old, target)
    return True


def remove(path: Path) -> None:
    """Remove a file, a link or a folder tree (read-only entries too), whichever ``path`` is."""

    def make_writable(function: Any, failed: str, _exc: Any) -> None:
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(failed), 0o755)
            os.chmod(failed, 0o644)
        function(failed)

    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(info.st_mode):
        shutil.rmtree(path, onerror=make_writable)
    else:
        path.unlink()


def _sync_folder(folder: Path) -> None:
    """Make the renames in ``folder`` durable (best effort: not every file system can)."""
    with contextlib.suppress(OSError):
        fsync_path(folder, directory=True)
