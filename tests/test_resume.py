"""Killed in the middle of a transfer, a rerun continues it: real ``cpv`` processes, stopped by a
real SIGKILL, SIGTERM or SIGINT once storage (or the download's partial file) holds part of the
bytes, on SeaweedFS and on a local storage folder.

Each test checks what storage held after the kill (multipart parts, a partial file, no object),
that the rerun sent or received only what was missing (the ``resuming:`` line and the bytes the
summary says were transferred, against what storage held), that the final bytes are right, and
that nothing is left: no unfinished upload, no partial file. ``CPV_TEST_PART_SIZE`` cuts the
transfers into parts of a few MiB and ``CPV_TEST_PACE`` slows each part down, so that the kill
lands half-way (see cp_manage/faults.py).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from helpers import CPV, TIMEOUT, ModelRepo, md5_of, run_cpv, storage_object, write_random
from servers import SeaweedS3

from cp_manage.cli.output import human_size

MiB = 1024 * 1024
S3_PART = 5 * MiB  # S3's smallest part (SeaweedFS refuses smaller ones at completion)
SIGNALS = [signal.SIGKILL, signal.SIGTERM, signal.SIGINT]
EXIT = {signal.SIGKILL: -signal.SIGKILL, signal.SIGTERM: 143, signal.SIGINT: 130}


# -- running cpv and stopping it half-way --------------------------------------------------------


def start(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([*CPV, *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def stop_when(process: subprocess.Popen[str], ready: Callable[[], bool],
              signum: int) -> subprocess.CompletedProcess[str]:
    """Send ``signum`` once ``ready()`` holds (polled), then wait for the process's end."""
    deadline = time.monotonic() + TIMEOUT
    while not ready():
        if process.poll() is not None:
            stdout, stderr = process.communicate()
            raise AssertionError(f"cpv ended ({process.returncode}) before the point to stop "
                                 f"it:\n{stdout}\n{stderr}")
        assert time.monotonic() < deadline, "the transfer never got half-way"
        time.sleep(0.02)
    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=TIMEOUT)
    assert process.returncode == EXIT[signum], (process.returncode, stdout, stderr)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def rerun(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([*CPV, *args], cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=TIMEOUT, check=False)
    assert result.returncode == 0, (result.stdout, result.stderr)
    return result


def resumed(result: subprocess.CompletedProcess[str], where: str) -> tuple[str, str]:
    """The ``resuming: X of Y already WHERE`` line: (X, Y) as printed."""
    found = re.findall(rf"^resuming: (.+) of (.+) already {where}$", result.stderr, re.M)
    assert len(found) == 1, result.stderr
    return found[0]


def settled(read: Callable[[], Any]) -> Any:
    """What ``read()`` gives once two reads a moment apart agree (a server may still be
    storing a part whose bytes all arrived before the kill)."""
    last = read()
    while True:
        time.sleep(0.3)
        now = read()
        if now == last:
            return now
        last = now


# -- S3 ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    with SeaweedS3(tmp_path_factory.mktemp("seaweed")) as server:
        yield server


@dataclass
class S3Repo:
    root: Path
    env: dict[str, str]
    bucket: str
    client: Any

    def key(self, md5: str) -> str:
        return f"T/m/files/md5/{md5[:2]}/{md5[2:]}"

    def uploads(self) -> list[dict[str, Any]]:
        return list(self.client.list_multipart_uploads(Bucket=self.bucket).get("Uploads", []))

    def parts(self) -> dict[int, int]:
        """Part number → size of the one unfinished upload there is (none: empty)."""
        uploads = self.uploads()
        if not uploads:
            return {}
        assert len(uploads) == 1, uploads
        listed = self.client.list_parts(Bucket=self.bucket, Key=uploads[0]["Key"],
                                        UploadId=uploads[0]["UploadId"]).get("Parts", [])
        return {part["PartNumber"]: part["Size"] for part in listed}

    def keys(self) -> set[str]:
        listing = self.client.list_objects_v2(Bucket=self.bucket)
        return {item["Key"] for item in listing.get("Contents", [])}

    def stored(self, md5: str) -> bytes:
        return bytes(self.client.get_object(Bucket=self.bucket, Key=self.key(md5))["Body"].read())


@pytest.fixture
def s3_repo(s3: SeaweedS3, tmp_path: Path) -> S3Repo:
    bucket = s3.create_bucket(f"cpv-resume-{os.urandom(3).hex()}")
    env = {**os.environ, **s3.env(), "AWS_ENDPOINT_URL": s3.endpoint_url,
           "CPV_TEST_PART_SIZE": str(S3_PART)}
    root = tmp_path / "m"
    subprocess.run([*CPV, "init", "--team", "T", "--model", "m", "--path", str(root),
                    "--storage-url", f"s3://{bucket}/T/m"], cwd=tmp_path, env=env, check=True,
                   capture_output=True, timeout=TIMEOUT)
    return S3Repo(root, env, bucket, s3.client())


def paced(env: dict[str, str], seconds: float = 0.4) -> dict[str, str]:
    return {**env, "CPV_TEST_PACE": str(seconds)}


def temporaries(*roots: Path) -> list[Path]:
    return [path for root in roots if root.exists() for path in root.rglob("*")
            if re.search(r"\.cpv-(tmp|tmpdir|partial|state)$", path.name)]


@pytest.mark.parametrize("signum", SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_s3_upload_stopped_half_way_sends_only_the_missing_parts(s3_repo: S3Repo,
                                                                 signum: int) -> None:
    repo = s3_repo
    size = 4 * S3_PART + 123  # five parts, the last one short
    md5 = write_random(repo.root / "model.bin", size)
    stopped = stop_when(start(["model", "upload"], repo.root, paced(repo.env)),
                        lambda: len(repo.parts()) >= 2, signum)

    held = settled(repo.parts)
    assert 2 <= len(held) < 5 and all(held[n] == S3_PART for n in held if n < 5), held
    if signum != signal.SIGKILL:  # one line: what storage keeps, and that a rerun resumes
        [line] = [line for line in stopped.stderr.splitlines() if line.strip()]
        print(f"\n{line}")
        assert (f"; {sum(held.values()) / MiB:.1f} of the {size / MiB:.1f} MiB to send are in "
                "storage. Run the same command again to resume") in line
    assert [u["Key"] for u in repo.uploads()] == [repo.key(md5)]
    assert repo.keys() == set()  # no object until every part is there

    again = rerun(["model", "upload"], repo.root, repo.env)
    already = sum(held.values())
    assert resumed(again, "in storage") == (human_size(already), human_size(size))
    assert f"({human_size(size)}, {human_size(size - already)} transferred)" in again.stdout
    assert md5_hex(repo.stored(md5)) == md5
    assert repo.uploads() == []
    assert md5 in (repo.root / "model.bin.dvc").read_text()
    assert temporaries(repo.root) == []


def test_s3_data_upload_killed_skips_stored_files_and_resumes_the_large_one(
        s3_repo: S3Repo) -> None:
    repo = s3_repo
    data = repo.root / "data"
    small = {f"train/{i}.jsonl": write_random(data / "train" / f"{i}.jsonl", 3000 + i)
             for i in range(5)}
    size = 3 * S3_PART + 7
    large = write_random(data / "shard.bin", size)
    stop_when(start(["data", "upload"], repo.root, paced(repo.env)),
              lambda: len(repo.parts()) >= 2, signal.SIGKILL)

    held = settled(repo.parts)
    assert [u["Key"] for u in repo.uploads()] == [repo.key(large)]
    assert {repo.key(m) for m in small.values()} <= repo.keys()  # the small files made it
    assert not any(key.endswith(".dir") for key in repo.keys())  # the listing goes last

    again = rerun(["data", "upload"], repo.root, repo.env)
    assert resumed(again, "in storage") == (human_size(sum(held.values())), human_size(size))
    assert md5_hex(repo.stored(large)) == large
    assert any(key.endswith(".dir") for key in repo.keys())
    assert repo.uploads() == []


@pytest.mark.parametrize("signum", SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_s3_download_stopped_half_way_receives_only_the_rest(s3_repo: S3Repo,
                                                            signum: int) -> None:
    repo = s3_repo
    size = 4 * S3_PART + 123
    md5 = write_random(repo.root / "model.bin", size)
    rerun(["model", "upload"], repo.root, repo.env)
    rerun(["model", "tag"], repo.root, repo.env)
    shutil.rmtree(repo.root / ".dvc" / "cache" / "files")  # it must come from storage
    out = repo.root.parent / "out"
    partial = repo.root / ".dvc" / "cache" / "cpv-partial" / f"{md5}.cpv-partial"
    state = partial.with_suffix(".cpv-state")

    stop_when(start(["model", "download", "v0.1", "-o", str(out)], repo.root, paced(repo.env)),
              lambda: covered(state) >= 2 * S3_PART, signum)

    # Nothing beside the target: the bytes received wait in the cache, with their record.
    assert not out.exists() or list(out.iterdir()) == []
    received = covered(state)
    assert 2 * S3_PART <= received < size and partial.stat().st_size == size
    assert partial.read_bytes()[:received] == (repo.root / "model.bin").read_bytes()[:received]

    again = rerun(["model", "download", "v0.1", "-o", str(out)], repo.root, repo.env)
    assert resumed(again, "received") == (human_size(received), human_size(size))
    assert md5_of(out / "model.bin") == md5 and f"md5 {md5} verified" in again.stdout
    assert [p.name for p in out.iterdir()] == ["model.bin"]
    assert temporaries(repo.root, out) == []


def test_a_corrupted_partial_download_is_received_again_whole(s3_repo: S3Repo) -> None:
    """The record says how far the bytes go, but those bytes were changed since: the md5 of
    the whole file shows it, and the rerun starts over instead of failing."""
    repo = s3_repo
    size = 4 * S3_PART
    md5 = write_random(repo.root / "model.bin", size)
    rerun(["model", "upload"], repo.root, repo.env)
    rerun(["model", "tag"], repo.root, repo.env)
    shutil.rmtree(repo.root / ".dvc" / "cache" / "files")
    out = repo.root.parent / "out"
    partial = repo.root / ".dvc" / "cache" / "cpv-partial" / f"{md5}.cpv-partial"
    stop_when(start(["model", "download", "v0.1", "-o", str(out)], repo.root, paced(repo.env)),
              lambda: covered(partial.with_suffix(".cpv-state")) >= S3_PART, signal.SIGKILL)
    with open(partial, "r+b") as handle:
        handle.write(b"\0" * 100)

    rerun(["model", "download", "v0.1", "-o", str(out)], repo.root, repo.env)
    assert md5_of(out / "model.bin") == md5
    assert temporaries(repo.root, out) == []


def test_doctor_lists_an_abandoned_s3_upload_and_aborts_it_past_the_grace(
        s3_repo: S3Repo) -> None:
    repo = s3_repo
    md5 = write_random(repo.root / "model.bin", 3 * S3_PART)
    stop_when(start(["model", "upload"], repo.root, paced(repo.env)),
              lambda: len(repo.parts()) >= 1, signal.SIGKILL)
    settled(repo.parts)

    young = doctor(repo.root, repo.env)["partial_uploads"]
    assert young["status"] == "passed" and "left alone" in young["detail"]
    [item] = young["items"]
    assert item["kind"] == "multipart upload" and item["where"].endswith(repo.key(md5))
    assert item["size"] == sum(repo.parts().values()) and item["age_seconds"] < 3600
    kept = doctor(repo.root, repo.env, "--repair")["partial_uploads"]  # 24 h by default
    assert kept["status"] == "passed" and len(repo.uploads()) == 1

    assert doctor(repo.root, repo.env, "--grace", "0s", expect=1)[
        "partial_uploads"]["status"] == "failed"
    repaired = doctor(repo.root, repo.env, "--repair", "--grace", "0s")["partial_uploads"]
    assert repaired["status"] == "passed" and "removed 1" in repaired["detail"]
    assert repo.uploads() == []


# -- a local storage folder ----------------------------------------------------------------------


def storage_partial(repo: ModelRepo, md5: str) -> Path:
    target = storage_object(repo.storage, md5)
    return target.with_name(f".{target.name}.cpv-partial")


def size_of(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def covered(state: Path) -> int:
    """How many bytes a download's state file says are complete (0 without one)."""
    try:
        return int(json.loads(state.read_text())["covered"])
    except (OSError, ValueError, KeyError):
        return 0


def md5_hex(data: bytes) -> str:
    import hashlib

    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def doctor(root: Path, env: dict[str, str] | None, *args: str, expect: int = 0
           ) -> dict[str, dict[str, Any]]:
    result = subprocess.run([*CPV, "doctor", "--json", *args], cwd=root,
                            env=env or dict(os.environ), capture_output=True, text=True,
                            timeout=TIMEOUT, check=False)
    assert result.returncode == expect, (result.stdout, result.stderr)
    return {finding["check"]: finding for finding in json.loads(result.stdout)}


@pytest.mark.parametrize("signum", SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_local_upload_stopped_half_way_continues_its_partial_file(repo: ModelRepo,
                                                                 signum: int) -> None:
    size = 24 * MiB + 5  # copied in 8 MiB chunks
    md5 = repo.write_model(size)
    partial = storage_partial(repo, md5)
    env = paced(dict(os.environ), 0.5)
    stop_when(start(["model", "upload"], repo.root, env),
              lambda: size_of(partial) >= 8 * MiB, signum)

    held = settled(lambda: size_of(partial))
    assert 8 * MiB <= held < size
    assert not storage_object(repo.storage, md5).exists()
    assert partial.read_bytes() == repo.model_file.read_bytes()[:held]

    again = rerun(["model", "upload"], repo.root, dict(os.environ))
    assert resumed(again, "in storage") == (human_size(held), human_size(size))
    assert f"({human_size(size)}, {human_size(size - held)} transferred)" in again.stdout
    assert md5_of(storage_object(repo.storage, md5)) == md5
    assert temporaries(repo.root, repo.storage) == []


def test_local_partial_file_with_wrong_bytes_is_kept_only_up_to_them(repo: ModelRepo) -> None:
    """A partial file's bytes are compared with the source's: from the first chunk that
    differs on, the copy is made again."""
    size = 24 * MiB
    md5 = repo.write_model(size)
    partial = storage_partial(repo, md5)
    partial.parent.mkdir(parents=True)
    good = repo.model_file.read_bytes()
    partial.write_bytes(good[:8 * MiB] + b"\0" * (4 * MiB))  # the second chunk is wrong

    again = rerun(["model", "upload"], repo.root, dict(os.environ))
    assert resumed(again, "in storage") == (human_size(8 * MiB), human_size(size))
    assert md5_of(storage_object(repo.storage, md5)) == md5
    assert temporaries(repo.storage) == []


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM],
                         ids=lambda s: signal.Signals(s).name)
def test_local_download_stopped_half_way_receives_only_the_rest(repo: ModelRepo,
                                                               signum: int) -> None:
    env = {**os.environ, "CPV_TEST_PART_SIZE": str(MiB)}
    size = 6 * MiB + 5
    md5 = repo.write_model(size)
    rerun(["model", "upload"], repo.root, env)
    rerun(["model", "tag"], repo.root, env)
    shutil.rmtree(repo.cache / "files")
    out = repo.root.parent / "out"
    state = repo.cache / "cpv-partial" / f"{md5}.cpv-state"
    stop_when(start(["model", "download", "v0.1", "-o", str(out)], repo.root, paced(env, 0.3)),
              lambda: covered(state) >= 2 * MiB, signum)

    received = covered(state)
    assert 2 * MiB <= received < size
    assert not out.exists() or list(out.iterdir()) == []

    again = rerun(["model", "download", "v0.1", "-o", str(out)], repo.root, env)
    assert resumed(again, "received") == (human_size(received), human_size(size))
    assert md5_of(out / "model.bin") == md5
    assert temporaries(repo.root, out, repo.storage) == []


def test_doctor_repairs_abandoned_local_partials_by_their_age(repo: ModelRepo) -> None:
    """Partial files in the storage folder and in the cache: younger than the grace period
    they are listed and left; older ones are removed by --repair; one a live process holds is
    left whatever its age."""
    md5 = repo.write_model(24 * MiB)
    partial = storage_partial(repo, md5)
    stop_when(start(["model", "upload"], repo.root, paced(dict(os.environ), 0.5)),
              lambda: size_of(partial) >= 8 * MiB, signal.SIGKILL)
    download = repo.cache / "cpv-partial" / f"{'ab' * 16}.cpv-partial"
    download.parent.mkdir(parents=True, exist_ok=True)
    download.write_bytes(b"received so far")

    findings = doctor(repo.root, None)
    assert findings["partial_uploads"]["status"] == "passed"
    assert [i["where"] for i in findings["partial_uploads"]["items"]] == [str(partial)]
    assert [i["where"] for i in findings["partial_downloads"]["items"]] == [str(download)]
    assert partial.exists() and download.exists()

    day_ago = time.time() - 25 * 3600
    for path in (partial, download):
        os.utime(path, (day_ago, day_ago))
    stale = doctor(repo.root, None, expect=1)
    assert stale["partial_uploads"]["status"] == stale["partial_downloads"]["status"] == "failed"

    with open(download, "rb") as held:  # a download still running holds its partial file
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        repaired = doctor(repo.root, None, "--repair")
        assert repaired["partial_downloads"]["items"][0]["in_use"] is True
        assert download.exists()
    assert not partial.exists()
    assert "removed 1" in repaired["partial_uploads"]["detail"]
    doctor(repo.root, None, "--repair", "--grace", "0")
    assert not download.exists()

    run_cpv("model", "upload", cwd=repo.root)  # the upload itself starts over and completes
    assert md5_of(storage_object(repo.storage, md5)) == md5
    assert temporaries(repo.root, repo.storage) == []


def test_s3_folder_download_killed_continues_its_large_files(s3: SeaweedS3,
                                                             tmp_path: Path) -> None:
    """A sharded checkpoint folder: each shard gathers in the cache as a single file does, so
    the rerun continues the shard it was receiving; the half-built folder the kill left beside
    the target is gone once the rerun has built it."""
    bucket = s3.create_bucket(f"cpv-resume-{os.urandom(3).hex()}")
    env = {**os.environ, **s3.env(), "AWS_ENDPOINT_URL": s3.endpoint_url,
           "CPV_TEST_PART_SIZE": str(S3_PART)}
    root = tmp_path / "m"
    subprocess.run([*CPV, "init", "--team", "T", "--model", "m", "--path", str(root),
                    "--storage-url", f"s3://{bucket}/T/m", "--artifact", "ckpt/"],
                   cwd=tmp_path, env=env, check=True, capture_output=True, timeout=TIMEOUT)
    shards = {name: write_random(root / "ckpt" / name, 3 * S3_PART + 11)
              for name in ("model-1.safetensors", "model-2.safetensors")}
    write_random(root / "ckpt" / "config.json", 300)
    rerun(["model", "upload"], root, env)
    rerun(["model", "tag"], root, env)
    shutil.rmtree(root / ".dvc" / "cache" / "files")
    out = tmp_path / "out"
    states = root / ".dvc" / "cache" / "cpv-partial"

    stop_when(start(["model", "download", "v0.1", "-o", str(out)], root, paced(env)),
              lambda: sum(covered(s) for s in states.glob("*.cpv-state")) >= 2 * S3_PART,
              signal.SIGKILL)
    received = sum(covered(s) for s in states.glob("*.cpv-state"))
    assert not out.exists()
    [leftover] = tmp_path.glob(".out.*.cpv-tmpdir")  # the kill's half-built folder
    finished = {p.name: p.stat().st_ino for p in leftover.iterdir() if p.is_file()}
    assert finished  # config.json at least: small files are done first

    again = rerun(["model", "download", "v0.1", "-o", str(out)], root, env)
    assert resumed(again, "received")[0] == human_size(received)
    assert {name: md5_of(out / name) for name in shards} == shards
    # The files the killed run finished were checked and kept, not received again.
    assert {name: (out / name).stat().st_ino for name in finished} == finished
    assert list(tmp_path.glob(".out.*")) == [] and temporaries(root, out) == []


# -- folders: whole files left in storage count too ---------------------------------------------


def stored_in_folder(storage: Path) -> tuple[int, int]:
    """A local storage remote's (bytes of complete file objects, bytes of partial files)."""
    base = storage / "files" / "md5"
    whole = sum(p.stat().st_size for p in base.glob("*/*")
                if not p.name.startswith(".") and not p.name.endswith(".dir"))
    return whole, sum(p.stat().st_size for p in base.glob("*/.*.cpv-partial"))


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL],
                         ids=lambda s: signal.Signals(s).name)
def test_local_folder_upload_stopped_says_how_much_of_it_storage_holds(repo: ModelRepo,
                                                                       signum: int) -> None:
    """The files an interrupted upload stored whole are skipped, the one it was copying is
    continued, and one line (no --verbose) adds them up against the folder's size."""
    data = repo.root / "data"
    # Copied side by side in 8 MiB chunks, the smaller shards are stored whole first.
    sizes = {f"shard-{i}.bin": i * 8 * MiB + i for i in range(1, 5)} | {"README.md": 700}
    md5s = {name: write_random(data / name, size) for name, size in sizes.items()}
    env = paced(dict(os.environ), 0.3)
    stopped = stop_when(start(["data", "upload"], repo.root, env),
                        lambda: stored_in_folder(repo.storage)[0] >= 8 * MiB, signum)
    print(stopped.stderr.strip())

    whole, partial = settled(lambda: stored_in_folder(repo.storage))
    print(f"\nstorage after {signal.Signals(signum).name}: {whole} bytes in whole objects, "
          f"{partial} in partial files")
    assert 8 * MiB <= whole < sum(sizes.values()) and partial > 0
    if signum != signal.SIGKILL:
        # Whole files exactly; of the files begun, what was counted before the threads stopped:
        # never more than storage holds, and at most one 8 MiB chunk less (a thread stopped
        # between writing a chunk and counting it).
        said = re.search(r"files to send \((\S+) of (\S+) MiB\) are in storage, and (\S+) MiB "
                         r"of the files begun\. Run the same command again to resume",
                         stopped.stderr)
        assert said, stopped.stderr
        assert said.group(1, 2) == (f"{whole / MiB:.1f}", f"{sum(sizes.values()) / MiB:.1f}")
        assert partial - 8 * MiB <= float(said[3]) * MiB <= partial, (said[3], partial)
    assert not list((repo.storage / "files" / "md5").glob("*/*.dir"))  # the listing goes last
    assert temporaries(repo.root) == []

    again = rerun(["data", "upload"], repo.root, dict(os.environ))
    assert resumed(again, "in storage") == (human_size(whole + partial),
                                            human_size(sum(sizes.values())))
    assert (f"({human_size(sum(sizes.values()))}, "
            f"{human_size(sum(sizes.values()) - whole - partial)} transferred)") in again.stdout
    assert all(md5_of(storage_object(repo.storage, md5)) == md5 for md5 in md5s.values())
    assert temporaries(repo.root, repo.storage) == []


def test_local_folder_upload_of_a_new_version_is_no_resume(repo: ModelRepo) -> None:
    """Files the previous version already stored are not what an interruption left: an
    ordinary upload of a changed folder says nothing about resuming."""
    data = repo.root / "data"
    for i in range(3):
        write_random(data / f"{i}.bin", 300_000 + i)
    rerun(["data", "upload"], repo.root, dict(os.environ))
    write_random(data / "3.bin", 1000)
    again = rerun(["data", "upload"], repo.root, dict(os.environ))
    assert "resuming" not in again.stderr
    assert f"({human_size(900_003 + 1000)}, " in again.stdout  # the new file and the listing
    assert " KiB transferred)" in again.stdout and "879" not in again.stdout.split(", ")[1]


def s3_stored(repo: S3Repo) -> tuple[int, int]:
    """A bucket's (bytes of complete file objects, bytes in the parts of unfinished uploads)."""
    listing = repo.client.list_objects_v2(Bucket=repo.bucket).get("Contents", [])
    whole = sum(int(item["Size"]) for item in listing if not item["Key"].endswith(".dir"))
    parts = 0
    for upload in repo.uploads():
        try:
            listed = repo.client.list_parts(Bucket=repo.bucket, Key=upload["Key"],
                                            UploadId=upload["UploadId"]).get("Parts", [])
        except repo.client.exceptions.NoSuchUpload:
            continue  # completed since it was listed
        parts += sum(int(part["Size"]) for part in listed)
    return whole, parts


def test_s3_folder_model_upload_killed_says_how_much_of_it_storage_holds(
        s3: SeaweedS3, tmp_path: Path) -> None:
    """A sharded checkpoint folder on S3, killed (SIGKILL) once a shard is stored and the next
    one is in parts (large files go one at a time): the rerun skips the stored shards, reuses
    the parts, and says so in one line."""
    bucket = s3.create_bucket(f"cpv-resume-{os.urandom(3).hex()}")
    env = {**os.environ, **s3.env(), "AWS_ENDPOINT_URL": s3.endpoint_url,
           "CPV_TEST_PART_SIZE": str(S3_PART)}
    root = tmp_path / "m"
    subprocess.run([*CPV, "init", "--team", "T", "--model", "m", "--path", str(root),
                    "--storage-url", f"s3://{bucket}/T/m", "--artifact", "ckpt/"],
                   cwd=tmp_path, env=env, check=True, capture_output=True, timeout=TIMEOUT)
    repo = S3Repo(root, env, bucket, s3.client())
    shards = {f"model-{i}.safetensors": write_random(root / "ckpt" / f"model-{i}.safetensors",
                                                     (2 + i) * S3_PART + 11) for i in range(4)}
    shards["config.json"] = write_random(root / "ckpt" / "config.json", 300)
    total = sum((root / "ckpt" / name).stat().st_size for name in shards)

    stop_when(start(["model", "upload"], root, paced(env, 0.3)),
              lambda: min(s3_stored(repo)) >= S3_PART, signal.SIGKILL)
    whole, parts = settled(lambda: s3_stored(repo))
    print(f"\nS3 after SIGKILL: {whole} bytes in whole objects, {parts} in the parts of "
          f"{len(repo.uploads())} unfinished multipart uploads")
    assert 2 * S3_PART <= whole < total and parts >= S3_PART
    assert not any(key.endswith(".dir") for key in repo.keys())

    again = rerun(["model", "upload"], root, env)
    assert resumed(again, "in storage") == (human_size(whole + parts), human_size(total))
    listing = sum(int(item["Size"]) for item in repo.client.list_objects_v2(
        Bucket=repo.bucket).get("Contents", []) if item["Key"].endswith(".dir"))
    assert f"({human_size(total)}, {human_size(total - whole - parts + listing)} transferred)" \
        in again.stdout
    assert all(md5_hex(repo.stored(md5)) == md5 for md5 in shards.values())
    assert repo.uploads() == [] and temporaries(root) == []
