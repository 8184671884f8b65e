"""How an upload moves its bytes: each new file from elsewhere is read and hashed once (the
workspace's copy is written from the same buffers as the cache's), and a folder's large files
go to storage while the rest of it is still being hashed, its listing last."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import pytest
from artifact_helpers import SHARDS, file_bytes, init_folder_repo, write_hf_folder
from data_helpers import storage_oids
from helpers import ModelRepo, files_under, md5_of

from cp_manage.backends.cache import LocalCache
from cp_manage.backends.storage import LocalStorage
from cp_manage.errors import StorageError
from cp_manage.manage import sending


@pytest.fixture
def folder_repo(tmp_path: Path, isolated_env: dict[str, Path]) -> ModelRepo:
    return init_folder_repo(tmp_path / "work" / "bert-large", isolated_env["cpv_home"])


def copies_out_of_the_cache(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every file object copied out of the local cache from now on (listings, read
    from there, are not files of the artifact)."""
    taken: list[str] = []
    for name in ("export", "checkout"):
        real = getattr(LocalCache, name)

        def spy(self: LocalCache, oid: str, *args: Any, real: Any = real, **kwargs: Any) -> Any:
            if not oid.endswith(".dir"):
                taken.append(oid)
            return real(self, oid, *args, **kwargs)

        monkeypatch.setattr(LocalCache, name, spy)
    return taken


def leftovers(root: Path) -> list[str]:
    return sorted(name for name in os.listdir(root)
                  if name.endswith((".cpv-tmp", ".cpv-tmpdir")))


def assert_private(root: Path) -> None:
    for path in [root] if root.is_file() else root.rglob("*"):
        if path.is_file():
            info = os.lstat(path)
            assert info.st_nlink == 1 and info.st_mode & 0o200, path


def test_a_folder_from_elsewhere_is_read_and_hashed_once(
        folder_repo: ModelRepo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = write_hf_folder(tmp_path / "scratch" / "best")
    taken = copies_out_of_the_cache(monkeypatch)
    folder_repo.manager.upload(source)

    assert taken == [], "the workspace copied files out of the cache again"
    workspace = folder_repo.root / "checkpoint"
    assert file_bytes(workspace) == file_bytes(source)
    assert_private(workspace)
    assert leftovers(folder_repo.root) == []

    # One shard changed: the workspace links its unchanged files and takes the new copy.
    (source / SHARDS[2]).write_bytes(b"fine-tuned" * 999)
    folder_repo.manager.upload(source)
    assert taken == []
    assert file_bytes(workspace) == file_bytes(source)
    assert_private(workspace)
    assert leftovers(folder_repo.root) == []


def test_a_file_from_elsewhere_is_read_and_hashed_once(
        tmp_path: Path, isolated_env: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    repo = init_folder_repo(tmp_path / "work" / "llama", isolated_env["cpv_home"],
                            artifact="model.safetensors")
    source = tmp_path / "scratch" / "epoch_3.safetensors"
    source.parent.mkdir(parents=True)
    source.write_bytes(os.urandom(300_000))
    taken = copies_out_of_the_cache(monkeypatch)
    repo.manager.upload(source)

    assert taken == []
    workspace = repo.root / "model.safetensors"
    assert workspace.read_bytes() == source.read_bytes()
    assert_private(workspace)
    assert leftovers(repo.root) == []


def test_large_files_are_sent_while_the_rest_is_hashed(
        folder_repo: ModelRepo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sending, "EARLY_UPLOAD", 32 * 1024)  # the shards are 64 KiB
    source = write_hf_folder(tmp_path / "scratch" / "best")
    sent: list[str] = []
    sending_began = threading.Event()
    real_upload = LocalStorage.upload

    def upload(self: LocalStorage, oid: str, path: Path, **kwargs: Any) -> int:
        sent.append(oid)
        sending_began.set()
        return real_upload(self, oid, path, **kwargs)

    # The last shard's hashing waits until storage has begun on an earlier one: it never
    # would if nothing went to storage before every file was hashed.
    waited: list[bool] = []
    real_add = LocalCache.add_file

    def add_file(self: LocalCache, path: Path, **kwargs: Any) -> str:
        if path.name == SHARDS[-1]:
            waited.append(sending_began.wait(timeout=30))
        return real_add(self, path, **kwargs)

    monkeypatch.setattr(LocalStorage, "upload", upload)
    monkeypatch.setattr(LocalCache, "add_file", add_file)
    result = folder_repo.manager.upload(source)

    assert waited == [True], "no file went to storage while the folder was being hashed"
    stored = storage_oids(folder_repo)
    assert sorted(sent) == sorted(stored) and len(sent) == len(stored) == 11
    assert sent[-1] == f"{result.md5}.dir", "the listing went before a file it names"
    assert result.uploaded_bytes == sum(
        folder_repo.cache.joinpath("files", "md5", o[:2], o[2:]).stat().st_size for o in stored)


def test_a_failed_early_upload_fails_the_upload_and_changes_nothing(
        folder_repo: ModelRepo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sending, "EARLY_UPLOAD", 32 * 1024)
    source = write_hf_folder(tmp_path / "scratch" / "best")
    victim = md5_of(source / SHARDS[1])
    real_upload = LocalStorage.upload

    def upload(self: LocalStorage, oid: str, path: Path, **kwargs: Any) -> int:
        if oid == victim:  # the disk's failure only
            raise StorageError(f"Cannot write {oid} to storage {self.root}: I/O error")
        return real_upload(self, oid, path, **kwargs)

    monkeypatch.setattr(LocalStorage, "upload", upload)
    before = folder_repo.snapshot()
    workspace = files_under(folder_repo.root / "checkpoint")
    with pytest.raises(StorageError, match=victim):
        folder_repo.manager.upload(source)

    after = folder_repo.snapshot()
    assert {k: v for k, v in after.items() if k != "storage"} == {
        k: v for k, v in before.items() if k != "storage"}
    assert files_under(folder_repo.root / "checkpoint") == workspace
    assert leftovers(folder_repo.root) == []
    assert not any(oid.endswith(".dir") for oid in storage_oids(folder_repo))
