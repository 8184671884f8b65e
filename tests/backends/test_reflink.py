"""Snapshots on a file system with reflinks (XFS made on a loop device): the cache's copy shares
the source's blocks, so it costs no space and no copying, and stays private all the same.
Skipped where mkfs.xfs or a loop mount is not available."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from cp_manage.backends.cache import LocalCache

MiB = 1024 * 1024


@pytest.fixture
def xfs(tmp_path: Path) -> Iterator[Path]:
    if shutil.which("mkfs.xfs") is None or os.geteuid() != 0:
        pytest.skip("needs mkfs.xfs (xfsprogs) and root for a loop mount")
    image, mount = tmp_path / "xfs.img", tmp_path / "mnt"
    with open(image, "wb") as handle:
        handle.truncate(400 * MiB)
    subprocess.run(["mkfs.xfs", "-q", "-m", "reflink=1", str(image)], check=True, timeout=60)
    mount.mkdir()
    mounted = subprocess.run(["mount", "-o", "loop", str(image), str(mount)],
                             capture_output=True, timeout=60, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a loop device here: {mounted.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        with contextlib.suppress(subprocess.SubprocessError):
            subprocess.run(["umount", str(mount)], check=True, timeout=60)


def test_a_large_snapshot_is_a_reflink(xfs: Path) -> None:
    source = xfs / "model.bin"
    data = os.urandom(40 * MiB)
    source.write_bytes(data)
    os.sync()
    used_before = shutil.disk_usage(xfs).used
    cache = LocalCache(xfs / "cache")
    md5 = cache.add_file(source)
    cache.flush()
    assert md5 == hashlib.md5(data).hexdigest()
    assert shutil.disk_usage(xfs).used - used_before < 8 * MiB, "no second copy of the blocks"
    with open(source, "r+b") as handle:  # the training script writes the next epoch in place
        handle.write(b"x" * MiB)
    assert hashlib.md5(cache.path(md5).read_bytes()).hexdigest() == md5


def test_the_workspace_copy_of_a_snapshot_is_a_reflink_too(xfs: Path) -> None:
    """An upload from elsewhere: the workspace's copy shares the cache copy's blocks, so it too
    costs no space, and holds exactly the bytes hashed."""
    source = xfs / "epoch_3.safetensors"
    data = os.urandom(40 * MiB)
    source.write_bytes(data)
    os.sync()
    used_before = shutil.disk_usage(xfs).used
    cache = LocalCache(xfs / "cache")
    md5 = cache.add_file(source, copy_to=xfs / "workspace.safetensors")
    cache.flush()
    os.sync()
    assert shutil.disk_usage(xfs).used - used_before < 8 * MiB, "no copy of the blocks"
    assert (xfs / "workspace.safetensors").read_bytes() == data
    with open(xfs / "workspace.safetensors", "r+b") as handle:  # written in place: private
        handle.write(b"x" * MiB)
    assert hashlib.md5(cache.path(md5).read_bytes()).hexdigest() == md5 == hashlib.md5(
        data).hexdigest()
    assert source.read_bytes() == data
