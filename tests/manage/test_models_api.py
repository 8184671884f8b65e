"""The model lifecycle through the Python API (``ModelsCheckpointsManage``), on real git and DVC
remotes in temporary folders: init, upload, tag, list, metadata, download, revert, diff."""

from __future__ import annotations

import json
import os
import shutil
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from helpers import (
    MODEL,
    TEAM,
    ModelRepo,
    files_under,
    git,
    init_repo,
    isolate_environment,
    md5_of,
    overwrite_in_place,
    storage_object,
    write_random,
)

from cp_manage import (
    CPVError,
    IntegrityError,
    ModelArtifacts,
    ModelsCheckpointsManage,
    NothingToDoError,
    RemoteError,
    StorageError,
    UnsavedChangesError,
)
from cp_manage.backends.pointer import parse_pointer

# -- a shared history: four versions made once for the read-only tests of this module ----------


@dataclass
class History:
    repo: ModelRepo
    md5: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    commit: dict[str, str] = field(default_factory=dict)


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Iterator[History]:
    """v0.1 and v0.2 (automatic), v1.0 (major), v1.5 (explicit), then one untagged upload."""
    root = tmp_path_factory.mktemp("history")
    with pytest.MonkeyPatch.context() as mp:
        env = isolate_environment(mp, root / "env")
        repo = init_repo(root / "faster-whisper", env["cpv_home"])
        made = History(repo)
        manager = repo.manager
        for index, (kwargs, expected) in enumerate([
            ({}, "v0.1"), ({}, "v0.2"), ({"major": True}, "v1.0"),
            ({"version_tag": "v1.5", "message": "best so far"}, "v1.5"),
        ]):
            metrics = {"accuracy": 0.5 + index / 10, "loss": 1.0 - index / 10}
            md5, commit = repo.upload(metrics, size=2048 + index, seed=index)
            assert manager.tag_model_checkpoint(**kwargs) == expected
            made.md5[expected], made.metrics[expected] = md5, metrics
            made.commit[expected] = commit
        md5, commit = repo.upload({"accuracy": 0.99, "loss": 0.01}, seed=99)
        made.md5["HEAD"], made.commit["HEAD"] = md5, commit
        made.metrics["HEAD"] = {"accuracy": 0.99, "loss": 0.01}
        yield made


def test_versions_are_listed_oldest_first(history: History) -> None:
    manager = history.repo.manager
    assert manager.read_checkpoint_tag() == ["v0.1", "v0.2", "v1.0", "v1.5"]
    assert manager.read_model_checkpoint_tag() == manager.read_checkpoint_tag()
    infos = manager.list_versions()
    assert [i.md5 for i in infos] == [history.md5[v] for v in ("v0.1", "v0.2", "v1.0", "v1.5")]
    assert [i.commit for i in infos] == [history.commit[v] for v in ("v0.1", "v0.2", "v1.0",
                                                                     "v1.5")]


def test_tags_are_annotated_and_pushed(history: History) -> None:
    repo = history.repo
    remote = git("ls-remote", "--tags", repo.remote, cwd=repo.root)
    for version, commit in history.commit.items():
        if version == "HEAD":
            continue
        assert repo.git("cat-file", "-t", version) == "tag"
        assert f"{commit}\trefs/tags/{version}^{{}}" in remote.splitlines()
    assert repo.git("ls-remote", "origin", "refs/heads/main").split()[0] == repo.head()
    message = repo.git("tag", "-l", "--format=%(contents)", "v1.5")
    assert message.startswith("best so far")
    assert "cpv-metadata: " in message


def test_metadata_of_a_version(history: History) -> None:
    data = history.repo.manager.get_model_metadata("v0.2")
    assert data["tag"] == "v0.2" and data["version"] == "v0.2"
    assert data["metrics"] == history.metrics["v0.2"]
    assert data["md5"] == history.md5["v0.2"]
    assert data["size_bytes"] == 2049
    assert data["model_size_mb"] == round(2049 / 2**20, 3)
    assert data["team_name"] == TEAM and data["model_name"] == MODEL
    assert data["commit"] == history.commit["v0.2"]
    assert data["timestamp"] == data["created_at"] and data["created_at"].endswith("Z")
    assert data["author"] == "Test Engineer <test@example.com>"
    assert history.repo.manager.get_metadata("v0.2") == data


def test_metadata_of_head(history: History) -> None:
    data = history.repo.manager.get_model_metadata()
    assert data["tag"] is None
    assert data["md5"] == history.md5["HEAD"]
    assert data["metrics"] == history.metrics["HEAD"]
    assert data["commit"] == history.repo.head()


def test_every_version_is_in_storage_as_its_pointer_says(history: History) -> None:
    repo = history.repo
    for version, md5 in history.md5.items():
        rev = history.commit[version]
        pointer = parse_pointer(repo.git("show", f"{rev}:model.bin.dvc") + "\n",
                                source="model.bin.dvc")
        assert pointer.md5 == md5
        stored = storage_object(repo.storage, md5)
        assert stored.is_file(), f"{version} is not in storage"
        assert md5_of(stored) == md5
        assert stat.S_IMODE(stored.stat().st_mode) & 0o222 == 0


def test_download_each_version_leaves_head_and_working_tree_alone(history: History,
                                                                  tmp_path: Path) -> None:
    repo = history.repo
    manager = repo.manager
    before = repo.snapshot()
    for version in ("v0.1", "v0.2", "v1.0", "v1.5"):
        artifact = manager.download_model_checkpoint(version, output_dir=tmp_path / version)
        assert isinstance(artifact, ModelArtifacts)
        assert artifact.model_path == tmp_path / version / "model.bin"
        assert md5_of(artifact.model_path) == history.md5[version] == artifact.md5
        assert artifact.tag == version
        assert artifact.metrics == history.metrics[version]
        assert artifact.commit == history.commit[version]
        assert artifact.size_mb == round(artifact.model_path.stat().st_size / 2**20, 3)
        assert artifact.timestamp
    head = manager.download_checkpoint(output_dir=tmp_path / "head")
    assert md5_of(head.model_path) == history.md5["HEAD"]
    assert repo.snapshot() == before


def test_download_refuses_to_overwrite_the_working_tree(history: History) -> None:
    before = history.repo.snapshot()
    with pytest.raises(CPVError, match="working tree"):
        history.repo.manager.download_model_checkpoint("v0.1", output_dir=history.repo.root)
    assert history.repo.snapshot() == before


def test_diff(history: History) -> None:
    result = history.repo.manager.diff("v0.1", "v1.0")
    assert result["metrics"]["accuracy"]["old"] == 0.5
    assert result["metrics"]["accuracy"]["new"] == 0.7
    assert result["metrics"]["accuracy"]["delta"] == pytest.approx(0.2)
    assert result["metrics"]["loss"]["delta"] == pytest.approx(-0.2)
    assert result["size_delta_bytes"] == 2
    assert result["old"]["version"] == "v0.1" and result["new"]["version"] == "v1.0"


# -- upload ---------------------------------------------------------------------------------------


def test_init_makes_the_seed_layout_and_pushes(repo: ModelRepo) -> None:
    for name in ("README.md", "train.py", "metrics.log", ".gitignore", ".dvc/config",
                 ".cpv.json"):
        assert (repo.root / name).is_file(), name
    assert "/model.bin" in (repo.root / ".gitignore").read_text().splitlines()
    assert str(repo.storage) in (repo.root / ".dvc" / "config").read_text()
    assert repo.storage.is_dir()
    assert repo.git("ls-remote", "origin", "refs/heads/main").split()[0] == repo.head()
    assert repo.git("status", "--porcelain") == ""


def test_init_again_changes_nothing(repo: ModelRepo) -> None:
    before = repo.snapshot()
    result = ModelsCheckpointsManage(team_name=TEAM, model_name=MODEL,
                                     repo_path=repo.root).import_model_init()
    assert result.created is False
    assert repo.snapshot() == before


def test_upload_pushes_the_blob_then_commits_the_pointer(repo: ModelRepo) -> None:
    init_commit = repo.head()
    md5 = repo.write_model(5000)
    result = repo.manager.upload(repo.model_file, metrics={"accuracy": 0.9}, message="epoch 1")
    assert result.changed and result.md5 == md5 and result.size_bytes == 5000
    assert result.uploaded_bytes == 5000
    assert result.commit == repo.head() != init_commit
    assert repo.git("log", "-1", "--format=%s") == "epoch 1"
    pointer = parse_pointer(repo.git("show", "HEAD:model.bin.dvc") + "\n", source="x")
    assert pointer.md5 == md5 and pointer.size == 5000
    assert md5_of(storage_object(repo.storage, md5)) == md5
    assert json.loads(repo.git("show", "HEAD:metrics.log").splitlines()[-1]) == {"accuracy": 0.9}
    assert repo.git("ls-remote", "origin", "refs/heads/main").split()[0] == repo.head()
    assert repo.git("status", "--porcelain") == ""


def test_upload_of_unchanged_weights_and_metrics_makes_no_commit(repo: ModelRepo) -> None:
    manager = repo.manager
    repo.write_model()
    first = manager.upload(metrics={"accuracy": 0.9})
    again = manager.upload(metrics={"accuracy": 0.9})
    assert not again.changed and again.commit == first.commit and again.uploaded_bytes == 0
    assert manager.upload_checkpoint(repo.model_file) == first.commit  # no metrics given
    assert repo.head() == first.commit

    new_metrics = manager.upload(metrics={"accuracy": 0.95})
    assert new_metrics.changed and new_metrics.commit != first.commit
    assert new_metrics.uploaded_bytes == 0
    assert repo.git("diff", "--name-only", first.commit, new_metrics.commit) == "metrics.log"
    lines = repo.git("show", "HEAD:metrics.log").splitlines()
    assert [json.loads(line) for line in lines] == [{"accuracy": 0.9}, {"accuracy": 0.95}]


def test_upload_that_cannot_reach_storage_commits_nothing(repo: ModelRepo) -> None:
    repo.upload({"accuracy": 0.1})
    # Storage that cannot take new objects: its object folder is a file.
    shutil.rmtree(repo.storage / "files")
    (repo.storage / "files").write_text("not a folder")
    repo.write_model(seed=7)
    before = repo.snapshot()
    with pytest.raises(StorageError):
        repo.manager.upload(metrics={"accuracy": 0.2})
    assert repo.snapshot() == before
    # Once storage is back, the same command completes.
    (repo.storage / "files").unlink()
    result = repo.manager.upload(metrics={"accuracy": 0.2})
    assert result.changed and storage_object(repo.storage, result.md5).is_file()


def test_upload_refuses_bad_metrics(repo: ModelRepo) -> None:
    repo.write_model()
    before = repo.snapshot()
    # NaN and ±inf are accepted (a diverged run still saves its checkpoint): see
    # tests/test_metrics_values.py.
    for metrics in ({"t": object()}, {"": 1}, ["accuracy"]):
        with pytest.raises(CPVError):
            repo.manager.upload(metrics=metrics)  # type: ignore[arg-type]
    assert repo.snapshot() == before


# -- tag ------------------------------------------------------------------------------------------


def test_tag_numbers_sort_numerically(repo: ModelRepo) -> None:
    """Eleven explicit versions made out of order still list as v0.1 ... v0.11."""
    manager = repo.manager
    repo.write_model()
    order = [10, 2, 9, 11, 1, 5, 3, 8, 4, 7, 6]
    for step, minor in enumerate(order):
        manager.upload(metrics={"step": step})  # same weights, new metrics: a new commit
        assert manager.tag_model_checkpoint(f"v0.{minor}") == f"v0.{minor}"
    assert manager.read_checkpoint_tag() == [f"v0.{n}" for n in range(1, 12)]
    manager.upload(metrics={"step": 99})
    assert manager.tag_checkpoint() == "v0.12"
    manager.upload(metrics={"step": 100})
    assert manager.tag_model_checkpoint(major=True) == "v1.0"
    assert manager.read_checkpoint_tag()[-3:] == ["v0.11", "v0.12", "v1.0"]
    assert manager.get_model_metadata("v0.10")["metrics"] == {"step": 0}


def test_tagging_head_twice_returns_its_version(repo: ModelRepo) -> None:
    """A script run twice: the automatic (or the same explicit) version is HEAD's own; a
    different explicit one is refused. Nothing changes either way."""
    repo.upload()
    assert repo.manager.tag_model_checkpoint() == "v0.1"
    before = repo.snapshot()
    assert repo.manager.tag_model_checkpoint() == "v0.1"
    assert repo.manager.tag_model_checkpoint(major=True) == "v0.1"
    assert repo.manager.tag_model_checkpoint(version_tag="v0.1") == "v0.1"
    with pytest.raises(NothingToDoError, match=r"already v0\.1, so it cannot also be v0\.2"):
        repo.manager.tag_model_checkpoint(version_tag="v0.2")
    assert repo.snapshot() == before


def test_tag_before_any_upload_is_refused(repo: ModelRepo) -> None:
    before = repo.snapshot()
    with pytest.raises(NothingToDoError, match="upload"):
        repo.manager.tag_model_checkpoint()
    assert repo.snapshot() == before


# -- revert ---------------------------------------------------------------------------------------


@pytest.fixture
def two_versions(repo: ModelRepo) -> tuple[ModelRepo, dict[str, str]]:
    md5 = {}
    md5["v0.1"], _ = repo.upload({"accuracy": 0.5}, seed=1)
    repo.manager.tag_model_checkpoint()
    md5["v0.2"], _ = repo.upload({"accuracy": 0.6}, seed=2)
    repo.manager.tag_model_checkpoint()
    return repo, md5


def test_revert_is_a_new_pushed_commit(two_versions: tuple[ModelRepo, dict[str, str]]) -> None:
    repo, md5 = two_versions
    old_head = repo.head()
    commit = repo.manager.revert_model_checkpoint("v0.1")
    assert commit == repo.head()
    assert repo.git("rev-parse", "HEAD~1") == old_head  # history kept
    assert repo.git("ls-remote", "origin", "refs/heads/main").split()[0] == commit
    assert md5_of(repo.model_file) == md5["v0.1"]
    assert repo.git("show", "HEAD:model.bin.dvc") == repo.git("show", "v0.1:model.bin.dvc")
    assert repo.manager.get_model_metadata()["metrics"] == {"accuracy": 0.5}
    assert repo.git("status", "--porcelain") == ""
    # Reverting to what HEAD already holds changes nothing.
    before = repo.snapshot()
    assert repo.manager.revert_checkpoint("v0.1") is None
    assert repo.snapshot() == before


def test_revert_refuses_unsaved_changes_unless_forced(
        two_versions: tuple[ModelRepo, dict[str, str]]) -> None:
    repo, md5 = two_versions
    unsaved = repo.write_model(seed=3)
    before = repo.snapshot()
    with pytest.raises(UnsavedChangesError) as caught:
        repo.manager.revert_model_checkpoint("v0.1")
    assert "--force" in str(caught.value)
    assert repo.snapshot() == before
    assert md5_of(repo.model_file) == unsaved

    commit = repo.manager.revert_model_checkpoint("v0.1", force=True)
    assert commit == repo.head() and md5_of(repo.model_file) == md5["v0.1"]
    assert repo.git("status", "--porcelain", "--untracked-files=all") == ""


def test_revert_from_an_older_uploaded_checkpoint_needs_no_force(
        two_versions: tuple[ModelRepo, dict[str, str]], tmp_path: Path) -> None:
    """The workspace holds v0.1's bytes (uploaded, just not HEAD's): nothing would be lost."""
    repo, md5 = two_versions
    old = repo.manager.download_model_checkpoint("v0.1", output_dir=tmp_path / "old")
    shutil.copyfile(old.model_path, repo.model_file)
    assert repo.manager.revert_model_checkpoint("v0.2") is None  # HEAD already holds v0.2
    assert md5_of(repo.model_file) == md5["v0.2"]


def test_revert_with_missing_workspace_file_restores_it(
        two_versions: tuple[ModelRepo, dict[str, str]]) -> None:
    repo, md5 = two_versions
    repo.model_file.unlink()
    repo.manager.revert_model_checkpoint("v0.1")
    assert md5_of(repo.model_file) == md5["v0.1"]


# -- overwriting in place: torch.save(model, "model.bin") every epoch --------------------------


def _cache_state(repo: ModelRepo) -> dict[str, tuple[str, int]]:
    objects = repo.cache / "files" / "md5"
    return {str(p.relative_to(objects)): (md5_of(p), stat.S_IMODE(p.stat().st_mode))
            for p in sorted(objects.rglob("*")) if p.is_file()}


def _assert_overwrite_is_harmless(repo: ModelRepo, target: Path, *, cached: bool = True
                                  ) -> None:
    """Rewrite ``target`` in place; no stored version and no cache entry may change."""
    cache, storage = _cache_state(repo), files_under(repo.storage)
    manager = repo.manager
    versions = {v: manager.get_model_metadata(v)["md5"] for v in manager.read_checkpoint_tag()}
    assert bool(cache) == cached
    assert all(mode == 0o444 for _, mode in cache.values()), cache
    assert stat.S_IMODE(target.stat().st_mode) & stat.S_IWUSR, "the workspace file is read-only"
    cached_inodes = {p.stat().st_ino for p in (repo.cache / "files").rglob("*") if p.is_file()}
    assert target.stat().st_ino not in cached_inodes, "the workspace file is linked to the cache"
    overwrite_in_place(target, os.urandom(target.stat().st_size))
    assert _cache_state(repo) == cache
    assert files_under(repo.storage) == storage
    assert {v: repo.manager.get_model_metadata(v)["md5"] for v in versions} == versions
    for version, md5 in versions.items():
        fetched = repo.manager.download_model_checkpoint(version, output_dir=repo.root.parent
                                                         / f"check-{version}")
        assert md5_of(fetched.model_path) == md5


def test_overwrite_in_place_after_upload(two_versions: tuple[ModelRepo, dict[str, str]]) -> None:
    repo, _ = two_versions
    _assert_overwrite_is_harmless(repo, repo.model_file)
    # The rewritten weights are new: uploading them stores a new object.
    assert repo.manager.upload(metrics={"accuracy": 0.7}).changed


def test_overwrite_in_place_after_revert(two_versions: tuple[ModelRepo, dict[str, str]]) -> None:
    repo, _ = two_versions
    repo.manager.revert_model_checkpoint("v0.1")
    _assert_overwrite_is_harmless(repo, repo.model_file)
    with pytest.raises(UnsavedChangesError):
        repo.manager.revert_model_checkpoint("v0.2")


def test_overwrite_in_place_after_download(two_versions: tuple[ModelRepo, dict[str, str]],
                                           tmp_path: Path) -> None:
    repo, _ = two_versions
    artifact = repo.manager.download_model_checkpoint("v0.1", output_dir=tmp_path / "dl")
    _assert_overwrite_is_harmless(repo, artifact.model_path)


def test_overwrite_in_place_after_download_into_a_fresh_clone(
        two_versions: tuple[ModelRepo, dict[str, str]], tmp_path: Path) -> None:
    """A clone's first download of a version fills its cache from storage."""
    repo, md5 = two_versions
    other = ModelsCheckpointsManage(team_name=TEAM, model_name=MODEL,
                                    repo_path=tmp_path / "clone")
    assert other.import_model_init().cloned
    clone = ModelRepo(root=tmp_path / "clone", cpv_home=repo.cpv_home)
    clone.manager.revert_model_checkpoint("v0.1")
    assert md5_of(clone.model_file) == md5["v0.1"]
    # The object came straight from storage: this clone's cache is still empty.
    _assert_overwrite_is_harmless(clone, clone.model_file, cached=False)


# -- integrity and offline reading -------------------------------------------------------------


def test_download_verifies_md5(two_versions: tuple[ModelRepo, dict[str, str]],
                               tmp_path: Path) -> None:
    repo, md5 = two_versions
    cached = repo.cache / "files" / "md5" / md5["v0.1"][:2] / md5["v0.1"][2:]
    cached.chmod(0o644)
    cached.write_bytes(b"bit rot")
    # A corrupt cache entry is dropped and a good copy comes from storage.
    artifact = repo.manager.download_model_checkpoint("v0.1", output_dir=tmp_path / "a")
    assert md5_of(artifact.model_path) == md5["v0.1"]

    # A corrupt stored object (and no cache) is refused: nothing appears at the destination.
    shutil.rmtree(repo.cache)
    stored = storage_object(repo.storage, md5["v0.2"])
    stored.chmod(0o644)
    stored.write_bytes(b"bit rot")
    with pytest.raises(IntegrityError):
        repo.manager.download_model_checkpoint("v0.2", output_dir=tmp_path / "b")
    assert not (tmp_path / "b" / "model.bin").exists()
    assert [p.name for p in (tmp_path / "b").glob("*")] == []


def test_list_and_metadata_need_git_alone(two_versions: tuple[ModelRepo, dict[str, str]]
                                          ) -> None:
    repo, md5 = two_versions
    shutil.rmtree(repo.storage)
    shutil.rmtree(repo.cache)
    manager = repo.manager
    assert manager.read_checkpoint_tag() == ["v0.1", "v0.2"]
    assert manager.get_model_metadata("v0.1")["md5"] == md5["v0.1"]
    assert manager.get_model_metadata()["metrics"] == {"accuracy": 0.6}
    assert manager.diff("v0.1", "v0.2")["metrics"]["accuracy"]["delta"] == pytest.approx(0.1)
    with pytest.raises(StorageError):
        manager.download_model_checkpoint("v0.1", output_dir=repo.root.parent / "x")


def test_download_without_a_clone(two_versions: tuple[ModelRepo, dict[str, str]],
                                  tmp_path: Path) -> None:
    _, md5 = two_versions
    nowhere = ModelsCheckpointsManage(team_name=TEAM, model_name=MODEL,
                                      repo_path=tmp_path / "no-clone")
    artifact = nowhere.download_model_checkpoint("v0.1", output_dir=tmp_path / "out")
    assert md5_of(artifact.model_path) == md5["v0.1"]
    latest = nowhere.download_model_checkpoint(output_dir=tmp_path / "latest")
    assert md5_of(latest.model_path) == md5["v0.2"] and latest.tag == "v0.2"
    assert not (tmp_path / "no-clone").exists()


def test_the_seed_keyword_names_work_and_print_nothing(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """Scripts written for the seed's package call these exact keywords."""
    root = tmp_path / "seed-style"
    manager = ModelsCheckpointsManage(team_name=TEAM, model_name=MODEL, repo_path=root,
                                      verbose=True)
    manager.import_model_init(data_path=None, force=False)
    weights = write_random(root / "model.bin", 1000, seed=5)
    commit = manager.upload_model_checkpoint(model_path=root / "model.bin",
                                             metrics={"accuracy": 0.9}, verbose=True)
    assert manager.tag_model_checkpoint(version_tag="v1.0", message="first release") == "v1.0"
    artifact = manager.download_model_checkpoint(tag="v1.0", verbose=True)
    assert md5_of(artifact.model_path) == weights and artifact.commit == commit
    assert root not in artifact.model_path.parents  # never into the working tree
    metadata = manager.get_model_metadata(tag="v1.0")
    assert {"tag", "model_size_mb", "metrics", "timestamp", "team_name", "model_name"
            } <= metadata.keys()
    write_random(root / "model.bin", 1000, seed=6)
    manager.upload_model_checkpoint(model_path=root / "model.bin", metrics={"accuracy": 0.1})
    assert manager.revert_model_checkpoint(tag="v1.0") is not None
    assert manager.model_path == root / "model.bin" and md5_of(manager.model_path) == weights
    assert capsys.readouterr() == ("", "")


# -- a git remote that refuses every push (a real pre-receive hook, no mock) --------------------


def _refuse_pushes(repo: ModelRepo) -> None:
    hook = repo.remote / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'refused by policy' >&2\nexit 1\n")
    hook.chmod(0o755)


def test_refused_push_leaves_everything_as_it_was(
        two_versions: tuple[ModelRepo, dict[str, str]]) -> None:
    repo, _ = two_versions
    _refuse_pushes(repo)
    before = repo.snapshot()  # the workspace holds v0.2, HEAD's checkpoint
    with pytest.raises(RemoteError, match="refused by policy"):
        repo.manager.revert_model_checkpoint("v0.1")
    assert repo.snapshot() == before

    new_weights = repo.write_model(seed=9)
    before = repo.snapshot()
    with pytest.raises(RemoteError, match="refused by policy"):
        repo.manager.upload(metrics={"accuracy": 0.9})
    after = repo.snapshot()
    # Blobs go to storage first: a failed upload may leave its (unreferenced) blob there, so
    # that the same command, run again, only has git left to do.
    stored_before, stored_after = before.pop("storage"), after.pop("storage")
    assert set(stored_after) - set(stored_before) == {
        f"files/md5/{new_weights[:2]}/{new_weights[2:]}"}
    assert after == before


def test_refused_tag_push_leaves_no_tag(repo: ModelRepo) -> None:
    repo.upload({"accuracy": 0.1})
    _refuse_pushes(repo)
    before = repo.snapshot()
    with pytest.raises(RemoteError):
        repo.manager.tag_model_checkpoint()
    assert repo.snapshot() == before


def test_refused_revert_puts_back_an_older_uploaded_checkpoint(
        two_versions: tuple[ModelRepo, dict[str, str]], tmp_path: Path) -> None:
    repo, md5 = two_versions
    repo.upload({"accuracy": 0.7}, seed=3)
    repo.manager.tag_model_checkpoint()
    old = repo.manager.download_model_checkpoint("v0.1", output_dir=tmp_path / "old")
    shutil.copyfile(old.model_path, repo.model_file)
    _refuse_pushes(repo)
    before = repo.snapshot()
    with pytest.raises(RemoteError):
        repo.manager.revert_model_checkpoint("v0.2")
    assert repo.snapshot() == before
    assert md5_of(repo.model_file) == md5["v0.1"]


def test_refused_forced_revert_keeps_the_work_it_would_have_discarded(
        two_versions: tuple[ModelRepo, dict[str, str]]) -> None:
    repo, _ = two_versions
    unsaved = repo.write_model(seed=3)  # never uploaded
    _refuse_pushes(repo)
    before = repo.snapshot()
    with pytest.raises(RemoteError):
        repo.manager.revert_model_checkpoint("v0.1", force=True)
    assert repo.snapshot() == before
    assert md5_of(repo.model_file) == unsaved
    assert sorted(p.name for p in repo.root.iterdir() if "cpv" in p.name) == [".cpv.json"]
