"""The local cache: private copies, hashed as copied, on disk before anything records them."""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from pathlib import Path

import pytest

from cp_manage.backends import cache as cache_module
from cp_manage.backends.cache import LocalCache

MiB = 1024 * 1024


def test_a_large_object_is_usable_at_once_and_durable_after_flush(tmp_path: Path) -> None:
    data = os.urandom(cache_module.BACKGROUND_SYNC + MiB)
    (tmp_path / "model.bin").write_bytes(data)
    cache = LocalCache(tmp_path / "cache")

    md5 = cache.add_file(tmp_path / "model.bin")

    assert md5 == hashlib.md5(data).hexdigest()
    assert cache.path(md5).read_bytes() == data  # readable (for the upload) while syncing
    assert stat.S_IMODE(cache.path(md5).stat().st_mode) == 0o444
    cache.flush()
    assert not cache._syncing and cache.has(md5)
    # Writing the workspace file in place afterwards never reaches the cached copy.
    with open(tmp_path / "model.bin", "r+b") as handle:
        handle.write(b"epoch 2")
    assert cache.verify(md5)


def test_a_copy_the_disk_refused_is_dropped_by_flush(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "model.bin").write_bytes(os.urandom(cache_module.BACKGROUND_SYNC))
    cache = LocalCache(tmp_path / "cache")

    def failing_fsync(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", failing_fsync)  # the disk's failure only
    md5 = cache.add_file(tmp_path / "model.bin")
    cache.flush()

    assert not cache.has(md5)  # gone, so the next upload copies it again
    monkeypatch.undo()
    assert cache.add_file(tmp_path / "model.bin") == md5
    cache.flush()
    assert cache.verify(md5)


def test_small_objects_are_synced_before_add_file_returns(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"x" * 1000)
    cache = LocalCache(tmp_path / "cache")
    cache.add_file(tmp_path / "f")
    assert not cache._syncing
