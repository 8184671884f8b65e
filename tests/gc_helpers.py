"""Helpers for the gc tests: a team's history of uploads, storage made to look old, a fresh
machine, and stock ``dvc pull`` of a tag."""

from __future__ import annotations

import os
import time
from pathlib import Path

from helpers import MODEL, TEAM, ModelRepo, dvc, git

from cp_manage import ModelsCheckpointsManage

DAY = 86400


def age_storage(storage: Path, seconds: float = 2 * DAY) -> None:
    """Make every object in storage look written ``seconds`` ago (storage's own timestamp is
    what the grace period is judged by)."""
    then = time.time() - seconds
    for path in (storage / "files").rglob("*"):
        if path.is_file():
            os.utime(path, (then, then))


def history(repo: ModelRepo) -> dict[str, str]:
    """Seven model uploads on main, four of them versions; v0.1 and v0.2 retired, v0.3 in
    production. Returns name → md5 (untagged uploads named u1, u4)."""
    made = {}
    for name, seed in (("v0.1", 1), ("v0.2", 2), ("u1", 3), ("v0.3", 4), ("u4", 5),
                       ("v0.4", 6), ("v0.5", 7)):
        md5, _ = repo.upload({"step": seed}, size=512, seed=seed)
        made[name] = md5
        if name.startswith("v"):
            assert repo.manager.tag_model_checkpoint() == name
    repo.manager.retire("v0.1", "diverged")
    repo.manager.retire("v0.2")
    repo.manager.promote("v0.3", "production")
    return made


def fresh_clone(tmp_path: Path, name: str) -> ModelRepo:
    root = tmp_path / name / MODEL
    ModelsCheckpointsManage(team_name=TEAM, model_name=MODEL, repo_path=root).import_model_init()
    return ModelRepo(root, Path(os.environ["CPV_HOME"]))


def stock_dvc_pull(repo: ModelRepo, tmp_path: Path, tag: str) -> Path:
    """A plain ``git clone`` of the remote at ``tag`` and a stock ``dvc pull``."""
    target = tmp_path / f"stock-{tag.replace('/', '-')}"
    git("clone", "-q", "--branch", tag, repo.remote, target, cwd=tmp_path)
    dvc("pull", "-q", cwd=target)
    return target
