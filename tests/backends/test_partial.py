"""Partial files and the md5 whose state a resumed download restores (cp_manage.md5state,
cp_manage.backends.partial): real files, real locks, libcrypto as Python loads it."""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import time
import zlib
from pathlib import Path

import pytest

from cp_manage import md5state
from cp_manage.backends import partial
from cp_manage.backends.partial import DownloadState, claimed, state_of


def test_a_saved_md5_state_goes_on_where_it_stopped() -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    for cut in (0, 1, 63, 64, 65, 1_000_003, len(data)):
        first = md5state.new_md5()
        first.update(data[:cut])
        saved = first.state()
        assert saved is not None and len(saved) == md5state.STATE_SIZE
        restored = md5state.md5_from_state(saved)
        assert restored is not None
        restored.update(memoryview(bytearray(data[cut:])))  # a writable buffer, as received
        assert restored.hexdigest() == hashlib.md5(data).hexdigest()
        assert first.hexdigest() == hashlib.md5(data[:cut]).hexdigest()  # and goes on too


def test_the_saved_state_md5_is_as_fast_as_hashlib() -> None:
    size = 64 * 1024 * 1024
    buffer = mmap.mmap(-1, size)
    buffer[:] = os.urandom(size)
    step = 4 * 1024 * 1024

    def run(md5: object) -> float:
        began = time.perf_counter()
        for offset in range(0, size, step):
            with memoryview(buffer) as view:
                chunk = view[offset:offset + step]
                md5.update(chunk)  # type: ignore[attr-defined]
                chunk.release()
        return time.perf_counter() - began

    ours = min(run(md5state.new_md5()) for _ in range(3))
    theirs = min(run(hashlib.md5(usedforsecurity=False)) for _ in range(3))
    buffer.close()
    assert md5state.can_save_state()
    assert ours < theirs * 1.3, (ours, theirs)


def test_a_second_writer_of_a_partial_file_in_use_writes_its_own(tmp_path: Path) -> None:
    path = tmp_path / "abc.cpv-partial"
    with claimed(path) as (_, fd):
        os.write(fd, b"first")
        assert partial.in_use(path)
        with claimed(path) as (second, other):
            os.write(other, b"second")
            assert second != path and second.name.endswith(".cpv-partial")
        assert not second.exists()  # not resumable by name: removed on the way out
    assert not partial.in_use(path) and path.read_bytes() == b"first"  # kept for a rerun


def record(tmp_path: Path, data: bytes, covered: int, *, md5_state: bool = True
           ) -> tuple[Path, int, DownloadState]:
    """A partial file holding ``data`` whose state says ``covered`` bytes arrived."""
    path = tmp_path / "obj.cpv-partial"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDWR)
    state = DownloadState(path, fd, "oid", len(data))
    md5 = md5state.new_md5()
    md5.update(data[:covered])
    state.save(covered, md5.state() if md5_state else None,
               [(0, covered // 2, zlib_crc(data[:covered // 2])),
                (covered // 2, covered, zlib_crc(data[covered // 2:covered]))])
    return path, fd, state


def zlib_crc(data: bytes) -> int:
    return zlib.crc32(data)


def test_a_download_resumes_from_its_record_and_checks_what_it_keeps(tmp_path: Path) -> None:
    data = os.urandom(200_000)
    path, fd, _ = record(tmp_path, data, 150_000)
    try:
        again = DownloadState(path, fd, "oid", len(data))
        start, md5, checks = again.resume()
        assert start == 150_000 and partial.verify(fd, checks)
        md5.update(data[start:])
        assert md5.hexdigest() == hashlib.md5(data).hexdigest()
        os.pwrite(fd, b"\0", 10)  # the kept bytes are no longer what arrived
        assert not partial.verify(fd, again.resume()[2])
    finally:
        os.close(fd)


def test_without_a_saved_md5_state_the_kept_bytes_are_hashed_again(tmp_path: Path) -> None:
    data = os.urandom(100_000)
    path, fd, _ = record(tmp_path, data, 60_000, md5_state=False)
    try:
        start, md5, checks = DownloadState(path, fd, "oid", len(data)).resume()
        assert (start, checks) == (60_000, [])  # hashed from the file: nothing left to check
        md5.update(data[start:])
        assert md5.hexdigest() == hashlib.md5(data).hexdigest()
    finally:
        os.close(fd)


@pytest.mark.parametrize("change", ["oid", "size", "inode", "beyond", "garbage"])
def test_a_record_of_another_file_starts_over(tmp_path: Path, change: str) -> None:
    data = os.urandom(100_000)
    path, fd, _ = record(tmp_path, data, 60_000)
    try:
        saved = json.loads(state_of(path).read_text())
        if change == "inode":  # the same bytes in another file (the old one still open)
            (tmp_path / "other").write_bytes(data)
            os.replace(tmp_path / "other", path)
            old, fd = fd, os.open(path, os.O_RDWR)
            os.close(old)
        elif change == "garbage":
            state_of(path).write_text("{not json")
        else:
            saved.update({"oid": {"oid": "other"}, "size": {"size": 5},
                          "beyond": {"covered": 200_000}}[change])
            state_of(path).write_text(json.dumps(saved))
        start, md5, checks = DownloadState(path, fd, "oid", len(data)).resume()
        assert (start, checks) == (0, [])
        assert md5.hexdigest() == hashlib.md5(b"").hexdigest()
    finally:
        os.close(fd)
