"""A cpv repository stays a stock git + DVC repository: ``git clone`` + ``dvc pull`` reproduce
every version, and what the stock tools push, cpv versions and fetches."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import ModelRepo, dvc, git, init_repo, isolate_environment, md5_of, write_random

from cp_manage import ModelsCheckpointsManage


@pytest.fixture(scope="module")
def versions(tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[tuple[ModelRepo, dict[str, str]]]:
    root = tmp_path_factory.mktemp("interop")
    with pytest.MonkeyPatch.context() as mp:
        env = isolate_environment(mp, root / "env")
        repo = init_repo(root / "faster-whisper", env["cpv_home"])
        md5 = {}
        for seed, kwargs in enumerate([{}, {}, {"major": True}]):
            uploaded, _ = repo.upload({"accuracy": seed / 10}, size=1500 + seed, seed=seed)
            md5[repo.manager.tag_model_checkpoint(**kwargs)] = uploaded
        yield repo, md5


def test_git_clone_and_dvc_pull_reproduce_every_version(
        versions: tuple[ModelRepo, dict[str, str]], tmp_path: Path) -> None:
    repo, md5 = versions
    assert list(md5) == ["v0.1", "v0.2", "v1.0"]
    clone = tmp_path / "clone"
    git("clone", "-q", repo.remote, clone, cwd=tmp_path)
    for version, expected in md5.items():
        git("checkout", "-q", version, cwd=clone)
        dvc("pull", "-q", cwd=clone)
        assert md5_of(clone / "model.bin") == expected, version
    git("checkout", "-q", "main", cwd=clone)
    dvc("pull", "-q", cwd=clone)
    assert md5_of(clone / "model.bin") == md5["v1.0"]
    assert git("status", "--porcelain", cwd=clone) == ""


def test_cpv_versions_what_stock_dvc_pushed(
        versions: tuple[ModelRepo, dict[str, str]], tmp_path: Path) -> None:
    repo, _ = versions
    clone = tmp_path / "clone"
    git("clone", "-q", repo.remote, clone, cwd=tmp_path)
    made_by_dvc = write_random(clone / "model.bin", 1700, seed=42)
    dvc("add", "-q", "model.bin", cwd=clone)
    git("add", "model.bin.dvc", ".gitignore", cwd=clone)
    git("commit", "-q", "-m", "weights made with plain dvc", cwd=clone)
    dvc("push", "-q", cwd=clone)
    git("push", "-q", "origin", "main", cwd=clone)

    # cpv works in the stock clone as it is, and the version reaches the other clone.
    tag = ModelsCheckpointsManage(repo_path=clone).tag_model_checkpoint()
    assert tag == "v1.1"
    assert tag in git("ls-remote", "--tags", repo.remote, cwd=tmp_path)
    manager = repo.manager
    assert manager.get_model_metadata(tag)["md5"] == made_by_dvc
    artifact = manager.download_model_checkpoint(tag, output_dir=tmp_path / "out")
    assert md5_of(artifact.model_path) == made_by_dvc
