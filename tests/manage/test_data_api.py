"""The dataset lifecycle through the Python API (``DataCheckpointsManage``), on real git and DVC
remotes in temporary folders: import, upload, tag, list, metadata, download, revert, diff, the
``.dir`` format, only-what-changed transfers, lineage, and bad input that changes nothing."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest
from data_helpers import (
    ODD_NAMES,
    SEED_DATASET,
    SEED_SAMPLES,
    SEED_SPLITS,
    data_manager,
    data_snapshot,
    storage_oids,
    upload_model,
    write_dataset,
)
from helpers import ModelRepo, files_under, overwrite_in_place, storage_object

from cp_manage import (
    ArtifactNotFoundError,
    CPVError,
    DataArtifacts,
    DataCheckpointsManage,
    IntegrityError,
    InvalidDatasetError,
    NothingToDoError,
    PointerError,
    UnsavedChangesError,
    VersionNotFoundError,
)
from cp_manage.backends.cache import LocalCache
from cp_manage.backends.pointer import parse_pointer
from cp_manage.fsutil import md5_bytes


def _md5s(files: dict[str, bytes]) -> dict[str, str]:
    return {relpath: md5_bytes(content) for relpath, content in files.items()}


@pytest.fixture
def seeded(repo: ModelRepo, tmp_path: Path) -> ModelRepo:
    """The repository with the seed's dataset imported (not tagged)."""
    data_manager(repo).import_data_init(write_dataset(tmp_path / "dataset", SEED_DATASET))
    return repo


# -- the lifecycle under the seed's names ------------------------------------------------------


def test_import_copies_the_dataset_into_data_and_uploads_it(repo: ModelRepo,
                                                            tmp_path: Path) -> None:
    source = write_dataset(tmp_path / "dataset", SEED_DATASET)
    manager = DataCheckpointsManage(team_name=repo.team, model_name=repo.model,
                                    repo_path=repo.root, verbose=True)
    commit = manager.import_data_init(source)
    assert commit == repo.head()
    assert files_under(repo.root / "data") == _md5s(SEED_DATASET)
    assert files_under(source) == _md5s(SEED_DATASET), "the source is left as it was"
    pointer = parse_pointer((repo.root / "data.dvc").read_bytes(), source="data.dvc")
    assert pointer.path == "data" and pointer.is_dir
    assert pointer.nfiles == len(SEED_DATASET)
    assert pointer.size == sum(len(c) for c in SEED_DATASET.values())
    assert repo.git("status", "--porcelain") == ""
    assert repo.remote_refs().split()[0] == commit
    # Running it again changes nothing.
    assert manager.import_data_init(source) == commit


def test_import_model_init_with_data_path_imports_the_dataset(tmp_path: Path,
                                                               isolated_env: dict[str, Path]
                                                               ) -> None:
    from cp_manage import ModelsCheckpointsManage

    source = write_dataset(tmp_path / "dataset", SEED_DATASET)
    root = tmp_path / "work" / "yolov8"
    ModelsCheckpointsManage(team_name="AI-Vision", model_name="yolov8",
                            repo_path=root).import_model_init(data_path=source)
    assert files_under(root / "data") == _md5s(SEED_DATASET)
    assert (root / "data.dvc").is_file()


def test_tag_list_metadata_with_both_version_spellings(seeded: ModelRepo) -> None:
    manager = data_manager(seeded)
    assert manager.tag_data_checkpoint(message="first data") == "data/v0.1"
    write_dataset(seeded.root / "data", {"train/part-1.jsonl": b'{"text": "h"}\n'})
    manager.upload_data_checkpoint()
    assert manager.tag_checkpoint(major=True) == "data/v1.0"
    assert manager.read_data_checkpoint_tag() == ["v0.1", "v1.0"]
    assert manager.read_checkpoint_tag() == ["v0.1", "v1.0"]
    first = manager.get_data_metadata(tag="v0.1")
    assert first == manager.get_metadata("data/v0.1")
    assert first["tag"] == "data/v0.1" and first["version"] == "v0.1"
    assert first["kind"] == "data" and first["message"] == "first data"
    assert first["file_count"] == len(SEED_DATASET)
    assert first["splits"] == SEED_SPLITS
    assert first["sample_count"] == SEED_SAMPLES
    assert first["size_bytes"] == sum(len(c) for c in SEED_DATASET.values())
    assert first["team_name"] == seeded.team and first["model_name"] == seeded.model
    second = manager.get_data_metadata("v1.0")
    assert second["file_count"] == len(SEED_DATASET) + 1
    assert second["sample_count"] == SEED_SAMPLES + 1
    assert second["splits"]["train"] == SEED_SPLITS["train"] + 1
    # The model sequence is untouched by data versions.
    assert seeded.manager.read_checkpoint_tag() == []


def test_download_lays_the_dataset_tree_into_the_folder(seeded: ModelRepo,
                                                        tmp_path: Path) -> None:
    manager = data_manager(seeded)
    manager.tag_data_checkpoint()
    head, dvc_file = seeded.head(), (seeded.root / "data.dvc").read_bytes()
    out = tmp_path / "out"
    artifacts = manager.download_data_checkpoint(tag="v0.1", output_dir=out)
    assert isinstance(artifacts, DataArtifacts)
    assert artifacts.data_path == out
    assert (out / "train" / "part-0.jsonl").is_file()
    assert files_under(out) == _md5s(SEED_DATASET)
    assert (artifacts.version, artifacts.tag) == ("v0.1", "data/v0.1")
    assert artifacts.file_count == len(SEED_DATASET)
    assert artifacts.sample_count == SEED_SAMPLES
    assert artifacts.size_mb == round(sum(len(c) for c in SEED_DATASET.values()) / 2**20, 3)
    assert artifacts.timestamp
    assert seeded.head() == head and (seeded.root / "data.dvc").read_bytes() == dvc_file
    # The short name, with the tag spelling, into an empty existing folder; from storage only.
    LocalCache(seeded.cache).root.joinpath("files").rename(tmp_path / "old-cache")
    empty = tmp_path / "empty"
    empty.mkdir()
    again = manager.download_checkpoint(tag="data/v0.1", output_dir=empty)
    assert files_under(again.data_path) == _md5s(SEED_DATASET)


def test_download_refuses_a_folder_with_other_files(seeded: ModelRepo, tmp_path: Path) -> None:
    manager = data_manager(seeded)
    busy = tmp_path / "busy"
    write_dataset(busy, {"mine.txt": b"keep me"})
    with pytest.raises(CPVError, match="not empty"):
        manager.download_data_checkpoint(output_dir=busy)
    assert files_under(busy) == {"mine.txt": md5_bytes(b"keep me")}
    with pytest.raises(CPVError, match="working tree"):
        manager.download_data_checkpoint(output_dir=seeded.root / "data")


def test_default_download_location_can_be_fetched_twice(seeded: ModelRepo) -> None:
    manager = data_manager(seeded)
    manager.tag_data_checkpoint()
    first = manager.download_data_checkpoint("v0.1")
    second = manager.download_data_checkpoint("v0.1")
    assert first.data_path == second.data_path
    assert files_under(second.data_path) == _md5s(SEED_DATASET)


def test_a_corrupt_object_never_leaves_half_a_dataset(seeded: ModelRepo, tmp_path: Path) -> None:
    manager = data_manager(seeded)
    manager.tag_data_checkpoint()
    md5 = md5_bytes(SEED_DATASET["train/labels.csv"])
    LocalCache(seeded.cache).discard(md5)
    stored = storage_object(seeded.storage, md5)
    os.chmod(stored, 0o644)
    stored.write_bytes(b"id,label\n1,cat\n2,bat\n")
    out = tmp_path / "out"
    with pytest.raises(IntegrityError, match="corrupt"):
        manager.download_data_checkpoint("v0.1", output_dir=out)
    assert not out.exists()
    assert not [name for name in os.listdir(tmp_path) if ".cpv-" in name]


def test_revert_brings_a_version_back_as_a_new_commit(seeded: ModelRepo) -> None:
    manager = data_manager(seeded)
    manager.tag_data_checkpoint()
    v1 = files_under(seeded.root / "data")
    (seeded.root / "data" / "train" / "labels.csv").unlink()
    write_dataset(seeded.root / "data", {"test/extra.jsonl": b"{}\n"})
    manager.upload_data_checkpoint()
    manager.tag_data_checkpoint()
    v2_head = seeded.head()
    commit = manager.revert_data_checkpoint(tag="v0.1")
    assert commit is not None and commit != v2_head
    assert files_under(seeded.root / "data") == v1
    assert seeded.git("rev-parse", "HEAD~1") == v2_head, "history is kept"
    assert seeded.git("status", "--porcelain") == ""
    assert seeded.remote_refs().split()[0] == commit
    assert manager.get_data_metadata()["md5"] == manager.get_data_metadata("v0.1")["md5"]
    assert manager.revert_checkpoint("data/v0.1") is None, "HEAD already holds it"
    # A training script may now rewrite a file in place; no stored version changes.
    target = seeded.root / "data" / "train" / "part-0.jsonl"
    overwrite_in_place(target, b"rewritten\n")
    cache = LocalCache(seeded.cache)
    assert cache.verify(md5_bytes(SEED_DATASET["train/part-0.jsonl"]))


def test_revert_refuses_unsaved_changes_unless_forced(seeded: ModelRepo) -> None:
    manager = data_manager(seeded)
    manager.tag_data_checkpoint()
    write_dataset(seeded.root / "data", {"train/part-1.jsonl": b"{}\n"})
    manager.upload_data_checkpoint()
    write_dataset(seeded.root / "data", {"train/unsaved.jsonl": b"{}\n"})
    before = data_snapshot(seeded)
    with pytest.raises(UnsavedChangesError, match="never uploaded"):
        manager.revert_data_checkpoint("v0.1")
    assert data_snapshot(seeded) == before
    assert manager.revert_data_checkpoint("v0.1", force=True) is not None
    assert files_under(seeded.root / "data") == _md5s(SEED_DATASET)


def test_diff_compares_counts_and_names_the_changed_files(seeded: ModelRepo) -> None:
    manager = data_manager(seeded)
    manager.tag_data_checkpoint()
    data = seeded.root / "data"
    (data / "test" / "part-0.jsonl").unlink()
    write_dataset(data, {"train/part-0.jsonl": b'{"text": "z"}\n',
                         "holdout/part-0.jsonl": b'{"text": "y"}\n{"text": "x"}\n'})
    manager.upload_data_checkpoint()
    manager.tag_data_checkpoint()
    result = manager.diff("v0.1", "data/v0.2")
    assert result["files"] == {"added": ["holdout/part-0.jsonl"],
                               "removed": ["test/part-0.jsonl"],
                               "modified": ["train/part-0.jsonl"]}
    assert result["stats"]["file_count"] == {"old": 5, "new": 5, "delta": 0}
    assert result["stats"]["files in holdout"] == {"old": None, "new": 1, "delta": None}
    assert result["stats"]["sample_count"]["delta"] == 2 - 2 + (1 - 3)
    assert result["metrics"] == {}
    json.dumps(result)


# -- the stored format -------------------------------------------------------------------------


def test_directory_listing_is_byte_for_byte_dvc_3(seeded: ModelRepo) -> None:
    pointer = parse_pointer((seeded.root / "data.dvc").read_bytes(), source="data.dvc")
    expected = json.dumps(sorted(({"md5": md5_bytes(c), "relpath": r}
                                  for r, c in SEED_DATASET.items()),
                                 key=lambda e: e["relpath"]), sort_keys=True).encode()
    listing = storage_object(seeded.storage, pointer.oid).read_bytes()
    assert listing == expected
    assert pointer.md5 == md5_bytes(expected)
    assert (seeded.root / "data.dvc").read_text() == (
        f"outs:\n- md5: {pointer.md5}.dir\n  size: {pointer.size}\n  nfiles: 5\n"
        "  hash: md5\n  path: data\n")
    for content in SEED_DATASET.values():
        assert storage_object(seeded.storage, md5_bytes(content)).read_bytes() == content


def test_only_changed_files_are_hashed_stored_and_sent(repo: ModelRepo,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """10,000 files, 100 changed: 100 file objects and one listing move, nothing else."""
    data = repo.root / "data"
    for index in range(10_000):
        path = data / f"split{index % 3}" / f"shard{index // 1000}" / f"{index:05d}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"sample %d\n" % index)
    manager = data_manager(repo)
    manager.upload_data_checkpoint()
    before = storage_oids(repo)
    assert len(before) == 10_001
    for index in range(0, 10_000, 100):
        path = data / f"split{index % 3}" / f"shard{index // 1000}" / f"{index:05d}.txt"
        path.write_bytes(b"changed %d\n" % index)
    hashed: list[Path] = []
    original = LocalCache.add_file

    def counting(self: LocalCache, source: Path, **kwargs: object) -> str:
        hashed.append(source)
        return original(self, source, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(LocalCache, "add_file", counting)
    started = time.monotonic()
    result = data_manager(repo).upload()
    elapsed = time.monotonic() - started
    after = storage_oids(repo)
    added = after - before
    print(f"objects before={len(before)} after={len(after)} added={len(added)} "
          f"second upload {elapsed:.2f}s")
    assert len(hashed) == 100, "unchanged files are not read again"
    assert len(added) == 101
    assert sum(oid.endswith(".dir") for oid in added) == 1
    pointer = parse_pointer((repo.root / "data.dvc").read_bytes(), source="data.dvc")
    assert f"{pointer.md5}.dir" in added
    listing_size = storage_object(repo.storage, pointer.oid).stat().st_size
    assert result.uploaded_bytes == listing_size + sum(
        len(b"changed %d\n" % index) for index in range(0, 10_000, 100))


# -- lineage -----------------------------------------------------------------------------------


def test_model_versions_record_the_data_they_were_trained_on(seeded: ModelRepo) -> None:
    data = data_manager(seeded)
    dataset_md5 = data.get_data_metadata()["md5"]
    upload_model(seeded, {"accuracy": 0.5}, seed=1)
    assert seeded.manager.tag_model_checkpoint() == "v0.1"
    # Trained on data that was uploaded but not yet a version: its content hash.
    assert seeded.manager.get_model_metadata("v0.1")["data_version"] == f"md5:{dataset_md5}"
    data.tag_data_checkpoint()
    # Once that data is a version, the model's lineage names it.
    assert seeded.manager.get_model_metadata("v0.1")["data_version"] == "data/v0.1"
    assert seeded.manager.list_versions()[0].data_version == "data/v0.1"
    write_dataset(seeded.root / "data", {"train/part-9.jsonl": b"{}\n"})
    data.upload_data_checkpoint()
    data.tag_data_checkpoint()
    upload_model(seeded, {"accuracy": 0.6}, seed=2)
    seeded.manager.tag_model_checkpoint()
    assert seeded.manager.get_model_metadata("v0.2")["data_version"] == "data/v0.2"
    assert seeded.manager.get_model_metadata()["data_version"] == "data/v0.2"


def test_a_dataset_that_is_already_a_version_keeps_that_version(seeded: ModelRepo) -> None:
    """A script that tags its data and then its model, run again: the data tag answers with
    the version the dataset already is; only a different explicit version is refused."""
    data = data_manager(seeded)
    assert data.tag_data_checkpoint() == "data/v0.1"
    upload_model(seeded, seed=3)  # a new commit, the same data
    before = data_snapshot(seeded)
    assert data.tag_data_checkpoint() == "data/v0.1"
    assert data.tag_data_checkpoint(version_tag="v0.1") == "data/v0.1"
    with pytest.raises(NothingToDoError, match=re.escape("already data/v0.1, so it cannot "
                                                         "also be data/v0.2")):
        data.tag_data_checkpoint(version_tag="data/v0.2")
    assert data_snapshot(seeded) == before


# -- bad input: a clear error, nothing changed ------------------------------------------------


def _loop(root: Path) -> Path:
    write_dataset(root, SEED_DATASET)
    os.symlink("..", root / "train" / "up")
    return root


def _self_loop(root: Path) -> Path:
    write_dataset(root, SEED_DATASET)
    os.symlink("me", root / "train" / "me")
    return root


def _with_git(root: Path) -> Path:
    write_dataset(root, {**SEED_DATASET, ".git/HEAD": b"ref: refs/heads/main\n"})
    return root


def _empty(root: Path) -> Path:
    (root / "train").mkdir(parents=True)
    return root


def _a_file(root: Path) -> Path:
    root.parent.mkdir(parents=True, exist_ok=True)
    root.write_bytes(b"not a folder")
    return root


def _fifo(root: Path) -> Path:
    write_dataset(root, SEED_DATASET)
    os.mkfifo(root / "train" / "pipe")
    return root


def _dangling(root: Path) -> Path:
    write_dataset(root, SEED_DATASET)
    os.symlink("/nonexistent/target", root / "train" / "gone.jsonl")
    return root


@pytest.mark.parametrize(("make", "error", "match"), [
    (lambda root: root, ArtifactNotFoundError, "does not exist"),
    (_empty, ArtifactNotFoundError, "holds no files"),
    (_a_file, ArtifactNotFoundError, "not a folder"),
    (_loop, InvalidDatasetError, "loop"),
    (_self_loop, InvalidDatasetError, "loop"),
    (_with_git, InvalidDatasetError, "git repository"),
    (_fifo, InvalidDatasetError, "not a regular file"),
    (_dangling, ArtifactNotFoundError, "does not exist"),
], ids=["missing", "empty", "file", "loop", "self-loop", "dot-git", "fifo", "dangling"])
def test_bad_datasets_are_refused_and_change_nothing(seeded: ModelRepo, tmp_path: Path,
                                                     make: object, error: type[Exception],
                                                     match: str) -> None:
    manager = data_manager(seeded)
    before, oids = data_snapshot(seeded), storage_oids(seeded)
    source = make(tmp_path / "bad")  # type: ignore[operator]
    with pytest.raises(error, match=match) as caught:
        manager.import_data_init(source)
    assert isinstance(caught.value, CPVError) and caught.value.hint
    assert data_snapshot(seeded) == before
    assert storage_oids(seeded) == oids


def test_bad_workspace_dataset_is_refused_on_upload(seeded: ModelRepo) -> None:
    manager = data_manager(seeded)
    os.symlink("..", seeded.root / "data" / "train" / "up")
    before = data_snapshot(seeded)
    with pytest.raises(InvalidDatasetError, match="loop"):
        manager.upload_data_checkpoint()
    assert data_snapshot(seeded) == before


def test_upload_of_another_folder_keeps_unsaved_work(seeded: ModelRepo, tmp_path: Path) -> None:
    manager = data_manager(seeded)
    write_dataset(seeded.root / "data", {"train/unsaved.jsonl": b"{}\n"})
    before = data_snapshot(seeded)
    other = write_dataset(tmp_path / "other", {"train/x.jsonl": b"{}\n"})
    with pytest.raises(UnsavedChangesError):
        manager.upload_data_checkpoint(data_path=other)
    assert data_snapshot(seeded) == before
    manager.upload_data_checkpoint(data_path=other, force=True)
    assert files_under(seeded.root / "data") == files_under(other)


def test_a_model_version_is_not_a_data_version(seeded: ModelRepo) -> None:
    upload_model(seeded, seed=4)
    seeded.manager.tag_model_checkpoint(version_tag="v3.0")
    manager = data_manager(seeded)
    before = data_snapshot(seeded)
    for call in (lambda: manager.get_data_metadata("v3.0"),
                 lambda: manager.download_data_checkpoint("v3.0"),
                 lambda: manager.revert_data_checkpoint("v3.0")):
        with pytest.raises(VersionNotFoundError, match=re.escape("No data version v3.0")):
            call()
    assert data_snapshot(seeded) == before


def test_a_dataset_has_no_metrics(seeded: ModelRepo) -> None:
    with pytest.raises(CPVError, match="no metrics"):
        data_manager(seeded).upload(metrics={"accuracy": 1.0})


def test_odd_file_names_round_trip(repo: ModelRepo, tmp_path: Path) -> None:
    manager = data_manager(repo)
    manager.import_data_init(write_dataset(tmp_path / "odd", ODD_NAMES))
    manager.tag_data_checkpoint()
    assert files_under(repo.root / "data") == _md5s(ODD_NAMES)
    out = tmp_path / "out"
    manager.download_data_checkpoint("v0.1", output_dir=out)
    assert files_under(out) == _md5s(ODD_NAMES)
    assert manager.get_data_metadata("v0.1")["splits"] == {".": 1, "train": 4}


def test_undecodable_names_are_refused(repo: ModelRepo, tmp_path: Path) -> None:
    source = write_dataset(tmp_path / "latin1", {"train/ok.txt": b"ok"})
    with open(os.path.join(os.fsencode(source / "train"), b"caf\xe9.txt"), "wb") as handle:
        handle.write(b"latin-1 name")
    before = data_snapshot(repo)
    with pytest.raises(InvalidDatasetError, match="UTF-8"):
        data_manager(repo).import_data_init(source)
    assert data_snapshot(repo) == before


def test_download_without_a_clone_from_team_and_model(seeded: ModelRepo,
                                                      tmp_path: Path) -> None:
    data_manager(seeded).tag_data_checkpoint()
    nowhere = tmp_path / "no-clone-here"
    manager = DataCheckpointsManage(team_name=seeded.team, model_name=seeded.model,
                                    repo_path=nowhere)
    artifacts = manager.download_data_checkpoint(tag="v0.1", output_dir=tmp_path / "fetched")
    assert files_under(artifacts.data_path) == _md5s(SEED_DATASET)
    assert artifacts.tag == "data/v0.1" and not nowhere.exists()


def test_a_listing_naming_paths_outside_is_refused(seeded: ModelRepo, tmp_path: Path) -> None:
    """A hostile ``.dir`` (pushed by anyone with storage access) writes nothing anywhere."""
    evil = json.dumps([{"md5": md5_bytes(b"x"), "relpath": "../escaped.txt"}],
                      sort_keys=True).encode()
    md5 = md5_bytes(evil)
    target = storage_object(seeded.storage, f"{md5}.dir")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(evil)
    (seeded.root / "data.dvc").write_text(
        f"outs:\n- md5: {md5}.dir\n  size: 1\n  nfiles: 1\n  hash: md5\n  path: data\n")
    seeded.git("commit", "--quiet", "-am", "hostile listing")
    out = tmp_path / "out"
    with pytest.raises(PointerError, match="outside"):
        data_manager(seeded).download_data_checkpoint(output_dir=out)
    assert not out.exists() and not (tmp_path / "escaped.txt").exists()
