"""Plain helpers the tests share: running cpv, git and dvc for real, making checkpoint files,
and snapshotting a repository and its remotes to prove an operation changed nothing.

``conftest.py`` wraps them in fixtures; test modules import them with ``from helpers import``.
"""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cp_manage import ModelsCheckpointsManage

CPV = [sys.executable, "-m", "cp_manage.cli.app"]
# The stock dvc of the environment cpv runs in (tests prove interoperability with it).
DVC = str(Path(sys.executable).with_name("dvc"))
TEAM, MODEL = "AI-Convo", "faster-whisper"
TIMEOUT = 120

# Variables from the developer's shell that would make git, DVC, AWS or cpv act on something
# other than the test's own folders.
_LEAKY_PREFIXES = ("GIT_", "CPV_", "AWS_", "DVC_", "XDG_")


def isolate_environment(mp: pytest.MonkeyPatch, root: Path) -> dict[str, Path]:
    """Point HOME, CPV_HOME, git's and DVC's configuration at fresh folders under ``root``."""
    for name in list(os.environ):
        if name.startswith(_LEAKY_PREFIXES):
            mp.delenv(name)
    home, cpv_home = root / "home", root / "cpv-home"
    home.mkdir(parents=True, exist_ok=True)
    gitconfig = root / "gitconfig"
    gitconfig.write_text(
        "[user]\n\tname = Test Engineer\n\temail = test@example.com\n"
        "[init]\n\tdefaultBranch = main\n"
        "[advice]\n\tdetachedHead = false\n"
        "[protocol \"file\"]\n\tallow = always\n",
        encoding="utf-8",
    )
    for name, value in {
        "HOME": home,
        "CPV_HOME": cpv_home,
        "GIT_CONFIG_GLOBAL": gitconfig,
        "GIT_CONFIG_NOSYSTEM": "1",
        "DVC_NO_ANALYTICS": "1",
        "DVC_GLOBAL_CONFIG_DIR": root / "dvc-global",
        "DVC_SYSTEM_CONFIG_DIR": root / "dvc-system",
        "DVC_SITE_CACHE_DIR": root / "dvc-site-cache",
        "XDG_CONFIG_HOME": home / ".config",
        "XDG_CACHE_HOME": home / ".cache",
    }.items():
        mp.setenv(name, str(value))
    return {"home": home, "cpv_home": cpv_home, "gitconfig": gitconfig}


# -- running commands ---------------------------------------------------------------------------


def run_cpv(*args: str | os.PathLike[str], cwd: Path, expect: int | None = 0
            ) -> subprocess.CompletedProcess[str]:
    """Run ``cpv ARGS`` as a real subprocess; assert its exit code unless ``expect`` is None."""
    result = subprocess.run([*CPV, *map(str, args)], cwd=cwd, capture_output=True, text=True,
                            timeout=TIMEOUT, check=False)
    if expect is not None:
        assert result.returncode == expect, (
            f"cpv {' '.join(map(str, args))} exited {result.returncode}, expected {expect}\n"
            f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}")
    return result


def assert_one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """cpv failed as promised: exit 1 and a single readable ``error:`` line, no traceback."""
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def git(*args: str | os.PathLike[str], cwd: Path) -> str:
    """Run git and return its stripped stdout; fail the test with git's stderr otherwise."""
    result = subprocess.run(["git", *map(str, args)], cwd=cwd, capture_output=True, text=True,
                            timeout=TIMEOUT, check=False)
    assert result.returncode == 0, f"git {' '.join(map(str, args))}: {result.stderr}"
    return result.stdout.strip()


def bare_remote_with_clones(root: Path, *names: str) -> tuple[Path, list[Path]]:
    """A bare remote at ``root/remote.git`` whose main holds one commit, and a clone of it
    at ``root/NAME`` for each name (plain git: no cpv, no DVC)."""
    remote = root / "remote.git"
    git("init", "--quiet", "--bare", "--initial-branch=main", remote, cwd=root)
    seed = root / "seed"
    git("clone", "--quiet", remote, seed, cwd=root)
    git("commit", "--quiet", "--allow-empty", "-m", "start", cwd=seed)
    git("push", "--quiet", "origin", "HEAD:refs/heads/main", cwd=seed)
    clones = []
    for name in names:
        git("clone", "--quiet", remote, name, cwd=root)
        clones.append(root / name)
    return remote, clones


def remote_refs(remote: Path) -> dict[str, str]:
    """Every ref of a (bare) repository and the object it names."""
    listing = git("for-each-ref", "--format=%(refname) %(objectname)", cwd=remote)
    return dict(line.split(" ", 1) for line in listing.splitlines())


def dvc(*args: str, cwd: Path) -> str:
    result = subprocess.run([DVC, *args], cwd=cwd, capture_output=True, text=True,
                            timeout=TIMEOUT, check=False)
    assert result.returncode == 0, f"dvc {' '.join(args)}: {result.stdout}{result.stderr}"
    return result.stdout


# -- files --------------------------------------------------------------------------------------


def write_random(path: Path, size: int = 4096, *, seed: int | None = None) -> str:
    """Write ``size`` pseudo-random bytes (deterministic with ``seed``); return their md5."""
    data = random.Random(seed).randbytes(size) if seed is not None else os.urandom(size)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def md5_of(path: Path) -> str:
    return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


def overwrite_in_place(path: Path, data: bytes) -> None:
    """What ``torch.save`` to an existing path does: open the same inode and write into it."""
    with open(path, "r+b") as handle:
        handle.write(data)
        handle.truncate()


def files_under(root: Path) -> dict[str, str]:
    """Every file below ``root`` (relative path → md5); empty when ``root`` does not exist."""
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): md5_of(p) for p in sorted(root.rglob("*")) if p.is_file()}


# -- a model repository -------------------------------------------------------------------------


@dataclass
class ModelRepo:
    """An initialised model repository with its two embedded remotes."""

    root: Path
    cpv_home: Path
    team: str = TEAM
    model: str = MODEL

    @property
    def manager(self) -> ModelsCheckpointsManage:
        return ModelsCheckpointsManage(repo_path=self.root)

    @property
    def model_file(self) -> Path:
        return self.root / "model.bin"

    @property
    def storage(self) -> Path:
        return self.cpv_home / "remotes" / "storage" / self.team / self.model

    @property
    def remote(self) -> Path:
        return self.cpv_home / "remotes" / "git" / self.team / f"{self.model}.git"

    @property
    def cache(self) -> Path:
        return self.root / ".dvc" / "cache"

    def git(self, *args: str | os.PathLike[str]) -> str:
        return git(*args, cwd=self.root)

    def head(self) -> str:
        return self.git("rev-parse", "HEAD")

    def remote_refs(self) -> str:
        return git("ls-remote", self.remote, cwd=self.root)

    def write_model(self, size: int = 4096, *, seed: int | None = None) -> str:
        return write_random(self.model_file, size, seed=seed)

    def upload(self, metrics: dict[str, Any] | None = None, *, size: int = 4096,
               seed: int | None = None) -> tuple[str, str]:
        """Write fresh weights and upload them; returns (md5, commit)."""
        md5 = self.write_model(size, seed=seed)
        return md5, self.manager.upload_model_checkpoint(self.model_file, metrics=metrics)

    def snapshot(self) -> dict[str, Any]:
        """Everything a failed operation must leave as it was."""
        return {
            "head": self.git("rev-parse", "--verify", "-q", "HEAD"),
            "status": self.git("status", "--porcelain"),
            "refs": self.git("for-each-ref"),
            "remote": self.remote_refs(),
            "storage": files_under(self.storage),
            "workspace": {name: md5_of(self.root / name) for name in
                          ("model.bin", "model.bin.dvc", "metrics.log")
                          if (self.root / name).is_file()},
        }


def storage_object(storage: Path, md5: str) -> Path:
    """Where DVC's remote layout keeps object ``md5``."""
    return storage / "files" / "md5" / md5[:2] / md5[2:]


def init_repo(root: Path, cpv_home: Path, *, team: str = TEAM, model: str = MODEL) -> ModelRepo:
    ModelsCheckpointsManage(team_name=team, model_name=model, repo_path=root).import_model_init()
    return ModelRepo(root=root, cpv_home=cpv_home, team=team, model=model)
