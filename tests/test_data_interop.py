"""Datasets stay stock DVC: a fresh ``git clone`` + ``dvc pull`` reproduces every data version
exactly (odd file names included), ``dvc add`` of the same files writes the same pointer, and a
dataset pushed by stock DVC is one cpv can version and fetch."""

from __future__ import annotations

import shutil
from pathlib import Path

from data_helpers import ODD_NAMES, SEED_DATASET, data_manager, write_dataset
from helpers import ModelRepo, dvc, files_under, git

from cp_manage.backends.pointer import parse_pointer


def test_clone_and_dvc_pull_reproduce_every_data_version(repo: ModelRepo,
                                                          tmp_path: Path) -> None:
    manager = data_manager(repo)
    versions: dict[str, dict[str, str]] = {}
    manager.import_data_init(write_dataset(tmp_path / "v1", SEED_DATASET))
    versions[manager.tag_data_checkpoint()] = files_under(repo.root / "data")
    write_dataset(repo.root / "data", ODD_NAMES)
    (repo.root / "data" / "train" / "labels.csv").unlink()
    manager.upload_data_checkpoint()
    versions[manager.tag_data_checkpoint()] = files_under(repo.root / "data")
    write_dataset(repo.root / "data", {"train/part-0.jsonl": b'{"text": "changed"}\n'})
    manager.upload_data_checkpoint()
    versions[manager.tag_data_checkpoint(major=True)] = files_under(repo.root / "data")
    assert list(versions) == ["data/v0.1", "data/v0.2", "data/v1.0"]

    clone = tmp_path / "clone"
    git("clone", "--quiet", repo.remote, clone, cwd=tmp_path)
    for tag, expected in versions.items():
        git("checkout", "--quiet", tag, cwd=clone)
        dvc("pull", "--quiet", cwd=clone)
        assert files_under(clone / "data") == expected, tag
        assert "up to date" in dvc("status", cwd=clone)


def test_dvc_add_writes_the_same_pointer_and_sees_no_change(repo: ModelRepo,
                                                            tmp_path: Path) -> None:
    files = {**SEED_DATASET, **ODD_NAMES}
    data_manager(repo).import_data_init(write_dataset(tmp_path / "dataset", files))
    assert "up to date" in dvc("status", cwd=repo.root)
    ours = parse_pointer((repo.root / "data.dvc").read_bytes(), source="data.dvc")

    twin = tmp_path / "twin"
    twin.mkdir()
    git("init", "--quiet", cwd=twin)
    dvc("init", "--quiet", cwd=twin)
    shutil.copytree(tmp_path / "dataset", twin / "data")
    dvc("add", "--quiet", "data", cwd=twin)
    theirs = parse_pointer((twin / "data.dvc").read_bytes(), source="data.dvc")
    assert (theirs.md5, theirs.size, theirs.nfiles) == (ours.md5, ours.size, ours.nfiles)
    listing = f"files/md5/{ours.md5[:2]}/{ours.md5[2:]}.dir"
    assert (twin / ".dvc" / "cache" / listing).read_bytes() == (
        repo.storage / listing).read_bytes()


def test_a_dataset_pushed_by_stock_dvc_is_versioned_and_fetched_by_cpv(repo: ModelRepo,
                                                                       tmp_path: Path) -> None:
    write_dataset(repo.root / "data", {**SEED_DATASET, **ODD_NAMES})
    dvc("add", "--quiet", "data", cwd=repo.root)
    dvc("push", "--quiet", cwd=repo.root)
    repo.git("add", "data.dvc", ".gitignore")
    repo.git("commit", "--quiet", "-m", "data by hand")
    repo.git("push", "--quiet", "origin", "HEAD:main")
    manager = data_manager(repo)
    assert manager.tag_data_checkpoint() == "data/v0.1"
    assert manager.get_data_metadata("v0.1")["file_count"] == len(SEED_DATASET) + len(ODD_NAMES)
    shutil.rmtree(repo.cache)
    out = tmp_path / "out"
    manager.download_data_checkpoint("v0.1", output_dir=out)
    assert files_under(out) == files_under(repo.root / "data")
