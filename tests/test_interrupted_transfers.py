"""SIGINT and SIGTERM in the middle of an upload, a download and a revert of a folder: cpv stops
at a safe point, says in one line what was kept and that the same command resumes, exits
130 / 143, and the rerun completes, sending only what storage did not have yet.

Real ``cpv`` subprocesses receive real signals: from the test at a spread of moments, or from
themselves at a named point (``CPV_TEST_SIGNAL_AT``, cp_manage/faults.py).
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from helpers import TIMEOUT, ModelRepo, files_under, run_cpv, write_random
from test_interrupts import (
    assert_truthful,
    cpv_with,
    remote_refs,
    spread,
    start,
    wait_until_handling_signals,
)
from test_workspace_swap import folder_repo, leftovers, untracked  # noqa: F401 - a fixture

FILES = 200
SIZE = 8 * 1024


def stored_objects(storage: Path) -> dict[str, int]:
    """Every object in a local storage remote: its id and its inode (a rewrite changes it)."""
    base = storage / "files" / "md5"
    return {p.parent.name + p.name: p.stat().st_ino for p in base.glob("*/*")
            if not p.name.startswith(".")} if base.is_dir() else {}


def signalled_after(args: list[str], cwd: Path, signum: int, delay: float
                    ) -> subprocess.CompletedProcess[str]:
    process = start(args, cwd)
    wait_until_handling_signals(process)
    time.sleep(delay)
    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=TIMEOUT)
    return subprocess.CompletedProcess(args, process.returncode, stdout, stderr)


def timed(args: list[str], cwd: Path) -> float:
    process = start(args, cwd)
    wait_until_handling_signals(process)
    began = time.monotonic()
    _, stderr = process.communicate(timeout=TIMEOUT)
    assert process.returncode == 0, stderr
    return time.monotonic() - began


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_folder_upload_interrupted_says_what_reached_storage_and_the_rerun_sends_the_rest(
        repo: ModelRepo, signum: int) -> None:
    for index in range(FILES):
        write_random(repo.root / "data" / "train" / f"{index:03}.jsonl", SIZE, seed=index)
    before = remote_refs(repo)
    result = cpv_with(["data", "upload"], repo.root, CPV_TEST_SIGNAL_AT="storage_upload",
                      CPV_TEST_SIGNAL=signal.Signals(signum).name)
    assert assert_truthful(result, signum, before, remote_refs(repo)) == "nothing"
    line = result.stderr.strip()
    said = re.search(rf"; (\d+) of the {FILES} files to send \(([\d.]+) of ([\d.]+) MiB\) are "
                     r"in storage\. Run the same command again to resume", line)
    assert said, line
    kept = stored_objects(repo.storage)
    print(f"\n{line}")
    assert len(kept) == int(said.group(1)), (len(kept), line)  # counted once all had stopped
    assert 0 < len(kept) < FILES
    assert float(said.group(2)) == round(len(kept) * SIZE / 1024 / 1024, 1)
    assert leftovers(repo.storage) == [] and untracked(repo) == []

    again = run_cpv("data", "upload", cwd=repo.root)
    after = stored_objects(repo.storage)
    assert len(after) == FILES + 1  # and the folder's listing
    assert {oid: after[oid] for oid in kept} == kept  # those stored were not sent again
    assert remote_refs(repo)["refs/heads/main"] == repo.head()
    print(again.stdout.strip())
    checked = run_cpv("doctor", "--json", cwd=repo.root)
    assert {f["status"] for f in json.loads(checked.stdout)} == {"passed"}, checked.stdout


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_folder_download_interrupted_at_any_moment_leaves_nothing_half_made(
        folder_repo: ModelRepo, tmp_path: Path, signum: int) -> None:  # noqa: F811
    repo = folder_repo
    run_cpv("model", "revert", "v0.1", cwd=repo.root)
    expected = files_under(repo.root / "checkpoint")
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    args = ["model", "download", "v0.1", "-o", str(downloads / "first")]
    duration = timed(args, repo.root)
    outcomes = []
    for index, delay in enumerate(spread(duration, 5)):
        out = downloads / f"out-{index}"
        args = ["model", "download", "v0.1", "-o", str(out)]
        result = signalled_after(args, repo.root, signum, delay)
        if result.returncode == 0 or result.returncode == -signum:
            outcomes.append("done")
            assert files_under(out) == expected
        else:
            outcomes.append("stopped")
            assert result.returncode == 128 + signum, result.stderr
            lines = [line for line in result.stderr.splitlines() if line.strip()]
            assert len(lines) == 1, result.stderr
            assert lines[0].startswith(f"error: Interrupted by {signal.Signals(signum).name}; "
                                       "nothing was changed"), lines[0]
            assert "Run the same command again to" in lines[0]
            # Nothing (or an empty folder), or all of it when the signal came as it finished:
            # never half of it.
            assert files_under(out) in ({}, expected)
        assert [p.name for p in downloads.iterdir() if p.name.startswith(".")] == []
        run_cpv(*args, cwd=repo.root)
        assert files_under(out) == expected
    print(f"\n{signal.Signals(signum).name} during a {duration:.2f} s download: {outcomes}")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_folder_revert_interrupted_at_any_moment_keeps_the_old_or_the_new_version(
        folder_repo: ModelRepo, signum: int) -> None:  # noqa: F811
    repo = folder_repo
    target = repo.root / "checkpoint"
    run_cpv("model", "revert", "v0.1", cwd=repo.root)
    new = files_under(target)
    run_cpv("model", "revert", "v0.2", cwd=repo.root)
    old = files_under(target)
    duration = timed(["model", "revert", "v0.1"], repo.root)
    outcomes = []
    for delay in spread(duration, 5):
        run_cpv("model", "revert", "v0.2", cwd=repo.root)
        before = remote_refs(repo)
        result = signalled_after(["model", "revert", "v0.1"], repo.root, signum, delay)
        outcome = assert_truthful(result, signum, before, remote_refs(repo))
        outcomes.append(outcome)
        assert files_under(target) == (old if outcome == "nothing" else new), outcome
        assert untracked(repo) == [] and leftovers(repo.root) == []
        assert repo.git("status", "--porcelain") == ""
        run_cpv("model", "revert", "v0.1", cwd=repo.root)
        assert files_under(target) == new
        assert remote_refs(repo)["refs/heads/main"] == repo.head()
    print(f"\n{signal.Signals(signum).name} during a {duration:.2f} s revert: {outcomes}")
