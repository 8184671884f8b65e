"""A failed ``cpv init`` is never taken for done: what can be refused up front is refused
before anything is made, and a rerun after a later failure finishes the work."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from helpers import MODEL, TEAM, assert_one_error_line, files_under, git, run_cpv

REFUSING_HOOK = "#!/bin/sh\necho 'pushes are closed for maintenance' >&2\nexit 1\n"


def bare_remote(cpv_home: Path) -> Path:
    """The embedded default git remote of TEAM/MODEL."""
    return cpv_home / "remotes" / "git" / TEAM / f"{MODEL}.git"


def refuse_pushes(remote: Path) -> Path:
    """Make the bare remote (as its admin would) with a pre-receive hook that refuses all."""
    remote.mkdir(parents=True)
    git("init", "--quiet", "--bare", "--initial-branch=main", remote, cwd=remote.parent)
    hook = remote / "hooks" / "pre-receive"
    hook.write_text(REFUSING_HOOK)
    hook.chmod(hook.stat().st_mode | stat.S_IXUSR)
    return hook


def remote_main(remote: Path) -> str:
    return git("for-each-ref", "--format=%(objectname)", "refs/heads/main", cwd=remote)


def test_no_git_identity_creates_nothing(isolated_env: dict[str, Path], workdir: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    gitconfig = isolated_env["gitconfig"]
    with_identity = gitconfig.read_text()
    # No user.name/email, and git must not guess one from the host name either.
    gitconfig.write_text("[user]\n\tuseConfigOnly = true\n[init]\n\tdefaultBranch = main\n")
    monkeypatch.delenv("EMAIL", raising=False)

    failed = run_cpv("init", "--team", TEAM, "--model", MODEL, cwd=workdir, expect=1)
    line = assert_one_error_line(failed)
    assert "git does not know who you are" in line
    assert "git config --global user.name" in line and "git config --global user.email" in line
    assert list(workdir.iterdir()) == []  # no repository folder
    assert files_under(isolated_env["cpv_home"]) == {}  # no bare remote, no storage
    assert not (isolated_env["cpv_home"] / "remotes").exists()

    gitconfig.write_text(with_identity)
    done = run_cpv("init", "--team", TEAM, "--model", MODEL, cwd=workdir)
    assert f"Initialised {TEAM}/{MODEL}" in done.stdout
    root = workdir / MODEL
    assert remote_main(bare_remote(isolated_env["cpv_home"])) == git("rev-parse", "HEAD",
                                                                      cwd=root)


def test_rerun_after_a_refused_push_finishes_the_init(isolated_env: dict[str, Path],
                                                      workdir: Path) -> None:
    remote = bare_remote(isolated_env["cpv_home"])
    hook = refuse_pushes(remote)
    args = ("init", "--team", TEAM, "--model", MODEL)

    refused = assert_one_error_line(run_cpv(*args, cwd=workdir, expect=1))
    assert "pushes are closed for maintenance" in refused
    # Still refused: the rerun tries again rather than calling the repository done.
    again = run_cpv(*args, cwd=workdir, expect=1)
    assert "already initialised" not in again.stdout
    assert remote_main(remote) == ""

    hook.unlink()
    finished = run_cpv(*args, cwd=workdir)
    assert f"Initialised {TEAM}/{MODEL}" in finished.stdout
    root = workdir / MODEL
    head = git("rev-parse", "HEAD", cwd=root)
    assert remote_main(remote) == head
    assert git("log", "--format=%s", cwd=root) == f"Initialize {TEAM}/{MODEL}"  # one commit
    assert git("rev-parse", "--abbrev-ref", "main@{upstream}", cwd=root) == "origin/main"
    assert git("status", "--porcelain", cwd=root) == ""

    done = run_cpv(*args, cwd=workdir)
    assert "already initialised" in done.stdout
    assert remote_main(remote) == head


def test_rerun_commits_what_a_failed_init_never_committed(isolated_env: dict[str, Path],
                                                          workdir: Path) -> None:
    """The leftover of an init that died between its skeleton and its first commit."""
    remote = bare_remote(isolated_env["cpv_home"])
    hook = refuse_pushes(remote)
    args = ("init", "--team", TEAM, "--model", MODEL)
    run_cpv(*args, cwd=workdir, expect=1)
    root = workdir / MODEL
    git("update-ref", "-d", "HEAD", cwd=root)  # skeleton written and staged, no commit
    hook.unlink()

    finished = run_cpv(*args, cwd=workdir)
    assert f"Initialised {TEAM}/{MODEL}" in finished.stdout
    assert remote_main(remote) == git("rev-parse", "HEAD", cwd=root)
    assert git("log", "--format=%s", cwd=root) == f"Initialize {TEAM}/{MODEL}"
    assert set(git("ls-tree", "-r", "--name-only", "HEAD", cwd=root).split()) >= {
        ".cpv.json", ".dvc/config", "train.py", "metrics.log"}


def test_a_non_empty_folder_is_refused_before_anything_is_made(
        isolated_env: dict[str, Path], workdir: Path) -> None:
    (workdir / MODEL).mkdir()
    (workdir / MODEL / "notes.txt").write_text("mine")
    failed = run_cpv("init", "--team", TEAM, "--model", MODEL, cwd=workdir, expect=1)
    assert "is not empty" in assert_one_error_line(failed)
    assert not (isolated_env["cpv_home"] / "remotes").exists()
    assert [p.name for p in (workdir / MODEL).iterdir()] == ["notes.txt"]
