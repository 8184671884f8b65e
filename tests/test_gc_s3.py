"""gc on S3 (SeaweedFS on 127.0.0.1): the grace period is judged by each object's own
LastModified, a dry run changes nothing, a real run removes exactly what nobody needs, and
afterwards a fresh machine and stock ``dvc pull`` get every kept version."""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from data_helpers import data_manager, write_dataset
from gc_helpers import history, stock_dvc_pull
from helpers import ModelRepo, files_under, init_repo, md5_of, run_cpv
from servers import SeaweedS3

from cp_manage.backends.s3 import S3Storage


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    with SeaweedS3(tmp_path_factory.mktemp("seaweed")) as server:
        yield server


@pytest.fixture
def s3_repo(s3: SeaweedS3, tmp_path: Path, isolated_env: dict[str, Path],
            monkeypatch: pytest.MonkeyPatch) -> tuple[ModelRepo, S3Storage]:
    """A model repository whose storage is a fresh bucket; keys in the environment."""
    bucket = s3.create_bucket(f"cpv-{secrets.token_hex(4)}")
    for name, value in {**s3.env(), "AWS_ENDPOINT_URL": s3.endpoint_url, "CPV_BUCKET": bucket,
                        "AWS_EC2_METADATA_DISABLED": "true",
                        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config")}.items():
        monkeypatch.setenv(name, value)
    repo = init_repo(tmp_path / "work" / "faster-whisper", isolated_env["cpv_home"])
    storage = repo.manager.repo.storage
    assert isinstance(storage, S3Storage)
    return repo, storage


def test_gc_on_s3_dry_run_then_for_real(s3_repo: tuple[ModelRepo, S3Storage],
                                        tmp_path: Path, isolated_env: dict[str, Path]) -> None:
    repo, storage = s3_repo
    made = history(repo)  # v0.1, v0.2 retired; u1 untagged; v0.3 in production; u4, v0.4, v0.5
    data = data_manager(repo)
    data.upload(write_dataset(tmp_path / "d1", {"a.txt": b"shared\n", "b.txt": b"old\n"}))
    data.tag_data_checkpoint()
    data.upload(write_dataset(tmp_path / "d2", {"a.txt": b"shared\n", "c.txt": b"new\n"}))
    data.tag_data_checkpoint()
    data.retire("data/v0.1")
    old_file = hashlib.md5(b"old\n").hexdigest()
    before = set(storage.iter_oids())
    assert len(before) == 7 + 2 + 3  # model blobs; two listings; three files

    # Everything was written seconds ago: inside the default grace period, by S3's own clock.
    fresh = json.loads(run_cpv("gc", "--dry-run", "--json", cwd=repo.root).stdout)
    assert (fresh["object_count"], fresh["held_objects"]) == (0, 3)  # v0.1, v0.2, u1

    dry = run_cpv("gc", "--keep-last", "1", "--grace", "0", "--dry-run", cwd=repo.root).stdout
    assert "Would remove 5 uploads: 6 objects" in dry, dry
    assert set(storage.iter_oids()) == before

    report = json.loads(run_cpv("gc", "--keep-last", "1", "--grace", "0", "--json",
                                cwd=repo.root).stdout)
    assert report["record"] == "gc/000001"
    gone = {made["v0.1"], made["v0.2"], made["u1"], made["u4"], old_file}
    listing = next(u["oid"] for u in report["uploads"] if u["kind"] == "data")
    assert set(storage.iter_oids()) == before - gone - {listing}
    assert len(set(storage.iter_oids())) == len(before) - 6

    # A fresh machine: a new clone with an empty cache.
    other = init_repo(tmp_path / "fresh" / "faster-whisper", isolated_env["cpv_home"])
    assert files_under(other.cache) == {}
    for name in ("v0.3", "v0.4", "v0.5"):
        artifact = other.manager.download_model_checkpoint(name, output_dir=tmp_path / name)
        assert md5_of(artifact.model_path) == made[name]
    got, _ = data_manager(other).download("data/v0.2", output_dir=tmp_path / "data")
    assert sorted(files_under(got)) == ["a.txt", "c.txt"]
    for tag in ("v0.3", "v0.4", "v0.5", "data/v0.2"):
        pulled = stock_dvc_pull(repo, tmp_path, tag)
        if tag.startswith("v"):
            assert md5_of(pulled / "model.bin") == made[tag]

    failed = run_cpv("model", "download", "v0.2", "-o", tmp_path / "old", cwd=other.root,
                     expect=1)
    assert "The model v0.2 was removed by gc on" in failed.stderr, failed.stderr
    assert "(gc/000001)" in failed.stderr
