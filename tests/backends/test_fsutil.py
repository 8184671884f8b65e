"""The copy-while-hashing primitives the cache and local storage rely on, on real files."""

from __future__ import annotations

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


@pytest.mark.parametrize("size", [0, 1, fsutil.PIPELINE_MIN + 1, 3 * fsutil.COPY_STEP + 12345])
def test_kernel_copy_lands_exact_bytes_and_their_md5(tmp_path: Path, size: int) -> None:
    data = random_file(tmp_path / "src", size)
    fd, target = rw_target(tmp_path)
    seen: list[int] = []
    with open(tmp_path / "src", "rb") as reader, os.fdopen(fd, "wb") as writer:
        md5, copied = copy_file_md5(reader, writer, total=size,
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
        md5, copied = copy_file_md5(reader, writer, total=size)
    assert (copied, md5) == (size, hashlib.md5(data).hexdigest())
    assert (tmp_path / "dst").read_bytes() == data


def test_a_source_that_grew_is_copied_only_up_to_the_size_seen(tmp_path: Path) -> None:
    size = fsutil.PIPELINE_MIN + MiB
    data = random_file(tmp_path / "src", size + 5 * MiB)
    fd, target = rw_target(tmp_path)
    with open(tmp_path / "src", "rb") as reader, os.fdopen(fd, "wb") as writer:
        md5, copied = copy_file_md5(reader, writer, total=size)
    assert copied == size
    assert target.read_bytes() == data[:size]
    assert md5 == hashlib.md5(data[:size]).hexdigest()


def test_a_source_that_shrank_hashes_what_landed(tmp_path: Path) -> None:
    data = random_file(tmp_path / "src", 2 * MiB)
    fd, target = rw_target(tmp_path)
    with open(tmp_path / "src", "rb") as reader, os.fdopen(fd, "wb") as writer:
        md5, copied = copy_file_md5(reader, writer, total=fsutil.PIPELINE_MIN + MiB)
    assert (copied, md5) == (len(data), hashlib.md5(data).hexdigest())
    assert target.read_bytes() == data


def test_the_threaded_copy_raises_a_write_failure_in_the_caller(tmp_path: Path) -> None:
    size = fsutil.PIPELINE_MIN + MiB
    random_file(tmp_path / "src", size)
    with open(tmp_path / "src", "rb") as reader, open("/dev/full", "wb") as writer:
        with pytest.raises(OSError) as raised:
            copy_with_md5(reader, writer, total=size)
    assert "No space left" in str(raised.value)
