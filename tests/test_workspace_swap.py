"""A revert or a download killed (SIGKILL) at any moment leaves the artifact exactly as it was
or exactly the target version: never missing, never half-written, and no temporary file that
``git status`` offers to commit. The same command run again completes it.

Every run is a real ``cpv`` subprocess: killed from outside at a spread of moments, or by itself
at a named point (``CPV_TEST_KILL_AT``, cp_manage/faults.py). ``CPV_TEST_NO_RENAME_EXCHANGE``
makes cpv swap the way it does on platforms without ``renameat2(RENAME_EXCHANGE)``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
from artifact_helpers import init_folder_repo
from helpers import CPV, TIMEOUT, ModelRepo, files_under, md5_of, run_cpv, write_random

from cp_manage.swap import exchange

TEMPORARY = (".cpv-tmp", ".cpv-tmpdir", ".cpv-old")


def write_version(root: Path, seed: int) -> dict[str, str]:
    """A checkpoint folder of a dozen files in two levels (a few differ between seeds, one is
    only in odd seeds); returns its files (relative path -> md5)."""
    for index in range(6):
        write_random(root / f"shard-{index}.bin", 96 * 1024, seed=seed if index < 3 else 7)
    for index in range(4):
        write_random(root / "tokenizer" / f"part-{index}.json", 4096, seed=seed + index)
    if seed % 2:
        write_random(root / "only-in-odd.bin", 8192, seed=seed)
    else:
        (root / "only-in-odd.bin").unlink(missing_ok=True)
    return files_under(root)


def start(args: list[str], cwd: Path, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen([*CPV, *args], cwd=cwd, env={**os.environ, **env},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def cpv_with(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CPV, *args], cwd=cwd, env={**os.environ, **env},
                          capture_output=True, text=True, timeout=TIMEOUT, check=False)


def untracked(repo: ModelRepo) -> list[str]:
    """What ``git status`` would offer to add."""
    return [line for line in repo.git("status", "--porcelain", "--untracked-files=all")
            .splitlines() if line.startswith("??")]


def leftovers(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p.name.endswith(TEMPORARY) and ".git" not in p.relative_to(root).parts)


@pytest.fixture
def folder_repo(tmp_path: Path, isolated_env: dict[str, Path]) -> ModelRepo:
    """A folder model with v0.1 (seed 1) and v0.2 (seed 2) stored and tagged; the workspace
    holds v0.2."""
    repo = init_folder_repo(tmp_path / "work" / "bert-large", isolated_env["cpv_home"])
    for seed in (1, 2):
        write_version(repo.root / "checkpoint", seed)
        run_cpv("model", "upload", cwd=repo.root)
        run_cpv("model", "tag", cwd=repo.root)
    return repo


def versions(repo: ModelRepo) -> dict[str, dict[str, str]]:
    """Each version's files, as the workspace holds them after a completed revert."""
    found = {}
    for version in ("v0.1", "v0.2"):
        run_cpv("model", "revert", version, cwd=repo.root)
        found[version] = files_under(repo.root / "checkpoint")
    return found


def test_a_folder_revert_killed_at_any_moment_leaves_the_old_or_the_new_folder(
        folder_repo: ModelRepo) -> None:
    repo = folder_repo
    target = repo.root / "checkpoint"
    expected = versions(repo)  # the workspace holds v0.2 again
    assert expected["v0.1"] != expected["v0.2"]

    # Uninterrupted, timed, with a watcher proving the path never goes missing meanwhile.
    missing: list[float] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            if not os.path.lexists(target):
                missing.append(time.monotonic())

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    began = time.monotonic()
    run_cpv("model", "revert", "v0.1", cwd=repo.root)
    duration = time.monotonic() - began
    done.set()
    watcher.join()
    assert files_under(target) == expected["v0.1"]
    if exchange_available(repo.root):
        assert missing == []

    outcomes = []
    for index in range(8):
        run_cpv("model", "revert", "v0.2", cwd=repo.root)
        process = start(["model", "revert", "v0.1"], repo.root)
        time.sleep(duration * 1.1 * index / 7)
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=TIMEOUT)
        settle(repo)
        held = files_under(target)
        assert held in (expected["v0.1"], expected["v0.2"]), sorted(held)
        outcomes.append("new" if held == expected["v0.1"] else "old")
        assert untracked(repo) == []
        run_cpv("model", "revert", "v0.1", cwd=repo.root)
        assert files_under(target) == expected["v0.1"]
        assert f"{repo.head()}\trefs/heads/main" in repo.remote_refs()
    print(f"\nrevert of {duration:.2f} s killed 8 times: {outcomes}")
    run_cpv("doctor", "--repair", cwd=repo.root)
    assert leftovers(repo.root) == []
    assert untracked(repo) == []


def settle(repo: ModelRepo) -> None:
    """Wait for a git command the killed cpv had started (git runs in a session of its own,
    so it finishes) to end and release its lock files."""
    deadline = time.monotonic() + 30
    while list((repo.root / ".git").glob("*.lock")) and time.monotonic() < deadline:
        time.sleep(0.05)


def exchange_available(folder: Path) -> bool:
    first, second = folder / ".probe-a", folder / ".probe-b"
    first.write_text("a")
    second.write_text("b")
    try:
        return exchange(first, second)
    finally:
        first.unlink()
        second.unlink()


@pytest.mark.parametrize("exchange_off", [False, True])
@pytest.mark.parametrize("point", ["workspace_staged", "workspace_swapped"])
def test_a_file_revert_killed_around_the_swap(repo: ModelRepo, point: str,
                                              exchange_off: bool) -> None:
    """At the named points: the new version complete beside the old one, and the swap done
    but not committed. A repository whose committed .gitignore predates cpv's temporary files
    shows none of them in ``git status`` either."""
    repo.write_model(200_000, seed=1)
    run_cpv("model", "upload", cwd=repo.root)
    run_cpv("model", "tag", cwd=repo.root)
    new = md5_of(repo.model_file)
    old = repo.write_model(200_000, seed=2)
    run_cpv("model", "upload", cwd=repo.root)
    gitignore = repo.root / ".gitignore"
    gitignore.write_text("/model.bin\n/data\n")  # as written before cpv listed its temporaries
    repo.git("commit", "-qm", "an older .gitignore", "--", ".gitignore")
    repo.git("push", "-q", "origin", "main")
    env = {"CPV_TEST_KILL_AT": point}
    if exchange_off:
        env["CPV_TEST_NO_RENAME_EXCHANGE"] = "1"

    killed = cpv_with(["model", "revert", "v0.1"], repo.root, **env)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert md5_of(repo.model_file) == (old if point == "workspace_staged" else new)
    assert untracked(repo) == []
    assert leftovers(repo.root), "the killed run left its temporary (git-ignored) file"

    run_cpv("model", "revert", "v0.1", cwd=repo.root)
    assert md5_of(repo.model_file) == new
    assert new in repo.git("show", "HEAD:model.bin.dvc")
    run_cpv("doctor", "--repair", cwd=repo.root)
    assert leftovers(repo.root) == []
    assert repo.git("status", "--porcelain") == ""


def test_without_an_atomic_exchange_a_folder_killed_between_its_renames_is_put_back(
        folder_repo: ModelRepo) -> None:
    """The one window of the two-rename swap: the old folder waits at .checkpoint.cpv-old
    and the next command that takes the repository's lock puts it back."""
    repo = folder_repo
    target = repo.root / "checkpoint"
    before = files_under(target)
    killed = cpv_with(["model", "revert", "v0.1"], repo.root,
                      CPV_TEST_KILL_AT="workspace_half_swapped", CPV_TEST_NO_RENAME_EXCHANGE="1")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not target.exists()
    assert files_under(repo.root / ".checkpoint.cpv-old") == before
    assert untracked(repo) == []

    doctor = run_cpv("doctor", "--json", cwd=repo.root, expect=None)
    assert "Put back checkpoint" in doctor.stderr
    assert files_under(target) == before
    assert not (repo.root / ".checkpoint.cpv-old").exists()
    assert json.loads(doctor.stdout)
    run_cpv("model", "revert", "v0.1", cwd=repo.root)
    assert files_under(target) != before


def test_a_folder_download_killed_at_any_moment_leaves_the_old_or_the_new_folder(
        folder_repo: ModelRepo, tmp_path: Path) -> None:
    repo = folder_repo
    out = tmp_path / "downloads" / "out"
    run_cpv("model", "download", "v0.2", "-o", out, cwd=repo.root)
    old = files_under(out)
    began = time.monotonic()
    run_cpv("model", "download", "v0.1", "-o", out, "--force", cwd=repo.root)
    duration = time.monotonic() - began
    new = files_under(out)
    for index in range(5):
        run_cpv("model", "download", "v0.2", "-o", out, "--force", cwd=repo.root)
        process = start(["model", "download", "v0.1", "-o", str(out), "--force"], repo.root)
        time.sleep(duration * 1.1 * index / 4)
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=TIMEOUT)
        assert files_under(out) in (old, new)
        run_cpv("model", "download", "v0.1", "-o", out, "--force", cwd=repo.root)
        assert files_under(out) == new
    # What killed runs left beside the folder is hidden (never a stray visible file).
    assert all(p.name.startswith(".") for p in out.parent.iterdir() if p != out)
