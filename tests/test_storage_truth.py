"""Storage is the only truth about storage.

A storage location that is gone (a folder deleted, a share not mounted, a bucket deleted) is an
error that names it and changes nothing: only ``cpv init`` creates a location. And a version is
tagged only once storage itself confirms its objects: objects removed behind cpv's back (stock
``dvc gc -c``, a clean-up script) are sent again by the next upload and stop a tag, whatever an
earlier upload from this clone did.

Real git, real DVC, a real S3 server (SeaweedFS on 127.0.0.1), cpv as a subprocess.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from data_helpers import SEED_DATASET, write_dataset
from helpers import (
    TIMEOUT,
    ModelRepo,
    assert_one_error_line,
    dvc,
    git,
    init_repo,
    md5_of,
    run_cpv,
    storage_object,
)
from servers import SeaweedS3, free_ports

from cp_manage import DataCheckpointsManage, ModelsCheckpointsManage
from cp_manage.backends.s3 import S3Storage
from cp_manage.backends.s3_head import object_exists
from cp_manage.errors import StorageError

# -- helpers ------------------------------------------------------------------------------------


def refs(repo: ModelRepo) -> dict[str, str]:
    """What a refused command must leave as it was: local and remote refs, the index."""
    return {"local": repo.git("for-each-ref"), "remote": repo.remote_refs(),
            "status": repo.git("status", "--porcelain")}


def fails_naming_the_folder(repo: ModelRepo, *args: str, cwd: Path | None = None) -> str:
    line = assert_one_error_line(run_cpv(*args, cwd=cwd or repo.root, expect=None))
    assert f"The storage folder {repo.storage} does not exist" in line, line
    assert "share that holds it mounted" in line, line
    assert not repo.storage.exists(), f"cpv {' '.join(args)} re-created the storage folder"
    return line


def clone(repo: ModelRepo, path: Path) -> Path:
    git("clone", "-q", repo.remote, path, cwd=path.parent)
    return path


# -- item 4: a missing storage folder is an error, never re-created ------------------------------


def test_a_missing_storage_folder_stops_upload_tag_and_download(repo: ModelRepo,
                                                                tmp_path: Path) -> None:
    repo.write_model(seed=1)
    run_cpv("model", "upload", cwd=repo.root)
    run_cpv("model", "tag", cwd=repo.root)
    b = repo.write_model(seed=2)
    run_cpv("model", "upload", "--metric", "loss=0.5", cwd=repo.root)  # HEAD: untagged
    shutil.rmtree(repo.storage)  # the share is not mounted

    repo.write_model(seed=3)
    before = refs(repo)
    fails_naming_the_folder(repo, "model", "upload")
    assert refs(repo) == before
    # The artifact unchanged, the metrics new: a commit would follow, but storage is asked.
    assert repo.write_model(seed=2) == b
    fails_naming_the_folder(repo, "model", "upload", "--metric", "loss=0.4")
    # Unchanged altogether: still refused, storage cannot confirm the object.
    fails_naming_the_folder(repo, "model", "upload", "--metric", "loss=0.5")
    fails_naming_the_folder(repo, "model", "tag")
    assert refs(repo) == before
    assert repo.git("tag") == "v0.1"

    # A clone without the object cached needs storage: refused, nothing written.
    other = clone(repo, tmp_path / "other")
    out = tmp_path / "out"
    fails_naming_the_folder(repo, "model", "download", "v0.1", "-o", str(out), cwd=other)
    assert not (out / "model.bin").exists()

    # Served from this clone's cache it succeeds, with a warning that names the folder.
    done = run_cpv("model", "download", "v0.1", "-o", str(tmp_path / "c"), cwd=repo.root)
    assert f"warning: The storage folder {repo.storage} does not exist" in done.stderr
    assert "mounted" in done.stderr
    assert (tmp_path / "c" / "model.bin").is_file()
    assert not repo.storage.exists()
    assert refs(repo) == before


def test_a_missing_storage_folder_stops_a_data_upload(repo: ModelRepo) -> None:
    write_dataset(repo.root / "data", SEED_DATASET)
    shutil.rmtree(repo.storage)
    before = refs(repo)
    fails_naming_the_folder(repo, "data", "upload")
    assert refs(repo) == before
    with pytest.raises(StorageError, match="share that holds it mounted"):
        DataCheckpointsManage(repo_path=repo.root).upload_data_checkpoint()
    assert not repo.storage.exists()
    assert refs(repo) == before


def test_a_storage_path_that_is_a_file_is_named(repo: ModelRepo) -> None:
    repo.write_model()
    shutil.rmtree(repo.storage)
    repo.storage.write_bytes(b"not a folder")
    line = assert_one_error_line(run_cpv("model", "upload", cwd=repo.root, expect=None))
    assert f"The storage folder {repo.storage} is not a folder" in line
    assert repo.storage.read_bytes() == b"not a folder"


# -- item 5: storage itself confirms the objects -------------------------------------------------


def test_upload_sends_again_what_dvc_gc_removed_from_storage(repo: ModelRepo) -> None:
    a = repo.write_model(seed=1)
    run_cpv("model", "upload", cwd=repo.root)
    repo.write_model(seed=2)
    run_cpv("model", "upload", cwd=repo.root)
    dvc("gc", "-c", "-w", "-f", cwd=repo.root)  # keeps only the workspace's object
    assert not storage_object(repo.storage, a).exists()

    assert repo.write_model(seed=1) == a
    done = run_cpv("model", "upload", cwd=repo.root)
    assert "(4.0 KiB, 4.0 KiB transferred)" in done.stdout, done.stdout
    assert md5_of(storage_object(repo.storage, a)) == a
    run_cpv("model", "tag", cwd=repo.root)


def test_an_unchanged_upload_sends_a_removed_object_again(repo: ModelRepo) -> None:
    a = repo.write_model(seed=1)
    manager = ModelsCheckpointsManage(repo_path=repo.root)
    assert manager.upload(metrics={"loss": 1.0}).uploaded_bytes == 4096
    assert manager.upload(metrics={"loss": 1.0}).uploaded_bytes == 0
    delete_local_object(repo, a)

    result = manager.upload(metrics={"loss": 1.0})
    assert (result.changed, result.uploaded_bytes) == (False, 4096)
    assert md5_of(storage_object(repo.storage, a)) == a
    delete_local_object(repo, a)
    done = run_cpv("model", "upload", "--metric", "loss=1.0", cwd=repo.root)
    assert "4.0 KiB missing from storage sent again" in done.stdout, done.stdout


def delete_local_object(repo: ModelRepo, oid: str) -> None:
    path = storage_object(repo.storage, oid)
    path.chmod(0o644)
    path.unlink()


def test_tag_refuses_a_head_whose_object_is_gone(repo: ModelRepo) -> None:
    a = repo.write_model(seed=1)
    run_cpv("model", "upload", cwd=repo.root)
    delete_local_object(repo, a)
    before = refs(repo)

    line = assert_one_error_line(run_cpv("model", "tag", cwd=repo.root, expect=None))
    assert f"The model of HEAD ({a}) is not in storage" in line
    with pytest.raises(StorageError, match="not in storage"):
        ModelsCheckpointsManage(repo_path=repo.root).tag_model_checkpoint()
    assert refs(repo) == before
    assert repo.git("tag") == "" and "refs/tags" not in repo.remote_refs()

    run_cpv("model", "upload", cwd=repo.root)  # sends it again
    assert "v0.1" in run_cpv("model", "tag", cwd=repo.root).stdout


def test_a_dataset_is_tagged_only_with_every_file_in_storage(repo: ModelRepo) -> None:
    write_dataset(repo.root / "data", SEED_DATASET)
    run_cpv("data", "upload", cwd=repo.root)
    # The listing is still there; one file it names is not.
    lost = md5_of(repo.root / "data" / "train" / "labels.csv")
    delete_local_object(repo, lost)
    before = refs(repo)

    line = assert_one_error_line(run_cpv("data", "tag", cwd=repo.root, expect=None))
    assert "The data of HEAD (1 file(s) of " in line and "is not in storage" in line
    assert refs(repo) == before

    done = run_cpv("data", "upload", cwd=repo.root)
    assert "sent again" in done.stdout, done.stdout
    assert md5_of(storage_object(repo.storage, lost)) == lost
    run_cpv("data", "tag", cwd=repo.root)


# -- the same on S3 ------------------------------------------------------------------------------


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


def s3_keys(storage: S3Storage) -> set[str]:
    return set(storage.iter_oids())


def test_s3_upload_sends_again_what_dvc_gc_removed(s3_repo: tuple[ModelRepo, S3Storage]
                                                  ) -> None:
    repo, storage = s3_repo
    a = repo.write_model(seed=1)
    run_cpv("model", "upload", cwd=repo.root)
    repo.write_model(seed=2)
    run_cpv("model", "upload", cwd=repo.root)
    assert a in s3_keys(storage)
    dvc("gc", "-c", "-w", "-f", cwd=repo.root)  # stock dvc, the remote cpv named for it
    assert a not in s3_keys(storage)

    assert repo.write_model(seed=1) == a
    done = run_cpv("model", "upload", cwd=repo.root)
    assert "(4.0 KiB, 4.0 KiB transferred)" in done.stdout, done.stdout
    assert a in s3_keys(storage)
    assert storage.download(a, repo.root.parent / "back") == a


def test_s3_tag_refuses_a_head_whose_object_is_gone(s3_repo: tuple[ModelRepo, S3Storage]
                                                    ) -> None:
    repo, storage = s3_repo
    a = repo.write_model(seed=1)
    run_cpv("model", "upload", cwd=repo.root)
    storage.delete(a)
    before = refs(repo)

    line = assert_one_error_line(run_cpv("model", "tag", cwd=repo.root, expect=None))
    assert f"The model of HEAD ({a}) is not in storage" in line
    assert refs(repo) == before
    assert repo.git("tag") == "" and "refs/tags" not in repo.remote_refs()

    result = ModelsCheckpointsManage(repo_path=repo.root).upload()
    assert (result.changed, result.uploaded_bytes) == (False, 4096)
    assert a in s3_keys(storage)
    run_cpv("model", "tag", cwd=repo.root)


def test_s3_a_deleted_bucket_stops_upload_tag_and_download(
        s3_repo: tuple[ModelRepo, S3Storage], s3: SeaweedS3, tmp_path: Path) -> None:
    repo, storage = s3_repo
    repo.write_model(seed=1)
    run_cpv("model", "upload", cwd=repo.root)
    run_cpv("model", "tag", cwd=repo.root)
    repo.write_model(seed=2)
    run_cpv("model", "upload", cwd=repo.root)
    client = s3.client()
    for oid in s3_keys(storage):
        storage.delete(oid)
    client.delete_bucket(Bucket=storage.bucket)

    repo.write_model(seed=3)
    before = refs(repo)
    other = clone(repo, tmp_path / "other")
    attempts: list[tuple[list[str], Path]] = [
        (["model", "upload"], repo.root),
        (["model", "tag"], repo.root),
        (["model", "download", "v0.1", "-o", str(tmp_path / "out")], other),
    ]
    for args, cwd in attempts:
        line = assert_one_error_line(run_cpv(*args, cwd=cwd, expect=None))
        assert f"Bucket {storage.bucket} does not exist" in line, line
        assert "cpv config aws --bucket" in line
        assert s3.secret_key not in line
    assert refs(repo) == before
    assert not (tmp_path / "out" / "model.bin").exists()
    buckets: Any = client.list_buckets()["Buckets"]
    assert storage.bucket not in {b["Name"] for b in buckets}  # never created



# -- asking S3 cheaply: one HEAD signed without botocore ------------------------------------------


def test_an_unchanged_upload_and_a_tag_ask_s3_without_loading_botocore(
        s3_repo: tuple[ModelRepo, S3Storage]) -> None:
    """botocore's start-up costs more than the rest of an unchanged upload; one signed HEAD
    is all storage needs to confirm a model's object."""
    repo, storage = s3_repo
    a = repo.write_model(seed=1)
    run_cpv("model", "upload", cwd=repo.root)
    code = ("import sys; from cp_manage import ModelsCheckpointsManage as M; "
            "m = M(repo_path=sys.argv[1]); r = m.upload(metrics={'loss': 0.5}); "
            "assert r.uploaded_bytes == 0, r; t = m.tag(); "
            "assert 'botocore' not in sys.modules, 'botocore was loaded'; print(t.tag)")
    done = subprocess.run([sys.executable, "-c", code, str(repo.root)], capture_output=True,
                          text=True, timeout=TIMEOUT, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "v0.1"
    assert "v0.1" in repo.remote_refs()
    assert a in s3_keys(storage)


PREFIX = "T/m"


def quick(storage: S3Storage, oid: str, **changes: Any) -> bool | None:
    """``object_exists`` for ``oid`` of ``storage``, with some arguments changed."""
    settings: dict[str, Any] = {
        "bucket": storage.bucket, "key": f"{PREFIX}/files/md5/{oid[:2]}/{oid[2:]}",
        "endpoint_url": storage.endpoint_url, "region": None, "profile": None,
        "credentials_file": None}
    return object_exists(**{**settings, **changes})


@pytest.fixture
def s3_storage(s3: SeaweedS3, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> S3Storage:
    for name, value in s3.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    bucket = s3.create_bucket(f"cpv-{secrets.token_hex(4)}")
    return S3Storage(f"s3://{bucket}/{PREFIX}", endpoint_url=s3.endpoint_url)


def test_the_quick_head_believes_only_a_200(s3_storage: S3Storage, s3: SeaweedS3,
                                            tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    storage = s3_storage
    source = tmp_path / "f"
    source.write_bytes(b"weights")
    oid = md5_of(source)
    assert quick(storage, oid) is None  # absent: botocore is asked
    storage.upload(oid, source)
    assert quick(storage, oid) is True
    assert storage.missing([oid]) == set()

    # Keys from a credentials file and a profile, as 'cpv config aws' records them.
    credentials = s3.write_credentials_file(tmp_path / "credentials", profile="ml")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    assert quick(storage, oid, profile="ml", credentials_file=str(credentials)) is True
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    monkeypatch.setenv("AWS_PROFILE", "ml")
    assert quick(storage, oid) is True

    # Whatever it cannot vouch for goes to botocore, which answers or explains.
    wrong = s3.write_credentials_file(tmp_path / "wrong", profile="ml", secret_key="nope-1234")
    assert quick(storage, oid, profile="ml", credentials_file=str(wrong)) is None
    assert quick(storage, oid, profile="absent", credentials_file=str(credentials)) is None
    assert quick(storage, oid, bucket="no-such-bucket-cpv") is None
    closed = f"http://127.0.0.1:{free_ports(1)[0]}"
    assert quick(storage, oid, endpoint_url=closed) is None
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    assert quick(storage, oid) is None  # botocore knows proxies
