"""Expected failures of the machine get a fix, not "please report it": a full disk (naming the
path, the space needed and the space free), a read-only file system, a refused permission, and
a closed output pipe (``cpv model list | head -1`` ends quietly, as git does).

The disks are real: a 20 MiB tmpfs, a read-only bind mount, an immutable folder (which refuses
even root). The tests need root to mount and skip cleanly where mounting is not permitted.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import CPV, TIMEOUT, ModelRepo, assert_one_error_line, run_cpv

from cp_manage.errors import (
    CPVError,
    DiskFullError,
    FilePermissionError,
    ReadOnlyFileSystemError,
)
from cp_manage.fsutil import explain_os_error

MiB = 1024 * 1024


# -- real file systems ----------------------------------------------------------------------------


def _mount(*args: str | Path) -> None:
    result = subprocess.run(["mount", *map(str, args)], capture_output=True, text=True,
                            timeout=TIMEOUT, check=False)
    if result.returncode != 0:
        pytest.skip(f"cannot mount here: {result.stderr.strip()}")


def _unmount(target: Path) -> None:
    subprocess.run(["umount", "--lazy", str(target)], capture_output=True, timeout=TIMEOUT,
                   check=False)


@contextlib.contextmanager
def small_disk(target: Path, size: str = "20m") -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``target``."""
    target.mkdir(parents=True, exist_ok=True)
    _mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", target)
    try:
        yield target
    finally:
        _unmount(target)


@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[Path]:
    """``folder`` bind-mounted read-only onto itself."""
    folder.mkdir(parents=True, exist_ok=True)
    _mount("--bind", "-o", "ro", folder, folder)
    try:
        if os.access(folder, os.W_OK) and _writable(folder):  # an old mount ignored "ro"
            _mount("-o", "remount,bind,ro", folder)
        yield folder
    finally:
        _unmount(folder)


def _writable(folder: Path) -> bool:
    probe = folder / ".probe"
    try:
        probe.touch()
    except OSError:
        return False
    probe.unlink()
    return True


def files_in(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def uploaded_version(repo: ModelRepo, size: int) -> str:
    md5, _ = repo.upload(size=size)
    run_cpv("model", "tag", cwd=repo.root)
    return md5


# -- a full disk ----------------------------------------------------------------------------------


def test_download_to_a_full_disk_names_the_path_and_the_space_needed(
        repo: ModelRepo, tmp_path: Path) -> None:
    uploaded_version(repo, 30 * MiB)
    with small_disk(tmp_path / "small") as small:
        for source in ("cache", "storage"):
            if source == "storage":
                shutil.rmtree(repo.cache)
            target = small / source
            line = assert_one_error_line(run_cpv("model", "download", "v0.1", "-o", target,
                                                 cwd=repo.root, expect=None))
            print(f"\n$ cpv model download v0.1 -o {target}  # from the {source}\n{line}")
            assert f"Not enough space left to write {target / 'model.bin'}" in line
            assert "30.0 MiB needed" in line
            assert re.search(r"1\d\.\d MiB free there|20\.0 MiB free there", line), line
            assert "Free some space there" in line
            assert "report" not in line
            assert files_in(small) == []  # no partial or temporary file is left


def test_upload_with_the_cache_on_a_full_disk_changes_nothing(repo: ModelRepo) -> None:
    repo.cache.mkdir(parents=True, exist_ok=True)
    with small_disk(repo.cache):
        repo.write_model(30 * MiB)
        before = repo.snapshot()
        line = assert_one_error_line(run_cpv("model", "upload", cwd=repo.root, expect=None))
        print(f"\n$ cpv model upload  # the cache on a 20 MiB disk\n{line}")
        assert f"Not enough space left to write {repo.cache}: 30.0 MiB needed" in line
        assert "Free some space there" in line
        assert repo.snapshot() == before
        assert files_in(repo.cache) == []


# -- a read-only file system and a refused permission -----------------------------------------


def test_upload_to_a_read_only_storage_folder_changes_nothing(repo: ModelRepo) -> None:
    repo.write_model()
    repo.storage.mkdir(parents=True, exist_ok=True)
    with read_only(repo.storage):
        before = repo.snapshot()
        line = assert_one_error_line(run_cpv("model", "upload", cwd=repo.root, expect=None))
        print(f"\n$ cpv model upload  # storage mounted read-only\n{line}")
        assert re.search(rf"{re.escape(str(repo.storage))}\S* is on a read-only file system",
                         line), line
        assert "Remount it read-write" in line
        assert repo.snapshot() == before
    run_cpv("model", "upload", cwd=repo.root)  # once writable again, the same command works


def test_download_into_a_read_only_folder(repo: ModelRepo, tmp_path: Path) -> None:
    uploaded_version(repo, 4096)
    with read_only(tmp_path / "ro") as folder:
        line = assert_one_error_line(run_cpv("model", "download", "v0.1", "-o", folder / "out",
                                             cwd=repo.root, expect=None))
        assert f"{folder / 'out'}" in line and "is on a read-only file system" in line, line


def test_cli_explains_an_os_error_the_library_left_raw(tmp_path: Path) -> None:
    """The CLI's own boundary: creating the repository folder on a read-only disk."""
    with read_only(tmp_path / "ro") as folder:
        result = run_cpv("init", "--team", "T", "--model", "m", "--path", folder / "m",
                         cwd=tmp_path, expect=None)
        line = assert_one_error_line(result)
        assert f"{folder / 'm'} is on a read-only file system" in line, line
        assert "Unexpected" not in line


def test_download_into_a_folder_that_refuses_even_root(repo: ModelRepo, tmp_path: Path) -> None:
    uploaded_version(repo, 4096)
    folder = tmp_path / "locked"
    folder.mkdir()
    made = subprocess.run(["chattr", "+i", str(folder)], capture_output=True, check=False)
    if made.returncode != 0:
        pytest.skip("this file system has no immutable flag (chattr +i)")
    try:
        line = assert_one_error_line(run_cpv("model", "download", "v0.1", "-o", folder / "out",
                                             cwd=repo.root, expect=None))
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=False)
    assert f"Permission denied: {folder / 'out'}" in line, line
    assert "ls -ld" in line


@pytest.mark.parametrize(("code", "kind"), [
    (errno.ENOSPC, DiskFullError), (errno.EDQUOT, DiskFullError),
    (errno.EROFS, ReadOnlyFileSystemError),
    (errno.EACCES, FilePermissionError), (errno.EPERM, FilePermissionError),
])
def test_each_expected_errno_becomes_an_error_with_a_fix(tmp_path: Path, code: int,
                                                         kind: type[CPVError]) -> None:
    """The shared mapping the library's write points and the CLI's boundary use."""
    refused = tmp_path / "refused"
    raw = OSError(code, os.strerror(code), str(refused))
    error = explain_os_error(raw, tmp_path / "target", needed=3 * MiB)
    assert isinstance(error, kind) and isinstance(error, OSError) and error.errno == code
    text = str(error)
    if kind is FilePermissionError:
        assert isinstance(error, PermissionError)
        assert text.startswith(f"Permission denied: {refused}.")  # the file the system named
    elif kind is DiskFullError:
        assert text.startswith(f"Not enough {'disk quota' if code == errno.EDQUOT else 'space'}"
                               f" left to write {tmp_path / 'target'}: 3.0 MiB needed, ")
        assert re.search(r"[\d.]+ [KMGT]?i?B free there", text), text
    else:
        assert text.startswith(f"{tmp_path / 'target'} is on a read-only file system.")
    assert error.hint


def test_an_error_naming_no_file_still_reads_well() -> None:
    """What the CLI's boundary gets from a write that did not say which file it was."""
    assert str(explain_os_error(OSError(errno.ENOSPC, "No space left on device"))).startswith(
        "Not enough space left on a disk cpv writes to. Free some space there")
    assert str(explain_os_error(OSError(errno.EROFS, "Read-only file system"))).startswith(
        "A folder cpv writes to is on a read-only file system.")
    assert str(explain_os_error(OSError(errno.EACCES, "Permission denied"))).startswith(
        "Permission denied. Check who owns it")


def test_other_errors_pass_through_unchanged() -> None:
    raw = OSError(errno.EIO, "Input/output error")
    assert explain_os_error(raw, Path("/x")) is raw
    already = DiskFullError("/x", needed=1, free=0)
    assert explain_os_error(already, Path("/y")) is already


# -- a closed pipe --------------------------------------------------------------------------------


def many_versions(repo: ModelRepo, count: int) -> None:
    """``count`` model versions on HEAD's commit (tags like cpv's own, made in one git call)."""
    repo.upload()
    run_cpv("model", "tag", cwd=repo.root)
    message = repo.git("for-each-ref", "--format=%(contents)", "refs/tags/v0.1").encode() + b"\n"
    head = repo.head()
    stream = b"".join(
        b"tag v0.%d\nfrom %s\ntagger Test Engineer <test@example.com> 1700000000 +0000\n"
        b"data %d\n%s\n" % (number, head.encode(), len(message), message)
        for number in range(2, count + 1))
    subprocess.run(["git", "fast-import", "--quiet"], cwd=repo.root, input=stream, check=True,
                   timeout=TIMEOUT)


@pytest.mark.parametrize("args", [["model", "list"], ["model", "list", "--json"],
                                  ["model", "show", "v0.2"]])
def test_output_into_a_closed_pipe_exits_quietly(repo: ModelRepo, args: list[str]) -> None:
    many_versions(repo, 3)
    reader, writer = os.pipe()
    os.close(reader)  # nobody will ever read: every write fails with EPIPE
    try:
        result = subprocess.run([*CPV, *args], cwd=repo.root, stdout=writer,
                                stderr=subprocess.PIPE, text=True, timeout=TIMEOUT, check=False)
    finally:
        os.close(writer)
    assert result.stderr == ""
    assert result.returncode == 1  # the output was lost: not a success


def test_list_piped_into_head_is_quiet_every_time(repo: ModelRepo) -> None:
    many_versions(repo, 700)  # more than a pipe holds (64 KiB): cpv is still writing
    for run in range(10):
        listing = "model list --json" if run % 2 else "model list"
        script = f"{' '.join(CPV)} {listing} | head -1; exit ${{PIPESTATUS[0]}}"
        result = subprocess.run(["bash", "-c", script], cwd=repo.root, capture_output=True,
                                text=True, timeout=TIMEOUT, check=False)
        assert result.stderr == ""
        assert result.returncode in (0, 1), result.returncode
        assert len(result.stdout.splitlines()) == 1
