"""How an upload moves its bytes: each new file from elsewhere is read and hashed once (the
workspace's copy is written from the same buffers as the cache's)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from artifact_helpers import SHARDS, file_bytes, init_folder_repo, write_hf_folder
from helpers import ModelRepo

from cp_manage.backends.cache import LocalCache


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
