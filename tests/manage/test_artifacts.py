"""The model artifact chosen at init: a file under any name, or a folder checkpoint, uploaded
from anywhere, stored file by file as DVC stores a directory, fetched whole or in part."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from artifact_helpers import (
    SHARDS,
    file_bytes,
    fingerprint,
    init_folder_repo,
    write_hf_folder,
)
from data_helpers import storage_oids
from helpers import ModelRepo, dvc, files_under, git, md5_of, overwrite_in_place

from cp_manage import ModelsCheckpointsManage
from cp_manage.errors import (
    ArtifactNotFoundError,
    ConfigError,
    CPVError,
    InvalidNameError,
    UnsavedChangesError,
)
from cp_manage.spec import ArtifactSpec


@pytest.fixture
def folder_repo(tmp_path: Path, isolated_env: dict[str, Path]) -> ModelRepo:
    return init_folder_repo(tmp_path / "work" / "bert-large", isolated_env["cpv_home"])


def test_init_records_the_artifact_and_lays_out_the_repository(folder_repo: ModelRepo) -> None:
    root = folder_repo.root
    recorded = json.loads((root / ".cpv.json").read_text())
    assert recorded["artifact"] == "checkpoint/"
    assert "/checkpoint" in (root / ".gitignore").read_text().splitlines()
    assert "checkpoint/" in (root / "README.md").read_text()
    assert '"checkpoint"' in (root / "train.py").read_text()
    assert folder_repo.git("status", "--porcelain") == ""
    # Again: nothing changes; another artifact is refused, naming the one it has.
    manager = ModelsCheckpointsManage(team_name="AI-Convo", model_name="bert-large",
                                      repo_path=root)
    assert not manager.import_model_init(artifact="checkpoint/").created
    with pytest.raises(ConfigError, match="checkpoint/"):
        manager.import_model_init(artifact="model.bin")


def test_hf_folder_from_outside_is_stored_and_the_source_left_untouched(
        folder_repo: ModelRepo, tmp_path: Path) -> None:
    source = write_hf_folder(tmp_path / "scratch" / "run42" / "best")
    before = fingerprint(source)
    manager = folder_repo.manager
    manager.upload_model_checkpoint(model_path=source, metrics={"loss": 0.5})
    assert fingerprint(source) == before, "the source was changed"

    workspace = folder_repo.root / "checkpoint"
    assert file_bytes(workspace) == file_bytes(source)
    for path in workspace.rglob("*"):
        assert not path.is_symlink(), f"{path} is a link, not a private copy"
        if path.is_file():
            info = path.stat()
            assert info.st_nlink == 1 and info.st_mode & 0o200, path
    # A training script rewriting a shard in place changes neither the cache nor storage.
    cached = {p: p.read_bytes() for p in folder_repo.cache.rglob("*") if p.is_file()}
    overwrite_in_place(workspace / SHARDS[0], b"epoch 2")
    assert {p: p.read_bytes() for p in folder_repo.cache.rglob("*") if p.is_file()} == cached

    tag = manager.tag_model_checkpoint()
    meta = manager.get_model_metadata(tag)
    sizes = {name: len(content) for name, content in file_bytes(source).items()}
    assert meta["path"] == "checkpoint"
    assert meta["file_count"] == len(sizes) == 11
    assert meta["size_bytes"] == sum(sizes.values())
    assert {name: entry["size"] for name, entry in meta["files"].items()} == sizes
    assert "caf\u00e9-\u6570\u636e.json" in meta["files"]
    assert "tokenizer/vocab/merges.txt" in meta["files"]
    assert meta["files"]["generation_config.json"] == meta["files"]["config.json"]


def test_only_the_changed_files_and_the_listing_are_stored_again(
        folder_repo: ModelRepo, tmp_path: Path) -> None:
    source = write_hf_folder(tmp_path / "run" / "ckpt")
    manager = folder_repo.manager
    first = manager.upload(source)
    stored = storage_oids(folder_repo)
    assert len(stored) == 10 + 1  # 10 distinct contents (the link repeats config), 1 listing
    assert first.uploaded_bytes == sum(
        folder_repo.cache.joinpath("files", "md5", o[:2], o[2:]).stat().st_size for o in stored)

    # A fine-tune changes one shard and the small index file.
    (source / SHARDS[1]).write_bytes(b"fine-tuned" * 1000)
    (source / "model.safetensors.index.json").write_text('{"weight_map": {}}')
    workspace = folder_repo.root / "checkpoint"
    inodes = {name: (workspace / name).stat().st_ino for name in SHARDS}
    second = manager.upload(source)
    added = storage_oids(folder_repo) - stored
    assert added == {md5_of(source / SHARDS[1]), md5_of(source / "model.safetensors.index.json"),
                     f"{second.md5}.dir"}
    assert second.uploaded_bytes == sum(
        folder_repo.cache.joinpath("files", "md5", o[:2], o[2:]).stat().st_size for o in added)
    # The workspace keeps its unchanged shards (no new copy) and gets the changed one.
    assert file_bytes(workspace) == file_bytes(source)
    for name in SHARDS:
        kept = (workspace / name).stat()
        assert (kept.st_ino == inodes[name]) == (name != SHARDS[1]), name
        assert kept.st_nlink == 1, name


def test_stock_dvc_pull_in_a_fresh_clone_reproduces_the_folder(
        folder_repo: ModelRepo, tmp_path: Path) -> None:
    source = write_hf_folder(tmp_path / "run" / "ckpt")
    manager = folder_repo.manager
    manager.upload(source)
    manager.tag_model_checkpoint()
    clone = tmp_path / "clone"
    git("clone", "-q", folder_repo.remote, clone, cwd=tmp_path)
    dvc("pull", "-q", cwd=clone)
    assert file_bytes(clone / "checkpoint") == file_bytes(source)


def test_download_lays_the_tree_in_the_folder_whole_or_in_part(
        folder_repo: ModelRepo, tmp_path: Path) -> None:
    source = write_hf_folder(tmp_path / "run" / "ckpt")
    manager = folder_repo.manager
    manager.upload(source)
    tag = manager.tag_model_checkpoint()

    whole = manager.download_model_checkpoint(tag, output_dir=tmp_path / "whole")
    assert whole.model_path == tmp_path / "whole"
    assert file_bytes(whole.model_path) == file_bytes(source)

    part = manager.download_model_checkpoint(
        tag, output_dir=tmp_path / "part", include=["*.safetensors", "*.json"],
        exclude=["model-00004*", "tokenizer"])
    assert sorted(files_under(part.model_path)) == sorted([
        *SHARDS[:3], "config.json", "generation_config.json", "model.safetensors.index.json",
        "tokenizer.json", "special tokens.json", "caf\u00e9-\u6570\u636e.json"])
    only = manager.download_model_checkpoint(tag, output_dir=tmp_path / "nested",
                                             include=["tokenizer/vocab"])
    assert files_under(only.model_path) == {"tokenizer/vocab/merges.txt": md5_of(
        source / "tokenizer" / "vocab" / "merges.txt")}
    with pytest.raises(ArtifactNotFoundError, match="matches"):
        manager.download_model_checkpoint(tag, output_dir=tmp_path / "none",
                                          include=["*.bin"])
    assert not (tmp_path / "none").exists()
    # On a machine without a clone: the artifact comes from the tag's own .cpv.json.
    detached = ModelsCheckpointsManage(team_name="AI-Convo", model_name="bert-large",
                                       repo_path=tmp_path / "no-clone-here")
    fetched = detached.download_model_checkpoint(tag, output_dir=tmp_path / "detached",
                                                 exclude=["*.safetensors"])
    assert fetched.model_path == tmp_path / "detached"
    assert "config.json" in files_under(fetched.model_path)
    assert not any(name.endswith(".safetensors") for name in files_under(fetched.model_path))
    meta = detached.get_model_metadata(tag)
    assert (meta["path"], meta["file_count"]) == ("checkpoint", 11)
    assert detached.diff(tag, tag)["file_changes"] == []


def test_revert_makes_the_folder_exactly_that_version(folder_repo: ModelRepo,
                                                      tmp_path: Path) -> None:
    manager = folder_repo.manager
    source = write_hf_folder(tmp_path / "v1")
    manager.upload(source)
    v1 = manager.tag_model_checkpoint()
    shutil.copytree(source, tmp_path / "v2", symlinks=True)
    (tmp_path / "v2" / "optimizer.pt").write_bytes(b"adam state")
    (tmp_path / "v2" / "config.json").write_text("{}")
    manager.upload(tmp_path / "v2")
    manager.tag_model_checkpoint()
    workspace = folder_repo.root / "checkpoint"

    # Unsaved work in the folder blocks a revert, changing nothing.
    (workspace / "scratch.txt").write_text("notes")
    snapshot = files_under(workspace)
    with pytest.raises(UnsavedChangesError, match="never uploaded"):
        manager.revert_model_checkpoint(v1)
    assert files_under(workspace) == snapshot

    manager.revert_model_checkpoint(v1, force=True)
    assert file_bytes(workspace) == file_bytes(source)
    assert not (workspace / "optimizer.pt").exists() and not (workspace / "scratch.txt").exists()
    assert folder_repo.git("status", "--porcelain") == ""
    assert not list(folder_repo.root.glob(".*cpv-*"))


def test_diff_lists_changed_files_with_sizes_from_git_alone(folder_repo: ModelRepo,
                                                            tmp_path: Path) -> None:
    manager = folder_repo.manager
    source = write_hf_folder(tmp_path / "ckpt")
    manager.upload(source, metrics={"loss": 0.5})
    v1 = manager.tag_model_checkpoint()
    (source / SHARDS[2]).write_bytes(b"x" * 100)
    (source / "tokenizer.json").unlink()
    (source / "added.txt").write_text("new")
    manager.upload(source, metrics={"loss": 0.4})
    v2 = manager.tag_model_checkpoint()
    # Neither the cache nor storage is needed: the tags list the files.
    shutil.rmtree(folder_repo.cache)
    shutil.rmtree(folder_repo.storage)
    result = manager.diff(v1, v2)
    assert result["files"] == {"added": ["added.txt"], "removed": ["tokenizer.json"],
                               "modified": [SHARDS[2]]}
    assert result["file_changes"] == [
        {"path": "added.txt", "change": "added", "old_size": None, "new_size": 3},
        {"path": SHARDS[2], "change": "modified", "old_size": 64 * 1024 + 4, "new_size": 100},
        {"path": "tokenizer.json", "change": "removed", "old_size": 18, "new_size": None},
    ]
    assert result["metrics"]["loss"]["delta"] == pytest.approx(-0.1)
    assert result["stats"]["file_count"] == {"old": 11, "new": 11, "delta": 0}


@pytest.mark.parametrize("wrong", ["file-for-folder", "folder-for-file"])
def test_a_source_of_the_wrong_kind_names_artifact_and_changes_nothing(
        tmp_path: Path, isolated_env: dict[str, Path], wrong: str) -> None:
    if wrong == "file-for-folder":
        repo = init_folder_repo(tmp_path / "work" / "bert-large", isolated_env["cpv_home"])
        source = tmp_path / "best.ckpt"
        source.write_bytes(b"weights")
    else:
        repo = init_folder_repo(tmp_path / "work" / "bert-large", isolated_env["cpv_home"],
                                artifact="model.bin")
        source = write_hf_folder(tmp_path / "ckpt")
    before = repo.snapshot()
    with pytest.raises(ArtifactNotFoundError, match="--artifact") as caught:
        repo.manager.upload_model_checkpoint(source)
    assert caught.value.hint
    assert repo.snapshot() == before
    assert not (repo.root / "checkpoint").exists() and not repo.model_file.exists()


def test_a_dangling_link_inside_the_folder_is_refused(folder_repo: ModelRepo,
                                                      tmp_path: Path) -> None:
    source = write_hf_folder(tmp_path / "ckpt")
    (source / "gone.bin").symlink_to(tmp_path / "nowhere")
    before = folder_repo.snapshot()
    with pytest.raises(ArtifactNotFoundError, match="does not exist"):
        folder_repo.manager.upload(source)
    assert folder_repo.snapshot() == before


def test_upload_from_elsewhere_refuses_to_replace_unsaved_work(folder_repo: ModelRepo,
                                                               tmp_path: Path) -> None:
    manager = folder_repo.manager
    manager.upload(write_hf_folder(tmp_path / "a"))
    workspace = folder_repo.root / "checkpoint"
    (workspace / "config.json").write_text('{"edited": true}')
    snapshot = files_under(workspace)
    other = write_hf_folder(tmp_path / "b", seed=7)
    with pytest.raises(UnsavedChangesError):
        manager.upload(other)
    assert files_under(workspace) == snapshot
    manager.upload(other, force=True)
    assert file_bytes(workspace) == file_bytes(other)
    # An upload of the workspace folder itself takes what is there.
    (workspace / "extra.txt").write_text("more")
    result = manager.upload()
    assert result.changed and folder_repo.git("status", "--porcelain") == ""


def test_a_file_artifact_under_its_own_name(tmp_path: Path, isolated_env: dict[str, Path]
                                            ) -> None:
    repo = init_folder_repo(tmp_path / "work" / "bert-large", isolated_env["cpv_home"],
                            artifact="model.safetensors")
    outside = tmp_path / "scratch" / "epoch_3.pt"
    outside.parent.mkdir()
    outside.write_bytes(os.urandom(5000))
    mode, mtime = outside.stat().st_mode, outside.stat().st_mtime_ns
    manager = repo.manager
    manager.upload_model_checkpoint(outside, metrics={"acc": 0.9})
    assert outside.stat().st_mode == mode and outside.stat().st_mtime_ns == mtime
    assert outside.stat().st_nlink == 1
    workspace = repo.root / "model.safetensors"
    assert workspace.read_bytes() == outside.read_bytes() and workspace.stat().st_nlink == 1
    assert (repo.root / "model.safetensors.dvc").is_file()
    assert "/model.safetensors" in (repo.root / ".gitignore").read_text().splitlines()
    tag = manager.tag_model_checkpoint()
    meta = manager.get_model_metadata(tag)
    assert (meta["path"], meta["size_bytes"]) == ("model.safetensors", 5000)
    assert "file_count" not in meta and "files" not in meta  # a folder's fields
    got = manager.download_model_checkpoint(tag, output_dir=tmp_path / "out")
    assert got.model_path == tmp_path / "out" / "model.safetensors"
    assert got.model_path.read_bytes() == outside.read_bytes()
    with pytest.raises(CPVError, match="--include"):
        manager.download_model_checkpoint(tag, output_dir=tmp_path / "x", include=["*"])


def test_a_repository_made_before_artifacts_keeps_working(repo: ModelRepo,
                                                          tmp_path: Path) -> None:
    # The layout main wrote before --artifact: .cpv.json without the field.
    legacy = {"team": repo.team, "model": repo.model, "format": 1}
    (repo.root / ".cpv.json").write_text(json.dumps(legacy, indent=2) + "\n")
    repo.git("commit", "-qam", "legacy layout")
    repo.git("push", "-q", "origin", "HEAD:main")
    md5, _ = repo.upload({"acc": 0.1})
    tag = repo.manager.tag_model_checkpoint()
    assert json.loads((repo.root / ".cpv.json").read_text()) == legacy, "left as it was"
    assert repo.manager.get_model_metadata(tag)["path"] == "model.bin"
    clone = ModelsCheckpointsManage(team_name=repo.team, model_name=repo.model,
                                    repo_path=tmp_path / "clone")
    assert clone.import_model_init().cloned
    assert clone.spec == ArtifactSpec.model("model.bin")
    got = clone.download_model_checkpoint(tag, output_dir=tmp_path / "out")
    assert md5_of(got.model_path) == md5


@pytest.mark.parametrize("name", ["", "/", "data", "data/", "a/b", "../x", ".git", ".dvc",
                                  "metrics.log", "x.dvc", ".hidden", "with space", "a*b",
                                  "README.md", "..", "model.bin//"])
def test_bad_artifact_names_are_refused_before_anything_is_made(
        tmp_path: Path, isolated_env: dict[str, Path], name: str) -> None:
    root = tmp_path / "work" / "m"
    with pytest.raises(InvalidNameError):
        ModelsCheckpointsManage(team_name="t", model_name="m",
                                repo_path=root).import_model_init(artifact=name)
    assert not root.exists()
    assert not (isolated_env["cpv_home"] / "remotes").exists()


@pytest.mark.parametrize(("name", "path", "tree"), [
    ("model.bin", "model.bin", False), ("checkpoint/", "checkpoint", True),
    ("epoch=3-step=100.ckpt", "epoch=3-step=100.ckpt", False), ("global_step1200/",
                                                                 "global_step1200", True)])
def test_artifact_spec_of_a_name(name: str, path: str, tree: bool) -> None:
    spec = ArtifactSpec.model(name)
    assert (spec.path, spec.tree, spec.name, spec.pointer_file) == (path, tree, name,
                                                                    f"{path}.dvc")


@pytest.mark.parametrize("artifact", ["../outside", "data", 7])
def test_an_unusable_artifact_in_cpv_json_is_refused(repo: ModelRepo, artifact: object) -> None:
    recorded = json.loads((repo.root / ".cpv.json").read_text())
    (repo.root / ".cpv.json").write_text(json.dumps({**recorded, "artifact": artifact}))
    with pytest.raises(ConfigError, match="unusable artifact"):
        ModelsCheckpointsManage(repo_path=repo.root).list_versions()
