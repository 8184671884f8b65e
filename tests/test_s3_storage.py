"""S3Storage against a real S3 server (SeaweedFS on 127.0.0.1), and git over a real sshd.

Nothing is mocked: signatures, missing buckets, wrong keys and stock ``dvc pull`` all go through
the same HTTP requests as against AWS.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import os
import secrets
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from servers import SeaweedS3, SSHServer, find_sshd, free_ports

from cp_manage.backends import s3 as s3_module
from cp_manage.backends.cache import LocalCache
from cp_manage.backends.pointer import Pointer
from cp_manage.backends.s3 import S3Storage
from cp_manage.backends.storage import open_storage
from cp_manage.config import CPVConfig
from cp_manage.errors import IntegrityError, StorageError
from cp_manage.manage import handlers
from cp_manage.manage.dataset import DirHandler, listing_bytes
from cp_manage.spec import DATA

MiB = 1024 * 1024
PREFIX = "AI-Convo/faster-whisper"


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    with SeaweedS3(tmp_path_factory.mktemp("seaweed")) as server:
        yield server


@pytest.fixture(autouse=True)
def isolated_aws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No AWS setting of the machine leaks in, and nothing asks 169.254.169.254 for keys.

    (conftest gives each test its own HOME, so ``~/.aws`` is empty too.)
    """
    for name in list(os.environ):
        if name.startswith(("AWS_", "CPV_BUCKET", "CPV_STORAGE")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))


@pytest.fixture
def bucket(s3: SeaweedS3) -> str:
    return s3.create_bucket(f"cpv-{secrets.token_hex(4)}")


@pytest.fixture
def storage(s3: SeaweedS3, bucket: str, monkeypatch: pytest.MonkeyPatch) -> S3Storage:
    """Credentials through the standard AWS_* variables, as in CI jobs."""
    for name, value in s3.env().items():
        monkeypatch.setenv(name, value)
    return S3Storage(f"s3://{bucket}/{PREFIX}", endpoint_url=s3.endpoint_url)


def write_random(path: Path, size: int) -> str:
    data = os.urandom(size)
    path.write_bytes(data)
    return hashlib.md5(data).hexdigest()


def assert_no_secret(s3: SeaweedS3, text: str) -> None:
    assert s3.secret_key not in text
    assert s3.access_key not in text


# -- the storage protocol ----------------------------------------------------------------------


@pytest.mark.parametrize(("size", "part"), [
    (3 * MiB + 17, None),  # one streamed GET
    (5 * MiB + 123, 1 * MiB),  # ranged GETs in parallel, last part short
    (0, None),
])
def test_round_trip_checks_md5(storage: S3Storage, tmp_path: Path, size: int, part: int | None,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    if part:
        monkeypatch.setattr(s3_module, "DOWNLOAD_PART", part)
    md5 = write_random(tmp_path / "model.bin", size)
    uploads: list[tuple[int, int]] = []
    storage.upload(md5, tmp_path / "model.bin", progress=lambda d, t: uploads.append((d, t)))
    assert uploads[-1] == (size, size)

    downloads: list[tuple[int, int]] = []
    target = tmp_path / "out.bin"
    got = storage.download(md5, target, progress=lambda d, t: downloads.append((d, t)))
    assert got == md5
    assert target.read_bytes() == (tmp_path / "model.bin").read_bytes()
    assert downloads[-1] == (size, size)
    assert [d for d, _ in downloads] == sorted(d for d, _ in downloads)


@pytest.mark.parametrize(("window", "workers", "streams"), [(1, 3, 1), (2, 8, 2), (8, 2, 1)])
def test_ranged_download_any_window_and_stream_count(
        storage: S3Storage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        window: int, workers: int, streams: int) -> None:
    """Parts start in order within the window, however few streams or slots there are."""
    for name, value in {"DOWNLOAD_PART": MiB, "READ_CHUNK": 256 * 1024,
                        "DOWNLOAD_WINDOW": window, "DOWNLOAD_WORKERS": workers,
                        "DOWNLOAD_START_STREAMS": streams}.items():
        monkeypatch.setattr(s3_module, name, value)
    md5 = write_random(tmp_path / "model.bin", 9 * MiB + 5)
    storage.upload(md5, tmp_path / "model.bin")
    seen: list[int] = []
    assert storage.download(md5, tmp_path / "out", progress=lambda d, t: seen.append(d)) == md5
    assert (tmp_path / "out").read_bytes() == (tmp_path / "model.bin").read_bytes()
    assert seen == sorted(seen) and seen[-1] == 9 * MiB + 5


@pytest.mark.parametrize("direct", [True, False])
def test_ranged_download_writes_around_the_page_cache_or_the_ordinary_way(
        storage: S3Storage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        direct: bool) -> None:
    """O_DIRECT where the filesystem has it (ext4 here); ordinary writes where it has not."""
    monkeypatch.setattr(s3_module, "DOWNLOAD_PART", MiB)
    monkeypatch.setattr(s3_module, "READ_CHUNK", 256 * 1024)
    size = 5 * MiB + 4096 * 3 + 17  # whole blocks, then a tail of 17 bytes
    md5 = write_random(tmp_path / "model.bin", size)
    storage.upload(md5, tmp_path / "model.bin")
    opened: list[int | None] = []
    real_open = s3_module._open_direct

    def open_direct(target: Path) -> int | None:
        opened.append(real_open(target) if direct else None)
        return opened[-1]

    monkeypatch.setattr(s3_module, "_open_direct", open_direct)
    assert storage.download(md5, tmp_path / "out") == md5
    assert (tmp_path / "out").read_bytes() == (tmp_path / "model.bin").read_bytes()
    assert (opened[0] is not None) == direct


@pytest.mark.parametrize("innermost", [True, False])
def test_ranged_download_reads_from_the_socket_into_its_buffers_or_copies(
        storage: S3Storage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        innermost: bool) -> None:
    """http.client's own readinto where the layers are the expected ones; else read + copy."""
    monkeypatch.setattr(s3_module, "DOWNLOAD_PART", MiB)
    monkeypatch.setattr(s3_module, "READ_CHUNK", 256 * 1024)
    size = 6 * MiB + 4096 + 17
    md5 = write_random(tmp_path / "model.bin", size)
    storage.upload(md5, tmp_path / "model.bin")
    readers: list[object] = []
    real_receiver = s3_module._receiver

    def receiver(body: object, *, innermost: bool = innermost) -> object:
        read_into, done = real_receiver(body, innermost=innermost)
        readers.append(read_into)
        return read_into, done

    monkeypatch.setattr(s3_module, "_receiver", receiver)
    assert storage.download(md5, tmp_path / "out") == md5
    assert (tmp_path / "out").read_bytes() == (tmp_path / "model.bin").read_bytes()
    assert len(readers) == 7
    from_socket = [getattr(r, "__self__", None).__class__.__name__ for r in readers]
    assert from_socket == (["HTTPResponse"] * 7 if innermost else ["NoneType"] * 7)


def test_bodies_carry_a_checksum_instead_of_a_signed_payload(
        storage: S3Storage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Over plain http too: the server checks each body, a single PUT against the md5 the
    object is named by (Content-MD5), each part of a multipart upload against its CRC32; no
    SHA-256 pass is spent."""
    monkeypatch.setattr(s3_module, "UPLOAD_PART", 5 * MiB)  # S3's smallest part
    monkeypatch.setattr(s3_module, "SMALL_OBJECT", 5 * MiB)
    sent: list[tuple[str, dict[str, str]]] = []

    def record(request: object, **_: object) -> None:
        headers = {k.lower(): v.decode() if isinstance(v, bytes) else v
                   for k, v in request.headers.items()}  # type: ignore[attr-defined]
        sent.append((request.method, headers))  # type: ignore[attr-defined]

    storage.client.meta.events.register("before-send.s3.*", record)
    small = write_random(tmp_path / "small", 1000)
    large = write_random(tmp_path / "large", 12 * MiB)
    storage.upload(small, tmp_path / "small")
    storage.upload(large, tmp_path / "large")

    bodies = [headers for method, headers in sent if method == "PUT"]
    assert len(bodies) == 1 + 3  # one PUT, then three parts
    assert all(h["x-amz-content-sha256"] == "UNSIGNED-PAYLOAD" for h in bodies)
    assert base64.b64decode(bodies[0]["content-md5"]).hex() == small
    assert all(h.get("x-amz-checksum-crc32") for h in bodies[1:])
    assert storage.download(large, tmp_path / "back") == large


@pytest.mark.parametrize(("direct", "buffered"), [(True, True), (False, True), (False, False)])
def test_parts_are_read_around_the_page_cache_or_the_ordinary_way(
        storage: S3Storage, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        direct: bool, buffered: bool) -> None:
    """O_DIRECT where the filesystem has it (ext4 here); parts too large to hold in memory
    go straight from the file. The stored bytes are the same."""
    monkeypatch.setattr(s3_module, "UPLOAD_PART", 5 * MiB)
    monkeypatch.setattr(s3_module, "SMALL_OBJECT", 5 * MiB)
    monkeypatch.setattr(s3_module, "UPLOAD_MEMORY", 20 * MiB if buffered else 10 * MiB)
    size = 3 * 5 * MiB + 4096 + 17  # whole parts, a whole block, then 17 bytes
    md5 = write_random(tmp_path / "model.bin", size)
    opened: list[int | None] = []
    real_open = s3_module.open_direct

    def open_direct(path: Path | int, flags: int) -> int | None:
        opened.append(real_open(path, flags) if direct else None)
        return opened[-1]

    monkeypatch.setattr(s3_module, "open_direct", open_direct)
    progress: list[tuple[int, int]] = []
    storage.upload(md5, tmp_path / "model.bin", progress=lambda d, t: progress.append((d, t)))
    assert (opened[0] is not None) == direct
    assert progress[-1] == (size, size) and progress == sorted(progress)
    stored = storage.client.get_object(Bucket=bucket, Key=f"{PREFIX}/files/md5/{md5[:2]}/"
                                       f"{md5[2:]}")["Body"].read()
    assert hashlib.md5(stored).hexdigest() == md5


def test_a_refused_direct_read_falls_back_to_ordinary_reads(
        storage: S3Storage, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A filesystem that accepts O_DIRECT at open but refuses the read (EINVAL)."""
    monkeypatch.setattr(s3_module, "UPLOAD_PART", 5 * MiB)
    monkeypatch.setattr(s3_module, "SMALL_OBJECT", 5 * MiB)
    md5 = write_random(tmp_path / "model.bin", 3 * 5 * MiB + 17)
    direct_fds: list[int] = []
    real_open, real_preadv = s3_module.open_direct, os.preadv

    def open_direct(path: Path | int, flags: int) -> int | None:
        fd = real_open(path, flags)
        assert fd is not None
        direct_fds.append(fd)
        return fd

    def preadv(fd: int, buffers: list[memoryview], offset: int) -> int:
        if fd in direct_fds:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_preadv(fd, buffers, offset)

    monkeypatch.setattr(s3_module, "open_direct", open_direct)
    monkeypatch.setattr(os, "preadv", preadv)
    storage.upload(md5, tmp_path / "model.bin")
    assert direct_fds
    stored = storage.client.get_object(Bucket=bucket, Key=f"{PREFIX}/files/md5/{md5[:2]}/"
                                       f"{md5[2:]}")["Body"].read()
    assert hashlib.md5(stored).hexdigest() == md5


def test_a_file_beyond_the_part_limit_goes_up_in_larger_parts(
        storage: S3Storage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(s3_module, "UPLOAD_PART", 5 * MiB)
    monkeypatch.setattr(s3_module, "SMALL_OBJECT", 5 * MiB)
    monkeypatch.setattr(s3_module, "MAX_PARTS", 2)
    sizes: list[int] = []

    def record(request: object, **_: object) -> None:
        if request.method == "PUT":  # type: ignore[attr-defined]
            sizes.append(int(request.headers["Content-Length"]))  # type: ignore[attr-defined]

    storage.client.meta.events.register("before-send.s3.UploadPart", record)
    md5 = write_random(tmp_path / "model.bin", 12 * MiB)
    storage.upload(md5, tmp_path / "model.bin")
    assert sorted(sizes) == [2 * MiB, 10 * MiB]
    assert storage.download(md5, tmp_path / "back") == md5


def test_a_refused_part_fails_the_upload_and_the_rerun_sends_only_that_part(
        storage: S3Storage, bucket: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The server finds one part's bytes do not match their CRC32: no object. The parts it
    stored stay, checked and reused by the next upload, which sends only the refused one and
    leaves no unfinished upload behind."""
    monkeypatch.setattr(s3_module, "UPLOAD_PART", 5 * MiB)
    monkeypatch.setattr(s3_module, "SMALL_OBJECT", 5 * MiB)
    sent: list[int] = []
    corrupt = True

    def corrupt_part_three(request: Any, **_: object) -> None:
        sent.append(int(request.url.split("partNumber=")[1].split("&")[0]))
        if corrupt and "partNumber=3" in request.url:
            request.body = bytes(len(request.body))

    storage.client.meta.events.register("before-send.s3.UploadPart", corrupt_part_three)
    md5 = write_random(tmp_path / "model.bin", 4 * 5 * MiB)
    with pytest.raises(StorageError, match="Cannot upload object"):
        storage.upload(md5, tmp_path / "model.bin")
    assert storage.missing([md5]) == {md5}
    pending = [u for u in storage.client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
               if md5[2:] in u["Key"]]
    assert len(pending) == 1
    stored = storage.client.list_parts(Bucket=bucket, Key=pending[0]["Key"],
                                       UploadId=pending[0]["UploadId"])["Parts"]
    assert 3 not in {part["PartNumber"] for part in stored}

    corrupt, sent[:] = False, []
    resumed: list[tuple[int, int]] = []

    class Progress:
        def __call__(self, done: int, total: int) -> None:
            pass

        def resumed(self, done: int, total: int) -> None:
            resumed.append((done, total))

    kept = storage.upload(md5, tmp_path / "model.bin", progress=Progress())
    assert sorted(sent) == sorted({1, 2, 3, 4} - {p["PartNumber"] for p in stored})
    assert kept == resumed[0][0] == sum(part["Size"] for part in stored)
    assert resumed == [(kept, 20 * MiB)]
    assert storage.download(md5, tmp_path / "back") == md5
    assert [u for u in storage.client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
            if md5[2:] in u["Key"]] == []


def test_object_lands_in_dvc_layout(storage: S3Storage, s3: SeaweedS3, bucket: str,
                                    tmp_path: Path) -> None:
    md5 = write_random(tmp_path / "f", 1000)
    storage.upload(md5, tmp_path / "f")
    storage.upload(md5 + ".dir", tmp_path / "f")
    keys = {o["Key"] for o in s3.client().list_objects_v2(Bucket=bucket)["Contents"]}
    assert keys == {f"{PREFIX}/files/md5/{md5[:2]}/{md5[2:]}",
                    f"{PREFIX}/files/md5/{md5[:2]}/{md5[2:]}.dir"}


def test_missing_and_iter_oids(storage: S3Storage, s3: SeaweedS3, bucket: str,
                               tmp_path: Path) -> None:
    stored = []
    for i in range(5):
        stored.append(write_random(tmp_path / f"f{i}", 100 + i))
        storage.upload(stored[-1], tmp_path / f"f{i}")
    absent = [hashlib.md5(str(i).encode()).hexdigest() for i in range(20)]
    # Objects outside the layout or under another prefix are not ours.
    s3.client().put_object(Bucket=bucket, Key=f"{PREFIX}/files/md5/README", Body=b"x")
    s3.client().put_object(Bucket=bucket, Key=f"other/files/md5/{absent[0][:2]}/{absent[0][2:]}",
                           Body=b"x")

    assert storage.missing(stored + absent) == set(absent)
    assert storage.missing([stored[0]]) == set()
    assert storage.missing([absent[0]]) == {absent[0]}
    assert storage.missing([]) == set()
    assert sorted(storage.iter_oids()) == sorted(stored)

    storage.delete(stored[0])
    assert storage.missing(stored) == {stored[0]}


def test_iter_oids_paginates(storage: S3Storage, s3: SeaweedS3, bucket: str) -> None:
    client = s3.client()
    oids = [hashlib.md5(str(i).encode()).hexdigest() for i in range(1005)]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda o: client.put_object(
            Bucket=bucket, Key=f"{PREFIX}/files/md5/{o[:2]}/{o[2:]}", Body=b""), oids))
    assert sorted(storage.iter_oids()) == sorted(oids)


def test_ensure_location_accepts_existing_bucket_without_prefix(
        storage: S3Storage, s3: SeaweedS3, bucket: str, tmp_path: Path) -> None:
    storage.ensure_location()
    bare = S3Storage(f"s3://{bucket}", endpoint_url=s3.endpoint_url)
    bare.ensure_location()
    md5 = write_random(tmp_path / "f", 10)
    bare.upload(md5, tmp_path / "f")
    assert s3.client().head_object(Bucket=bucket, Key=f"files/md5/{md5[:2]}/{md5[2:]}")
    assert list(bare.iter_oids()) == [md5]


def test_settings_from_cpv_config_profile_and_credentials_file(
        s3: SeaweedS3, bucket: str, tmp_path: Path) -> None:
    credentials = s3.write_credentials_file(tmp_path / "aws" / "credentials", profile="team")
    config = CPVConfig(tmp_path / "cpv-home")
    config.update({"endpoint_url": s3.endpoint_url, "region": s3.region, "aws_profile": "team",
                   "aws_credential_path": str(credentials)})
    storage = open_storage(f"s3://{bucket}/{PREFIX}", config=config)
    assert isinstance(storage, S3Storage)
    storage.ensure_location()
    md5 = write_random(tmp_path / "f", 4096)
    storage.upload(md5, tmp_path / "f")
    assert storage.download(md5, tmp_path / "g") == md5


# -- many small objects: one request each, every byte still checked -----------------------------


def sent_requests(storage: S3Storage) -> list[tuple[str, dict[str, str]]]:
    """Every request ``storage`` sends from now on: (method, headers), in order."""
    seen: list[tuple[str, dict[str, str]]] = []

    def record(request: Any, **_: object) -> None:
        headers = {k: v.decode() if isinstance(v, bytes) else str(v)
                   for k, v in request.headers.items()}
        seen.append((request.method, headers))

    storage.client.meta.events.register("before-send.s3", record)
    return seen


def test_a_small_object_goes_up_in_one_put_checked_by_the_server(
        storage: S3Storage, tmp_path: Path) -> None:
    """No ``Expect: 100-continue`` round trip; the md5 it is named by goes as Content-MD5."""
    md5 = write_random(tmp_path / "f", 20 * 1024)
    seen = sent_requests(storage)
    storage.upload(md5, tmp_path / "f")
    assert [method for method, _ in seen] == ["PUT"]
    headers = {k.lower(): v for k, v in seen[0][1].items()}
    assert "expect" not in headers
    assert base64.b64decode(headers["content-md5"]).hex() == md5
    # Bytes that do not hash to their name are refused by the server: nothing is stored.
    wrong = hashlib.md5(b"something else").hexdigest()
    with pytest.raises(StorageError, match="Cannot upload object"):
        storage.upload(wrong, tmp_path / "f")
    assert storage.missing([wrong]) == {wrong}


def test_a_small_object_comes_down_in_one_get(storage: S3Storage, tmp_path: Path) -> None:
    for size in (0, 20 * 1024):
        md5 = write_random(tmp_path / f"f{size}", size)
        storage.upload(md5, tmp_path / f"f{size}")
        seen = sent_requests(storage)
        assert storage.download(md5, tmp_path / f"back{size}") == md5
        assert [method for method, _ in seen] == ["GET"], "no HEAD before the GET"
        assert (tmp_path / f"back{size}").read_bytes() == (tmp_path / f"f{size}").read_bytes()


def test_a_large_object_of_unknown_size_comes_in_ranges(
        storage: S3Storage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first GET finds the object large: it is dropped, and the ranged download runs."""
    monkeypatch.setattr(s3_module, "DOWNLOAD_PART", MiB)
    md5 = write_random(tmp_path / "f", 5 * MiB + 3)
    storage.upload(md5, tmp_path / "f")
    seen = sent_requests(storage)
    assert storage.download(md5, tmp_path / "back") == md5
    ranges = [headers.get("Range") for method, headers in seen if method == "GET"]
    assert ranges[0] is None and len(ranges) == 1 + 6 and all(ranges[1:])
    # A caller that knows the size (a pointer records it) measures the object instead.
    seen.clear()
    assert storage.download(md5, tmp_path / "again", size=5 * MiB + 3) == md5
    assert seen[0][0] == "HEAD" and len(seen) == 1 + 6


def test_a_folder_is_fetched_one_get_per_file_and_every_file_is_checked(
        storage: S3Storage, s3: SeaweedS3, bucket: str, tmp_path: Path) -> None:
    """``fetch_tree`` against SeaweedFS: the bytes, one GET per file and nothing else; then a
    corrupt object and a missing one are each refused, and nothing of the folder appears."""
    files = {f"train/{n:03}.bin": os.urandom(100 + n) for n in range(40)}
    files.update({"empty": b"", "train/sub dir/caf\u00e9.txt": b"unicode\n",
                  "copy-of-000.bin": files["train/000.bin"]})
    md5s = {relpath: hashlib.md5(content).hexdigest() for relpath, content in files.items()}
    for relpath, content in files.items():
        (tmp_path / "src").mkdir(exist_ok=True)
        (tmp_path / "src" / "f").write_bytes(content)
        storage.upload(md5s[relpath], tmp_path / "src" / "f")
    listing = listing_bytes(md5s)
    (tmp_path / "src" / "listing").write_bytes(listing)
    dir_oid = hashlib.md5(listing).hexdigest() + ".dir"
    storage.upload(dir_oid, tmp_path / "src" / "listing")
    pointer = Pointer(path="data", md5=dir_oid.removesuffix(".dir"),
                      size=sum(len(c) for c in files.values()), nfiles=len(files))

    @dataclass
    class Source:
        cache: LocalCache
        storage: S3Storage

    source = Source(LocalCache(tmp_path / "cache"), storage)
    seen = sent_requests(storage)
    progress: list[int] = []
    downloads = tmp_path / "downloads"
    DirHandler(DATA).materialize(source, pointer, downloads / "out",
                                 progress=lambda done, _total: progress.append(done))
    assert {str(p.relative_to(downloads / "out")): p.read_bytes()
            for p in (downloads / "out").rglob("*") if p.is_file()} == files
    assert [method for method, _ in seen] == ["GET"] * (1 + len(files))  # listing + files
    assert progress[-1] == pointer.size
    # A pointer records the folder's total size, not its listing's: no HEAD for a big folder.
    seen.clear()
    big = Pointer(path="data", md5=pointer.md5, size=10 * 1024 * MiB, nfiles=len(files))
    DirHandler(DATA).materialize(Source(LocalCache(tmp_path / "cache2"), storage), big,
                                   downloads / "big", progress=None)
    assert [method for method, _ in seen] == ["GET"] * (1 + len(files))
    shutil.rmtree(downloads / "big")

    victim = md5s["train/007.bin"]
    key = f"{PREFIX}/files/md5/{victim[:2]}/{victim[2:]}"
    s3.client().put_object(Bucket=bucket, Key=key, Body=b"not the bytes it is named by")
    with pytest.raises(IntegrityError, match=f"{victim} is corrupt"):
        DirHandler(DATA).materialize(source, pointer, downloads / "bad", progress=None)
    storage.delete(victim)
    with pytest.raises(StorageError, match=f"{victim} is missing"):
        DirHandler(DATA).materialize(source, pointer, downloads / "bad", progress=None)
    assert os.listdir(downloads) == ["out"], "no half folder left"


def test_large_objects_share_one_memory_budget_whatever_the_threads(
        storage: S3Storage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A folder of shards sends them in turn (each in parallel parts) and fetches several at
    once, sharing one window of parts: its memory is about that of one shard's buffers, not
    of one per thread."""
    monkeypatch.setattr(s3_module, "UPLOAD_PART", 5 * MiB)  # S3's smallest part
    monkeypatch.setattr(s3_module, "SMALL_OBJECT", 5 * MiB)
    monkeypatch.setattr(s3_module, "DOWNLOAD_PART", MiB)
    active, peak = [0], [0]
    lock = threading.Lock()
    together = threading.Barrier(s3_module.RANGED_AT_ONCE, timeout=60)

    def counted(kind: type[Any], *, meet: bool = False) -> None:
        real = kind.run

        def run(self: Any) -> Any:
            with lock:
                active[0] += 1
                peak[0] = max(peak[0], active[0])
            try:
                if meet:
                    together.wait()  # fails unless that many downloads may run at once
                return real(self)
            finally:
                with lock:
                    active[0] -= 1

        monkeypatch.setattr(kind, "run", run)

    held, most = [0], [0]
    real_take, real_give_back = s3_module.BufferPool.take, s3_module.BufferPool.give_back

    def take(self: Any) -> Any:
        if self.size == MiB:  # a download's part buffer
            with lock:
                held[0] += 1
                most[0] = max(most[0], held[0])
        return real_take(self)

    def give_back(self: Any, buffer: Any) -> None:
        if self.size == MiB:
            with lock:
                held[0] -= 1
        real_give_back(self, buffer)

    monkeypatch.setattr(s3_module.BufferPool, "take", take)
    monkeypatch.setattr(s3_module.BufferPool, "give_back", give_back)
    counted(s3_module._PartedUpload)
    shards = [write_random(tmp_path / f"shard{n}", 12 * MiB) for n in range(4)]
    handlers.run_parallel(lambda n: storage.upload(shards[n], tmp_path / f"shard{n}"),
                          range(4))
    assert peak == [1]

    counted(s3_module._RangedDownload, meet=True)
    peak[0] = 0
    got = handlers.run_parallel(lambda n: storage.download(shards[n], tmp_path / f"back{n}"),
                                range(4))
    assert got == shards and peak == [s3_module.RANGED_AT_ONCE]
    for n in range(4):
        assert (tmp_path / f"back{n}").read_bytes() == (tmp_path / f"shard{n}").read_bytes()
    # Each download's share of the window is set as its parts start: one that started alone
    # may finish the parts it began before it holds no more than its share.
    assert 0 < most[0] <= 2 * s3_module.DOWNLOAD_WINDOW


def test_the_connection_pool_serves_every_transfer_thread(storage: S3Storage) -> None:
    assert storage.client.meta.config.max_pool_connections >= handlers.WORKERS


# -- failures: each a StorageError that says what to do, and never shows a key -----------------


def test_missing_bucket(s3: SeaweedS3, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name, value in s3.env().items():
        monkeypatch.setenv(name, value)
    storage = S3Storage("s3://no-such-bucket-cpv/x", endpoint_url=s3.endpoint_url)
    with pytest.raises(StorageError) as err:
        storage.ensure_location()
    assert "no-such-bucket-cpv does not exist" in err.value.message
    assert "cpv config aws --bucket" in err.value.hint
    md5 = write_random(tmp_path / "f", 10)
    with pytest.raises(StorageError, match="does not exist"):
        storage.upload(md5, tmp_path / "f")
    assert_no_secret(s3, str(err.value))


@pytest.mark.parametrize("wrong", ["secret", "access-key"])
def test_wrong_credentials_are_refused_without_leaking_them(
        s3: SeaweedS3, bucket: str, tmp_path: Path, wrong: str) -> None:
    credentials = tmp_path / "credentials"
    if wrong == "secret":
        s3.write_credentials_file(credentials, profile="ml", secret_key="not-the-secret-1234")
    else:
        credentials.write_text("[ml]\naws_access_key_id = AKIAIOSFODNN7EXAMPLE\n"
                               f"aws_secret_access_key = {s3.secret_key}\n")
    storage = S3Storage(f"s3://{bucket}/{PREFIX}", endpoint_url=s3.endpoint_url, profile="ml",
                        credentials_file=str(credentials))
    md5 = write_random(tmp_path / "f", 10)
    s3.client().put_object(Bucket=bucket, Key=f"{PREFIX}/files/md5/{md5[:2]}/{md5[2:]}",
                           Body=b"0123456789")
    attempts = [storage.ensure_location, lambda: storage.upload(md5, tmp_path / "f"),
                lambda: storage.download(md5, tmp_path / "out"), lambda: storage.missing([md5]),
                lambda: list(storage.iter_oids())]
    for attempt in attempts:
        with pytest.raises(StorageError) as err:
            attempt()
        text = f"{err.value} {err.value!r} {storage!r}"
        assert "denied" in err.value.message.lower()
        assert "profile 'ml'" in err.value.hint and str(credentials) in err.value.hint
        assert_no_secret(s3, text)
        assert "not-the-secret-1234" not in text and "AKIAIOSFODNN7EXAMPLE" not in text
    assert not (tmp_path / "out").exists()


def test_unknown_profile(s3: SeaweedS3, bucket: str, tmp_path: Path) -> None:
    credentials = s3.write_credentials_file(tmp_path / "credentials", profile="ml")
    storage = S3Storage(f"s3://{bucket}", endpoint_url=s3.endpoint_url, profile="nope",
                        credentials_file=str(credentials))
    with pytest.raises(StorageError, match="profile 'nope'"):
        storage.ensure_location()


def test_unreachable_endpoint_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    endpoint = f"http://127.0.0.1:{free_ports(1)[0]}"
    with pytest.raises(StorageError) as err:
        S3Storage("s3://bucket/x", endpoint_url=endpoint).ensure_location()
    assert endpoint in err.value.message
    assert "endpoint" in err.value.hint.lower()


def test_download_of_missing_object_leaves_no_file(storage: S3Storage, tmp_path: Path) -> None:
    oid = hashlib.md5(b"never uploaded").hexdigest()
    target = tmp_path / "model.bin"
    with pytest.raises(StorageError) as err:
        storage.download(oid, target)
    assert oid in err.value.message and storage.url in err.value.message
    assert "cpv doctor --repair" in err.value.hint
    assert not target.exists()


def test_download_never_overwrites(storage: S3Storage, tmp_path: Path) -> None:
    md5 = write_random(tmp_path / "f", 10)
    storage.upload(md5, tmp_path / "f")
    target = tmp_path / "mine.bin"
    target.write_bytes(b"user data")
    with pytest.raises(StorageError):
        storage.download(md5, target)
    assert target.read_bytes() == b"user data"


def test_failed_ranged_download_removes_partial_file(
        storage: S3Storage, s3: SeaweedS3, bucket: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    md5 = write_random(tmp_path / "f", 4 * MiB)
    storage.upload(md5, tmp_path / "f")
    monkeypatch.setattr(s3_module, "DOWNLOAD_PART", MiB)
    real_fetch = s3_module._RangedDownload._fetch

    def fetch_then_lose_object(self: s3_module._RangedDownload, index: int) -> None:
        if index == 2:  # the object disappears mid-download
            storage.delete(md5)
        real_fetch(self, index)

    monkeypatch.setattr(s3_module._RangedDownload, "_fetch", fetch_then_lose_object)
    monkeypatch.setattr(s3_module, "DOWNLOAD_WORKERS", 1)
    with pytest.raises(StorageError, match="missing"):
        storage.download(md5, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_import_loads_no_aws_library_and_a_transfer_never_boto3(
        storage: S3Storage, tmp_path: Path) -> None:
    """botocore loads on first use; boto3 (its resource layer, s3transfer) never."""
    code = ("import sys, cp_manage.backends.s3; "
            "assert not {'boto3', 'botocore', 's3transfer'} & set(sys.modules), sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60,
                   env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    code = ("import sys, hashlib, pathlib, os; from cp_manage.backends.s3 import S3Storage; "
            f"s = S3Storage({storage.url!r}, endpoint_url={storage.endpoint_url!r}); "
            "p = pathlib.Path(sys.argv[1]); p.write_bytes(os.urandom(20 << 20)); "
            "oid = hashlib.md5(p.read_bytes()).hexdigest(); s.upload(oid, p); "
            "assert s.download(oid, p.with_name('back')) == oid; "
            "assert not {'boto3', 's3transfer'} & set(sys.modules), sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "f")], check=True, timeout=120,
                   env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})


# -- interoperability with stock DVC --------------------------------------------------------------

GIT_IDENTITY = {"GIT_AUTHOR_NAME": "cpv test", "GIT_AUTHOR_EMAIL": "test@example.com",
                "GIT_COMMITTER_NAME": "cpv test", "GIT_COMMITTER_EMAIL": "test@example.com"}


def run(args: list[str], cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, f"{args} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_stock_dvc_pulls_what_we_wrote_and_we_read_what_it_pushed(
        storage: S3Storage, s3: SeaweedS3, bucket: str, tmp_path: Path) -> None:
    size = 2 * MiB + 5
    md5 = write_random(tmp_path / "model.bin", size)
    storage.upload(md5, tmp_path / "model.bin")

    repo = tmp_path / "repo"
    repo.mkdir()
    env = {**os.environ, **s3.env(), **GIT_IDENTITY, "DVC_NO_ANALYTICS": "1"}
    dvc = [sys.executable, "-m", "dvc"]
    run(["git", "init", "-q"], repo, env)
    run([*dvc, "init", "-q"], repo, env)
    run([*dvc, "config", "core.check_update", "false"], repo, env)
    run([*dvc, "remote", "add", "-d", "storage", f"s3://{bucket}/{PREFIX}"], repo, env)
    run([*dvc, "remote", "modify", "storage", "endpointurl", s3.endpoint_url], repo, env)
    (repo / "model.bin.dvc").write_text(
        f"outs:\n- md5: {md5}\n  size: {size}\n  hash: md5\n  path: model.bin\n")
    run([*dvc, "pull", "-q"], repo, env)
    assert (repo / "model.bin").read_bytes() == (tmp_path / "model.bin").read_bytes()

    data = repo / "data"
    data.mkdir()
    (data / "a.txt").write_text("alpha\n")
    (data / "b.txt").write_text("beta\n")
    run([*dvc, "add", "-q", "data"], repo, env)
    run([*dvc, "push", "-q"], repo, env)
    pushed = set(storage.iter_oids())
    dir_oid = next(oid for oid in pushed if oid.endswith(".dir"))
    listing = tmp_path / "listing.json"
    assert storage.download(dir_oid, listing) == dir_oid.removesuffix(".dir")
    assert "a.txt" in listing.read_text()
    file_oid = hashlib.md5(b"alpha\n").hexdigest()
    assert file_oid in pushed
    assert storage.download(file_oid, tmp_path / "a.txt") == file_oid


def test_folder_checkpoint_on_s3_stores_only_what_changed_and_dvc_pulls_it(
        s3: SeaweedS3, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from artifact_helpers import SHARDS, file_bytes, write_hf_folder

    from cp_manage import ModelsCheckpointsManage

    for name, value in s3.env().items():
        monkeypatch.setenv(name, value)
    CPVConfig().update({"endpoint_url": s3.endpoint_url, "region": s3.region})
    root = tmp_path / "bert-large"
    manager = ModelsCheckpointsManage(team_name="AI-Convo", model_name="bert-large",
                                      repo_path=root)
    manager.import_model_init(artifact="checkpoint/", storage_url=f"s3://{bucket}/{PREFIX}")
    storage = S3Storage(f"s3://{bucket}/{PREFIX}", endpoint_url=s3.endpoint_url)
    source = write_hf_folder(tmp_path / "run" / "ckpt")
    manager.upload(source)
    manager.tag_model_checkpoint()
    first = set(storage.iter_oids())
    assert len(first) == 11  # 10 distinct files (a link repeats config.json) + the listing

    (source / SHARDS[3]).write_bytes(b"fine-tuned" * 999)
    (source / "config.json").write_text('{"model_type": "bert", "tuned": true}')
    second = manager.upload(source)
    added = set(storage.iter_oids()) - first
    assert added == {hashlib.md5((source / SHARDS[3]).read_bytes()).hexdigest(),
                     hashlib.md5((source / "config.json").read_bytes()).hexdigest(),
                     f"{second.md5}.dir"}
    assert second.uploaded_bytes < 2 * 9990 + 1000

    clone = tmp_path / "clone"
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    run(["git", "clone", "-q", str(root / ".git"), str(clone)], tmp_path, env)
    run([sys.executable, "-m", "dvc", "pull", "-q"], clone, env)
    assert file_bytes(clone / "checkpoint") == file_bytes(source)


# -- git over ssh ------------------------------------------------------------------------------


@pytest.mark.skipif(find_sshd() is None, reason="sshd missing: apt-get install openssh-server")
def test_git_clone_and_push_over_ssh(tmp_path: Path) -> None:
    env = {**os.environ, **GIT_IDENTITY}
    bare = tmp_path / "team" / "model.git"
    bare.parent.mkdir()
    run(["git", "init", "-q", "--bare", str(bare)], tmp_path, env)
    with SSHServer(tmp_path / "sshd") as ssh:
        env["GIT_SSH_COMMAND"] = ssh.ssh_command
        run(["git", "clone", "-q", ssh.git_url(bare), "work"], tmp_path, env)
        work = tmp_path / "work"
        (work / "metrics.log").write_text('{"loss": 0.1}\n')
        run(["git", "add", "metrics.log"], work, env)
        run(["git", "commit", "-q", "-m", "first"], work, env)
        run(["git", "push", "-q", "origin", "HEAD:refs/heads/main"], work, env)
        # core.sshCommand is the other way git (and so cpv) reaches the host.
        del env["GIT_SSH_COMMAND"]
        run(["git", "-c", f"core.sshCommand={ssh.ssh_command}", "clone", "-q", "-b", "main",
             ssh.git_url(bare), "again"], tmp_path, env)
        assert (tmp_path / "again" / "metrics.log").read_text() == '{"loss": 0.1}\n'
        port = ssh.port
    assert run(["git", "log", "--format=%s", "main"], bare, env).strip() == "first"
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass


def test_consecutive_multipart_uploads_share_their_part_buffers(
        storage: S3Storage, bucket: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A folder's shards go one after another: the second maps no buffers of its own, and the
    bytes stored are each file's."""
    monkeypatch.setattr(s3_module, "UPLOAD_PART", 5 * MiB)
    monkeypatch.setattr(s3_module, "SMALL_OBJECT", 5 * MiB)
    made: list[int] = []
    real_pool = s3_module.BufferPool

    def pool(size: int) -> Any:
        made.append(size)
        return real_pool(size)

    monkeypatch.setattr(s3_module, "BufferPool", pool)
    md5s = [write_random(tmp_path / f"shard-{n}", 2 * 5 * MiB + 17) for n in range(2)]
    for n, md5 in enumerate(md5s):
        storage.upload(md5, tmp_path / f"shard-{n}")
    assert made == [5 * MiB]
    for md5 in md5s:
        stored = storage.client.get_object(Bucket=bucket, Key=f"{PREFIX}/files/md5/{md5[:2]}/"
                                           f"{md5[2:]}")["Body"].read()
        assert hashlib.md5(stored).hexdigest() == md5
