"""Switching between versions: the replaced checkpoint is kept by rename and taken back."""

from __future__ import annotations

import os

from helpers import ModelRepo, md5_of, overwrite_in_place


def test_switching_back_takes_the_same_file_back(repo: ModelRepo) -> None:
    first, _ = repo.upload({"acc": 0.1}, size=200_000)
    repo.manager.tag_model_checkpoint()
    second, _ = repo.upload({"acc": 0.2}, size=200_000)
    repo.manager.tag_model_checkpoint()
    second_inode = repo.model_file.stat().st_ino

    repo.manager.revert_model_checkpoint("v0.1")
    assert md5_of(repo.model_file) == first
    repo.manager.revert_model_checkpoint("v0.2")
    # v0.2's own file came back from the pool: a rename, not a copy.
    assert repo.model_file.stat().st_ino == second_inode
    assert md5_of(repo.model_file) == second
    repo.manager.revert_model_checkpoint("v0.1")
    assert md5_of(repo.model_file) == first

    # The file taken back is private: rewriting it in place touches no stored version.
    overwrite_in_place(repo.model_file, b"epoch 3 weights")
    assert md5_of(repo.cache / "files/md5" / first[:2] / first[2:]) == first
    assert md5_of(repo.cache / "files/md5" / second[:2] / second[2:]) == second


def test_a_pooled_file_changed_behind_cpv_is_not_trusted(repo: ModelRepo) -> None:
    repo.upload(size=50_000)
    repo.manager.tag_model_checkpoint()
    second, _ = repo.upload(size=50_000)
    repo.manager.tag_model_checkpoint()
    repo.manager.revert_model_checkpoint("v0.1")  # v0.2's file goes to the pool
    pooled = repo.root / ".git" / "cpv" / "pool" / second
    assert pooled.is_file()
    with open(pooled, "r+b") as handle:
        handle.write(b"rot")
    os.utime(pooled, ns=(0, 1))
    repo.manager.revert_model_checkpoint("v0.2")
    assert md5_of(repo.model_file) == second  # fetched again from the cache, verified
    assert not pooled.exists()
