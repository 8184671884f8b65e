"""Crash consistency: SIGKILL at each stage of upload and tag, then the same command again.

Each run is a real ``cpv`` subprocess that kills itself at a named point (cp_manage/faults.py);
afterwards the repeated command must complete and clone, git remote and storage must agree
(``cpv doctor`` passes with nothing to repair).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

CPV = [sys.executable, "-m", "cp_manage.cli.app"]


@pytest.fixture()
def env(tmp_path: Path) -> dict[str, str]:
    gitconfig = tmp_path / "gitconfig"
    gitconfig.write_text("[user]\n\tname = Crash Test\n\temail = crash@test.invalid\n"
                         "[init]\n\tdefaultBranch = main\n")
    return {**os.environ, "HOME": str(tmp_path / "home"), "CPV_HOME": str(tmp_path / "cpv"),
            "GIT_CONFIG_GLOBAL": str(gitconfig), "GIT_CONFIG_NOSYSTEM": "1",
            "DVC_NO_ANALYTICS": "1"}


def cpv(args: list[str], env: dict[str, str], cwd: Path, kill_at: str | None = None
        ) -> subprocess.CompletedProcess[str]:
    run_env = dict(env)
    if kill_at:
        run_env["CPV_TEST_KILL_AT"] = kill_at
    return subprocess.run([*CPV, *args], cwd=cwd, env=run_env, capture_output=True, text=True,
                          timeout=120, check=False)


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True,
                          check=True).stdout.strip()


@pytest.fixture()
def repo(tmp_path: Path, env: dict[str, str]) -> Path:
    path = tmp_path / "m"
    result = cpv(["init", "--team", "T", "--model", "m", "--path", str(path)], env, tmp_path)
    assert result.returncode == 0, result.stderr
    return path


def storage_objects(env: dict[str, str]) -> set[str]:
    root = Path(env["CPV_HOME"]) / "remotes" / "storage" / "T" / "m" / "files" / "md5"
    return {p.parent.name + p.name for p in root.glob("*/*") if not p.name.startswith(".")}


def remote_branch(env: dict[str, str]) -> str:
    bare = Path(env["CPV_HOME"]) / "remotes" / "git" / "T" / "m.git"
    return git(bare, "rev-parse", "refs/heads/main")


@pytest.mark.parametrize("point", ["hashing", "storage_upload", "after_blobs", "after_commit"])
def test_upload_killed_then_repeated_completes(point: str, repo: Path, env: dict[str, str]
                                               ) -> None:
    data = os.urandom(300_000)
    (repo / "model.bin").write_bytes(data)
    md5 = hashlib.md5(data).hexdigest()
    before_remote = remote_branch(env)

    killed = cpv(["model", "upload", "--metric", "acc=0.5"], env, repo, kill_at=point)
    assert killed.returncode == -signal.SIGKILL
    # Nothing reached the git remote, whatever stage the run died at.
    assert remote_branch(env) == before_remote

    again = cpv(["model", "upload", "--metric", "acc=0.5"], env, repo)
    assert again.returncode == 0, again.stderr
    head = git(repo, "rev-parse", "HEAD")
    assert remote_branch(env) == head
    assert md5 in git(repo, "show", "HEAD:model.bin.dvc")
    assert md5 in storage_objects(env)
    assert git(repo, "show", "HEAD:metrics.log").splitlines()[-1] == '{"acc": 0.5}'
    # One upload commit, not two.
    assert git(repo, "rev-list", "--count", "HEAD") == "2"

    repaired = cpv(["doctor", "--repair"], env, repo)
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    checked = cpv(["doctor", "--json"], env, repo)
    assert checked.returncode == 0, checked.stdout
    assert {f["status"] for f in json.loads(checked.stdout)} == {"passed"}


def test_tag_killed_then_repeated_pushes_the_same_version(repo: Path, env: dict[str, str]
                                                          ) -> None:
    (repo / "model.bin").write_bytes(os.urandom(10_000))
    assert cpv(["model", "upload"], env, repo).returncode == 0
    killed = cpv(["model", "tag"], env, repo, kill_at="after_tag_created")
    assert killed.returncode == -signal.SIGKILL
    bare = Path(env["CPV_HOME"]) / "remotes" / "git" / "T" / "m.git"
    assert git(bare, "tag") == ""

    doctor = cpv(["doctor"], env, repo)
    assert doctor.returncode == 1 and "v0.1" in doctor.stdout

    again = cpv(["model", "tag"], env, repo)
    assert again.returncode == 0, again.stderr
    assert "v0.1" in again.stdout
    assert git(bare, "tag") == "v0.1"
    assert cpv(["doctor"], env, repo).returncode == 0


def test_doctor_repairs_lost_storage_objects_and_corrupt_cache(repo: Path, env: dict[str, str]
                                                               ) -> None:
    data = os.urandom(50_000)
    (repo / "model.bin").write_bytes(data)
    assert cpv(["model", "upload"], env, repo).returncode == 0
    assert cpv(["model", "tag"], env, repo).returncode == 0
    md5 = hashlib.md5(data).hexdigest()
    stored = Path(env["CPV_HOME"]) / "remotes/storage/T/m/files/md5" / md5[:2] / md5[2:]
    stored.chmod(0o644)
    stored.unlink()

    report = cpv(["doctor", "--json"], env, repo)
    assert report.returncode == 1
    storage = next(f for f in json.loads(report.stdout) if f["check"] == "storage")
    assert storage["status"] == "failed" and "v0.1" in storage["detail"]
    assert "--repair" in storage["fix"]

    assert cpv(["doctor", "--repair"], env, repo).returncode == 0
    assert stored.read_bytes() == data

    cached = repo / ".dvc/cache/files/md5" / md5[:2] / md5[2:]
    cached.chmod(0o644)
    cached.write_bytes(b"rotten")
    assert cpv(["doctor"], env, repo).returncode == 1
    assert cpv(["doctor", "--repair"], env, repo).returncode == 0
    assert not cached.exists()
    # The version still downloads, from storage, with the right bytes.
    out = repo.parent / "out"
    assert cpv(["model", "download", "v0.1", "-o", str(out)], env, repo).returncode == 0
    assert (out / "model.bin").read_bytes() == data


def test_doctor_removes_half_built_folders_and_reports_set_aside_work(
        repo: Path, env: dict[str, str]) -> None:
    half = repo / ".data.abc.cpv-tmpdir" / "train"
    half.mkdir(parents=True)
    (half / "x.txt").write_text("half")
    (half / "x.txt").chmod(0o444)
    report = cpv(["doctor", "--json"], env, repo)
    temp = next(f for f in json.loads(report.stdout) if f["check"] == "temp_files")
    assert report.returncode == 1 and temp["status"] == "failed"
    assert cpv(["doctor", "--repair"], env, repo).returncode == 0
    assert not (repo / ".data.abc.cpv-tmpdir").exists()

    aside = repo / ".model.bin.cpv-discarded"
    aside.write_bytes(b"weights a forced revert set aside")
    assert cpv(["doctor", "--repair"], env, repo).returncode == 1
    assert aside.read_bytes() == b"weights a forced revert set aside"  # the user's, never removed


def test_a_foreign_tag_on_a_broken_commit_does_not_hide_the_others(repo: Path,
                                                                  env: dict[str, str]) -> None:
    (repo / "model.bin").write_bytes(os.urandom(1000))
    assert cpv(["model", "upload"], env, repo).returncode == 0
    assert cpv(["model", "tag"], env, repo).returncode == 0
    (repo / "model.bin.dvc").write_text("outs: [broken\n")
    git(repo, "commit", "-qam", "broken pointer")
    git(repo, "tag", "-a", "v0.9", "-m", "made by hand")
    listed = cpv(["model", "list", "--json"], env, repo)
    assert listed.returncode == 0, listed.stderr
    assert [v["version"] for v in json.loads(listed.stdout)] == ["v0.1"]
    assert "v0.9" in listed.stderr  # said, as a warning
