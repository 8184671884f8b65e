"""The copy-while-hashing primitives the cache and local storage rely on, on real files."""

from __future__ import annotations

import errno
import hashlib
import os
import tempfile
from pathlib import Path

import pytest

from cp_manage import fsutil
from cp_manage.fsutil import copy_file_md5, copy_with_md5

MiB = 1024 * 1024


def random_file(path: Path, size: int) -> bytes:
    data = os.urandom(size)
    path.write_bytes(data)
    return data


def rw_target(folder: Path) -> tuple[int, Path]:
    fd, name = tempfile.mkstemp(dir=folder)
    return fd, Path(name)


@pytest.mark.parametrize("direct", [True, False])
@pytest.mark.parametrize("size", [0, 1, fsutil.PIPELINE_MIN + 1, 3 * fsutil.COPY_STEP + 12345,
                                  4 * fsutil.DIRECT_CHUNK])
def test_copy_lands_exact_bytes_and_their_md5(tmp_path: Path, size: int, direct: bool) -> None:
    """Around the page cache (O_DIRECT) or by the kernel (copy_file_range): same bytes."""
    data = random_file(tmp_path / "src", size)
    fd, target = rw_target(tmp_path)
    seen: list[int] = []
    with open(tmp_path / "src", "rb") as reader, os.fdopen(fd, "wb") as writer:
        md5, copied = copy_file_md5(reader, writer, total=size, direct=direct,
                                    progress=lambda done, _total: seen.append(done))
    assert copied == size
    assert target.read_bytes() == data
    assert md5 == hashlib.md5(data).hexdigest()
    if size:
        assert seen[-1] == size and seen == sorted(seen)


def test_a_write_only_target_falls_back_to_the_threaded_copy(tmp_path: Path) -> None:
    size = fsutil.PIPELINE_MIN + 7 * MiB
    data = random_file(tmp_path / "src", size)
    with open(tmp_path / "src", "rb") as reader, open(tmp_path / "dst", "xb") as writer:
        md5, copied = copy_file_md5(reader, writer, total=size, direct=False)
    assert (copied, md5) == (size, hashlib.md5(data).hexdigest())
    assert (tmp_path / "dst").read_bytes() == data


def test_the_direct_copy_writes_around_the_page_cache(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ext4 here has O_DIRECT: the copy is written through it, from block-aligned buffers."""
    size = 2 * fsutil.DIRECT_CHUNK + 4096 + 17  # whole chunks, whole blocks, then 17 bytes
    data = random_file(tmp_path / "src", size)
    opened: list[int | None] = []
    real_open = fsutil.open_direct

    def open_direct(path: Path | int, flags: int) -> int | None:
        opened.append(real_open(path, flags))
        return opened[-1]

    monkeypatch.setattr(fsutil, "open_direct", open_direct)
    fd, target = rw_target(tmp_path)
    with open(tmp_path / "src", "rb") as reader, os.fdopen(fd, "wb") as writer:
        md5, copied = copy_file_md5(reader, writer, total=size)
    assert opened and opened[0] is not None
    assert (copied, md5) == (size, hashlib.md5(data).hexdigest())
    assert target.read_bytes() == data


def test_a_refused_direct_write_falls_back_to_ordinary_writes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A filesystem that accepts O_DIRECT at open but refuses the write (EINVAL)."""
    size = 3 * fsutil.DIRECT_CHUNK + 5
    data = random_file(tmp_path / "src", size)
    direct_fds: list[int] = []
    real_open, real_pwrite = fsutil.open_direct, os.pwrite

    def open_direct(path: Path | int, flags: int) -> int | None:
        fd = real_open(path, flags)
        assert fd is not None
        direct_fds.append(fd)
        return fd

    def pwrite(fd: int, data: bytes, offset: int) -> int:
        if fd in direct_fds:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(fsutil, "open_direct", open_direct)
    monkeypatch.setattr(os, "pwrite", pwrite)
    fd, target = rw_target(tmp_path)
    with open(tmp_path / "src", "rb") as reader, os.fdopen(fd, "wb") as writer:
        md5, copied = copy_file_md5(reader, writer, total=size)
    assert direct_fds
    assert (copied, md5) == (size, hashlib.md5(data).hexdigest())
    assert target.read_bytes() == data


def test_a_failing_direct_write_reaches_the_caller(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    size = 3 * fsutil.DIRECT_CHUNK
    random_file(tmp_path / "src", size)
    real_pwrite = os.pwrite
    calls: list[int] = []

    def pwrite(fd: int, data: bytes, offset: int) -> int:
        calls.append(offset)
        if offset >= fsutil.DIRECT_CHUNK:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", pwrite)
    fd, _ = rw_target(tmp_path)
    with open(tmp_path / "src", "rb") as reader, os.fdopen(fd, "wb") as writer:
        with pytest.raises(OSError, match="No space left"):
            copy_file_md5(reader, writer, total=size)
    assert calls


@pytest.mark.parametrize("direct", [True, False])
def test_a_source_that_grew_is_copied_only_up_to_the_size_seen(tmp_path: Path,
                                                                direct: bool) -> None:
    size = fsutil.PIPELINE_MIN + MiB
    data = random_file(tmp_path / "src", size + 5 * MiB)
    fd, target = rw_target(tmp_path)
    with open(tmp_path / "src", "rb") as reader, os.fdopen(fd, "wb") as writer:
        md5, copied = copy_file_md5(reader, writer, total=size, direct=direct)
    assert copied == size
    assert target.read_bytes() == data[:size]
    assert md5 == hashlib.md5(data[:size]).hexdigest()


@pytest.mark.parametrize("direct", [True, False])
def test_a_source_that_shrank_hashes_what_landed(tmp_path: Path, direct: bool) -> None:
    data = random_file(tmp_path / "src", 2 * MiB + 100)
    fd, target = rw_target(tmp_path)
    with open(tmp_path / "src", "rb") as reader, os.fdopen(fd, "wb") as writer:
        md5, copied = copy_file_md5(reader, writer, total=fsutil.PIPELINE_MIN + MiB,
                                    direct=direct)
    assert (copied, md5) == (len(data), hashlib.md5(data).hexdigest())
    assert target.read_bytes() == data


def test_the_threaded_copy_raises_a_write_failure_in_the_caller(tmp_path: Path) -> None:
    size = fsutil.PIPELINE_MIN + MiB
    random_file(tmp_path / "src", size)
    with open(tmp_path / "src", "rb") as reader, open("/dev/full", "wb") as writer:
        with pytest.raises(OSError) as raised:
            copy_with_md5(reader, writer, total=size)
    assert "No space left" in str(raised.value)


@pytest.mark.parametrize("direct", [True, False])
@pytest.mark.parametrize("size", [5, fsutil.PIPELINE_MIN + 1, 2 * fsutil.DIRECT_CHUNK + 4096 + 17])
def test_a_second_copy_gets_the_very_bytes_hashed(tmp_path: Path, size: int,
                                                  direct: bool) -> None:
    """``also``: one read and one hash, two identical copies (whichever way the copy runs)."""
    data = random_file(tmp_path / "src", size)
    fd, target = rw_target(tmp_path)
    with open(tmp_path / "src", "rb") as reader, os.fdopen(fd, "wb") as writer, \
            open(tmp_path / "second", "xb") as second:
        md5, copied = copy_file_md5(reader, writer, total=size, direct=direct, also=second)
    assert (copied, md5) == (size, hashlib.md5(data).hexdigest())
    assert target.read_bytes() == data
    assert (tmp_path / "second").read_bytes() == data
