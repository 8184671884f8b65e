"""The local cache: private copies, hashed as copied, on disk before anything records them."""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import sys
from pathlib import Path

import pytest

from cp_manage import fsutil
from cp_manage.backends import cache as cache_module
from cp_manage.backends.cache import LocalCache
from cp_manage.errors import ArtifactNotFoundError

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


def sync_calls(monkeypatch: pytest.MonkeyPatch, *, fail: bool = False) -> list[str]:
    """Record every fsync and syncfs from now on (and, with ``fail``, make them fail)."""
    calls: list[str] = []
    real_fsync, real_syncfs = os.fsync, cache_module.sync_filesystem

    def fsync(fd: int) -> None:
        calls.append("fsync")
        if fail:
            raise OSError(errno.EIO, "Input/output error")
        real_fsync(fd)

    def syncfs(fd: int) -> bool:
        calls.append("syncfs")
        if fail:
            raise OSError(errno.EIO, "Input/output error")
        return real_syncfs(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(cache_module, "sync_filesystem", syncfs)
    return calls


def small_files(folder: Path, count: int) -> list[Path]:
    folder.mkdir(exist_ok=True)
    for n in range(count):
        (folder / f"{n}.bin").write_bytes(os.urandom(100 + n))
    return sorted(folder.iterdir())


def test_many_small_objects_reach_the_disk_together_at_flush(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No fsync per file as it is added: ``flush``, which runs before anything records them,
    syncs the batch with one syncfs (or, where that cannot report a failure, one fsync per file
    and folder)."""
    cache = LocalCache(tmp_path / "cache")
    calls = sync_calls(monkeypatch)
    oids = [cache.add_file(path) for path in small_files(tmp_path / "data", 40)]
    assert calls == [] and all(cache.verify(oid) for oid in oids)
    cache.flush()
    folders = {cache.path(oid).parent for oid in oids}
    assert calls == (["syncfs"] if syncfs_vouches() else
                     ["syncfs", *["fsync"] * (len(oids) + len(folders))])
    assert all(cache.verify(oid) for oid in oids) and cache._batch_fd is None
    # A few objects: one fsync each, and one per folder that names them.
    calls.clear()
    oid = cache.add_file(small_files(tmp_path / "few", 1)[0])
    cache.flush()
    assert calls == ["fsync", "fsync"] and cache.verify(oid)


def test_a_batch_the_disk_refused_is_dropped_by_flush(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = LocalCache(tmp_path / "cache")
    paths = small_files(tmp_path / "data", 30)
    oids = [cache.add_file(path) for path in paths]
    sync_calls(monkeypatch, fail=True)
    cache.flush()
    assert not any(cache.has(oid) for oid in oids)  # none trusted, so all are copied again
    monkeypatch.undo()
    assert [cache.add_file(path) for path in paths] == oids
    cache.flush()
    assert all(cache.verify(oid) for oid in oids)


def syncfs_vouches() -> bool:
    """Whether syncfs here reports failed writes (Linux 5.8+)."""
    major, minor = (int(n) for n in os.uname().release.split(".")[:2])
    return sys.platform.startswith("linux") and (major, minor) >= (5, 8)


def test_syncfs_declines_where_it_cannot_vouch_for_the_writes(tmp_path: Path) -> None:
    """On Linux 5.8+ it syncs (True); elsewhere it declines (False) and the cache fsyncs."""
    fd = os.open(tmp_path, os.O_RDONLY)
    try:
        (tmp_path / "f").write_bytes(b"x")
        assert fsutil.sync_filesystem(fd) == syncfs_vouches()
    finally:
        os.close(fd)


@pytest.mark.parametrize("size", [10, fsutil.PIPELINE_MIN + MiB + 3])
def test_a_second_private_copy_is_written_from_the_bytes_hashed(tmp_path: Path,
                                                                size: int) -> None:
    """``copy_to``: what the workspace needs after an upload from elsewhere, without reading
    or hashing the file again; a file already cached gets none."""
    data = os.urandom(size)
    (tmp_path / "model.bin").write_bytes(data)
    cache = LocalCache(tmp_path / "cache")

    md5 = cache.add_file(tmp_path / "model.bin", copy_to=tmp_path / "copy")

    assert md5 == hashlib.md5(data).hexdigest()
    assert (tmp_path / "copy").read_bytes() == cache.path(md5).read_bytes() == data
    info = (tmp_path / "copy").stat()
    assert stat.S_IMODE(info.st_mode) & 0o600 == 0o600 and info.st_nlink == 1
    assert info.st_ino != cache.path(md5).stat().st_ino
    assert cache.add_file(tmp_path / "model.bin", known_md5=md5,
                          copy_to=tmp_path / "again") == md5
    assert not (tmp_path / "again").exists()


def test_a_second_copy_is_removed_when_the_source_changes_while_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = tmp_path / "model.bin"
    source.write_bytes(os.urandom(fsutil.PIPELINE_MIN + MiB))
    real = fsutil.copy_file_md5

    def rewritten_meanwhile(*args: object, **kwargs: object) -> tuple[str, int]:
        result = real(*args, **kwargs)  # type: ignore[arg-type]
        with open(source, "r+b") as handle:  # a training script saving the next epoch
            handle.write(b"epoch 2")
        return result

    monkeypatch.setattr(cache_module, "copy_file_md5", rewritten_meanwhile)
    cache = LocalCache(tmp_path / "cache")
    with pytest.raises(ArtifactNotFoundError, match="changed while cpv was reading it"):
        cache.add_file(source, copy_to=tmp_path / "copy")
    assert not (tmp_path / "copy").exists()
    assert [p.name for p in (tmp_path / "cache").rglob("*") if p.is_file()] == []
