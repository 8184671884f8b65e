"""Two clones of one model (two laptops of one team): versions made in one reach the other."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import MODEL, TEAM, ModelRepo, md5_of

from cp_manage import ModelsCheckpointsManage, VersionExistsError


@pytest.fixture
def clones(tmp_path: Path, isolated_env: dict[str, Path]) -> tuple[ModelRepo, ModelRepo]:
    results = []
    for name in ("laptop-a", "laptop-b"):
        root = tmp_path / name / MODEL
        results.append(ModelsCheckpointsManage(team_name=TEAM, model_name=MODEL,
                                               repo_path=root).import_model_init())
        assert results[-1].created
    assert [r.cloned for r in results] == [False, True]
    return (ModelRepo(tmp_path / "laptop-a" / MODEL, isolated_env["cpv_home"]),
            ModelRepo(tmp_path / "laptop-b" / MODEL, isolated_env["cpv_home"]))


def test_a_version_tagged_in_one_clone_is_seen_in_the_other(
        clones: tuple[ModelRepo, ModelRepo], tmp_path: Path) -> None:
    a, b = clones
    md5, _ = a.upload({"accuracy": 0.8})
    assert a.manager.tag_model_checkpoint() == "v0.1"

    assert b.manager.read_checkpoint_tag() == ["v0.1"]
    assert b.manager.get_model_metadata("v0.1")["metrics"] == {"accuracy": 0.8}
    before = b.head()
    artifact = b.manager.download_model_checkpoint("v0.1", output_dir=tmp_path / "out")
    assert md5_of(artifact.model_path) == md5
    assert b.head() == before  # download never moves HEAD, not even to catch up


def test_upload_in_the_second_clone_fast_forwards_first(
        clones: tuple[ModelRepo, ModelRepo]) -> None:
    a, b = clones
    a.upload({"accuracy": 0.8})
    a.manager.tag_model_checkpoint()
    a_head = a.head()

    md5, commit = b.upload({"accuracy": 0.9})
    assert b.git("rev-parse", "HEAD~1") == a_head  # B built on A's commit, no merge
    assert b.git("ls-remote", "origin", "refs/heads/main").split()[0] == commit
    assert b.manager.tag_model_checkpoint() == "v0.2"  # the next number after A's v0.1

    assert a.manager.read_checkpoint_tag() == ["v0.1", "v0.2"]
    a.manager.revert_model_checkpoint("v0.2")  # A catches up, then reverts (a no-op here)
    assert a.head() == commit
    assert md5_of(a.model_file) == md5


def test_the_same_explicit_version_cannot_be_taken_twice(
        clones: tuple[ModelRepo, ModelRepo]) -> None:
    a, b = clones
    a.upload({"accuracy": 0.8})
    a.manager.tag_model_checkpoint("v1.0")
    b.upload({"accuracy": 0.9})
    before = b.snapshot()
    with pytest.raises(VersionExistsError):
        b.manager.tag_model_checkpoint("v1.0")
    assert b.snapshot() == before
    assert b.manager.tag_model_checkpoint() == "v1.1"
