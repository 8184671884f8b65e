"""The combined model + data release (``CombinedCheckpointsManage``): ``vX.Y`` and ``data/vX.Y``
on one commit in one atomic push, or neither anywhere; restoring both in one commit; the
combined metadata and its lineage."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from data_helpers import (
    SEED_DATASET,
    combined_manager,
    data_manager,
    data_snapshot,
    upload_model,
    write_dataset,
)
from helpers import ModelRepo, files_under, git, md5_of

from cp_manage import (
    CombinedCheckpointsManage,
    NothingToDoError,
    RemoteError,
    UnsavedChangesError,
    VersionExistsError,
)

REFUSE_DATA_TAGS = """#!/bin/sh
# git runs the update hook once per ref: only an atomic push keeps the model tag out too.
case "$1" in
  refs/tags/data/*) echo "data tags are frozen by the release manager" >&2; exit 1 ;;
esac
exit 0
"""


@pytest.fixture
def ready(repo: ModelRepo, tmp_path: Path) -> ModelRepo:
    """A repository whose HEAD holds an uploaded dataset and an uploaded model."""
    data_manager(repo).import_data_init(write_dataset(tmp_path / "dataset", SEED_DATASET))
    upload_model(repo, {"accuracy": 0.8}, seed=1)
    return repo


def _tags(repo: ModelRepo) -> tuple[list[str], list[str]]:
    local = sorted(repo.git("tag").split())
    remote = sorted(line.split("\t")[1].removeprefix("refs/tags/")
                    for line in repo.remote_refs().splitlines() if "refs/tags/" in line
                    and not line.endswith("^{}"))
    return local, remote


def _install_hook(repo: ModelRepo, script: str) -> None:
    hook = repo.remote / "hooks" / "update"
    hook.write_text(script)
    hook.chmod(0o755)


def test_release_tags_both_on_one_commit_with_the_next_free_version(ready: ModelRepo) -> None:
    data = data_manager(ready)
    data.tag_data_checkpoint(version_tag="v0.4")  # the data sequence is ahead
    ready.manager.tag_model_checkpoint(version_tag="v0.2")
    upload_model(ready, {"accuracy": 0.9}, seed=2)
    combined = CombinedCheckpointsManage(team_name=ready.team, model_name=ready.model,
                                         repo_path=ready.root, verbose=True)
    assert combined.tag_model_and_data(model_message="release") == ("v0.5", "data/v0.5")
    head = ready.head()
    for name in ("v0.5", "data/v0.5"):
        assert ready.git("rev-parse", f"{name}^{{commit}}") == head
    local, remote = _tags(ready)
    assert local == remote == ["data/v0.4", "data/v0.5", "v0.2", "v0.5"]
    model = ready.manager.get_model_metadata("v0.5")
    assert model["message"] == "release"
    assert model["data_version"] == "data/v0.5"
    assert model["metrics"] == {"accuracy": 0.9}
    assert data.get_data_metadata("v0.5")["file_count"] == len(SEED_DATASET)
    # Major and explicit versions.
    upload_model(ready, seed=3)
    assert combined.tag_model_and_data(major=True) == ("v1.0", "data/v1.0")
    upload_model(ready, seed=4)
    assert combined.tag_model_and_data(version_tag="v2.3") == ("v2.3", "data/v2.3")


def test_a_name_taken_in_either_sequence_makes_no_tag(ready: ModelRepo) -> None:
    data_manager(ready).tag_data_checkpoint(version_tag="v1.0")
    before = data_snapshot(ready)
    with pytest.raises(VersionExistsError, match=re.escape("data/v1.0")):
        combined_manager(ready).tag_model_and_data(version_tag="v1.0")
    assert data_snapshot(ready) == before
    ready.manager.tag_model_checkpoint(version_tag="v2.0")
    upload_model(ready, seed=5)
    before = data_snapshot(ready)
    with pytest.raises(VersionExistsError, match=re.escape("v2.0")):
        combined_manager(ready).tag_model_and_data(version_tag="data/v2.0")
    assert data_snapshot(ready) == before


def test_a_remote_refusing_one_tag_leaves_neither_anywhere(ready: ModelRepo) -> None:
    _install_hook(ready, REFUSE_DATA_TAGS)
    before_local, before_remote = _tags(ready)
    with pytest.raises(RemoteError) as caught:
        combined_manager(ready).tag_model_and_data()
    message = str(caught.value)
    assert "neither tag was created" in message
    assert "refs/tags/data/v0.1" in message and "hook declined" in message
    assert "data tags are frozen by the release manager" in message
    local, remote = _tags(ready)
    assert (local, remote) == (before_local, before_remote) == ([], [])
    # No trace locally: no tag objects reachable from refs, no reflog of them.
    assert ready.git("for-each-ref", "refs/tags") == ""
    assert "v0.1" not in ready.git("show-ref")
    assert not (ready.root / ".git" / "refs" / "tags" / "v0.1").exists()
    # Once the remote allows it, the same release goes through.
    (ready.remote / "hooks" / "update").unlink()
    assert combined_manager(ready).tag_model_and_data() == ("v0.1", "data/v0.1")


def test_an_unreachable_remote_leaves_no_tag(ready: ModelRepo, tmp_path: Path) -> None:
    moved = tmp_path / "moved.git"
    ready.remote.rename(moved)
    with pytest.raises(RemoteError) as caught:
        combined_manager(ready).tag_model_and_data()
    assert caught.value.hint
    assert ready.git("tag") == ""
    moved.rename(ready.remote)
    assert git("ls-remote", "--tags", ready.remote, cwd=tmp_path) == ""


def test_release_needs_both_artifacts_and_a_new_model(repo: ModelRepo, tmp_path: Path) -> None:
    upload_model(repo, seed=6)
    with pytest.raises(NothingToDoError, match="no uploaded data"):
        combined_manager(repo).tag_model_and_data()
    data_manager(repo).import_data_init(write_dataset(tmp_path / "dataset", SEED_DATASET))
    combined = combined_manager(repo)
    assert combined.tag_model_and_data() == ("v0.1", "data/v0.1")
    # Run again (a script run twice): the same release, nothing pushed.
    refs = repo.remote_refs()
    assert combined.tag_model_and_data() == ("v0.1", "data/v0.1")
    assert combined.tag_model_and_data(version_tag="v0.1") == ("v0.1", "data/v0.1")
    assert combined.tag(major=True).created is False
    with pytest.raises(NothingToDoError, match=re.escape("already v0.1 and data/v0.1, so it "
                                                         "cannot also be v0.2")):
        combined.tag_model_and_data(version_tag="v0.2")
    assert repo.git("tag").split() == ["data/v0.1", "v0.1"]
    assert repo.remote_refs() == refs
    # A model version alone on HEAD is not a release: a combined tag is still refused.
    upload_model(repo, seed=7)
    assert repo.manager.tag_model_checkpoint() == "v0.2"
    with pytest.raises(NothingToDoError, match=re.escape("HEAD's model is already v0.2")):
        combined.tag_model_and_data()


def test_revert_brings_model_and_data_back_in_one_commit(ready: ModelRepo) -> None:
    combined = combined_manager(ready)
    combined.tag_model_and_data()
    model_v1, data_v1 = md5_of(ready.model_file), files_under(ready.root / "data")
    write_dataset(ready.root / "data", {"train/more.jsonl": b"{}\n"})
    data_manager(ready).upload_data_checkpoint()
    upload_model(ready, {"accuracy": 0.95}, seed=7)
    combined.tag_model_and_data()
    head = ready.head()
    commit = combined.revert_model_and_data(tag="v0.1")
    assert commit is not None
    assert ready.git("rev-parse", "HEAD~1") == head, "one commit"
    changed = ready.git("show", "--name-only", "--format=", "HEAD").split()
    assert sorted(changed) == ["data.dvc", "metrics.log", "model.bin.dvc"]
    assert md5_of(ready.model_file) == model_v1
    assert files_under(ready.root / "data") == data_v1
    assert ready.manager.get_model_metadata()["metrics"] == {"accuracy": 0.8}
    assert ready.git("status", "--porcelain") == ""
    assert ready.remote_refs().split()[0] == commit
    assert combined.revert_model_and_data("v0.1") is None


def test_revert_refuses_unsaved_work_in_either_artifact(ready: ModelRepo) -> None:
    combined = combined_manager(ready)
    combined.tag_model_and_data()
    upload_model(ready, seed=8)
    combined.tag_model_and_data()
    write_dataset(ready.root / "data", {"train/unsaved.jsonl": b"{}\n"})
    before = data_snapshot(ready)
    with pytest.raises(UnsavedChangesError, match="data"):
        combined.revert_model_and_data("v0.1")
    assert data_snapshot(ready) == before
    assert combined.revert_model_and_data("v0.1", force=True) is not None
    assert files_under(ready.root / "data") == {
        k: v for k, v in before["data"].items() if k != "train/unsaved.jsonl"}


def test_combined_metadata_links_model_and_data(ready: ModelRepo) -> None:
    combined = combined_manager(ready)
    combined.tag_model_and_data()
    meta = combined.get_combined_metadata(tag="v0.1")
    assert meta["version"] == "v0.1"
    assert meta["model"]["tag"] == "v0.1" and meta["data"]["tag"] == "data/v0.1"
    assert meta["model"]["metrics"] == {"accuracy": 0.8}
    assert meta["data"]["file_count"] == len(SEED_DATASET)
    assert meta["lineage"] == {"data_version": "data/v0.1", "same_commit": True,
                               "trained_on_this_data": True}
    head = combined.get_combined_metadata()
    assert head["model"]["commit"] == head["data"]["commit"] == ready.head()
    # A model version released alone: its data is the data its commit holds.
    upload_model(ready, seed=9)
    ready.manager.tag_model_checkpoint(version_tag="v0.7")
    alone = combined.get_combined_metadata("v0.7")
    assert alone["data"]["tag"] is None
    assert alone["lineage"]["data_version"] == "data/v0.1"
    assert alone["lineage"]["trained_on_this_data"]
