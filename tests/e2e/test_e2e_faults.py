"""Faults on real infrastructure, with nothing lost: storage dying in the middle of an upload,
wrong keys, an unknown bucket, an unreachable endpoint, a refused SSH key and an unknown host
key. Each is one readable error line naming the fix, and changes nothing anywhere."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from conftest import TEAM, Infra
from helpers import CPV, TIMEOUT, assert_one_error_line, md5_of, write_random
from servers import free_ports

MODEL = "bert-large"
MiB = 1024 * 1024


def init_model(infra: Infra, model: str = MODEL) -> Path:
    infra.bare_repo(model)
    infra.cpv("init", "--team", TEAM, "--model", model, cwd=infra.root)
    return infra.root / model


def snapshot(infra: Infra, repo: Path, model: str = MODEL) -> dict[str, Any]:
    """What a failed operation must leave as it was, here and on the git host."""
    return {
        "head": infra.git("rev-parse", "HEAD", cwd=repo),
        "status": infra.git("status", "--porcelain", "--untracked-files=no", cwd=repo),
        "refs": infra.git("for-each-ref", cwd=repo),
        "remote": infra.remote_refs(model),
        "pointer": (repo / "model.bin.dvc").read_bytes() if (repo / "model.bin.dvc").exists()
        else None,
        "metrics": (repo / "metrics.log").read_bytes(),
    }


def bucket_keys(infra: Infra) -> set[str]:
    listing = infra.s3.client().list_objects_v2(Bucket=infra.bucket)
    return {item["Key"] for item in listing.get("Contents", [])}


def fails(infra: Infra, *args: str | os.PathLike[str], cwd: Path,
          env: dict[str, str] | None = None) -> str:
    """Run cpv, expect exit 1 and a single 'error:' line; return that line."""
    line = assert_one_error_line(infra.cpv(*args, cwd=cwd, env=env, expect=None))
    print(f"\n$ cpv {' '.join(map(str, args))}\n{line}")
    return line


def test_storage_killed_in_the_middle_of_an_upload(infra: Infra) -> None:
    repo = init_model(infra)
    md5 = write_random(repo / "model.bin", 200 * MiB)
    before = snapshot(infra, repo)
    stored = bucket_keys(infra)
    command = [*CPV, "model", "upload", "--metric", "accuracy=0.7", "-m", "big one"]
    client = infra.s3.client()
    try:
        upload = subprocess.Popen(command, cwd=repo, env=infra.env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while not client.list_multipart_uploads(Bucket=infra.bucket).get("Uploads"):
            assert upload.poll() is None, upload.communicate()
            assert time.monotonic() < deadline, "the upload never started"
            time.sleep(0.05)
        assert infra.s3.process is not None
        os.kill(infra.s3.process.pid, signal.SIGKILL)
        infra.s3.process.wait(timeout=30)
        stdout, stderr = upload.communicate(timeout=TIMEOUT)
        infra.transcript.append(f"$ {' '.join(command)}\n{stdout}\n{stderr}")
        line = assert_one_error_line(subprocess.CompletedProcess(command, upload.returncode,
                                                                 stdout, stderr))
        print(f"\n$ cpv model upload  # storage killed mid-upload\n{line}")
        assert f"Cannot reach the S3 endpoint {infra.s3.endpoint_url}" in line
        assert "cpv config aws --endpoint-url" in line
        assert snapshot(infra, repo) == before
        assert md5_of(repo / "model.bin") == md5
    finally:
        infra.s3.restart()
    assert bucket_keys(infra) == stored  # the half-sent object never appeared

    # The same command, once storage is back, completes; the version downloads intact.
    infra.run(command, cwd=repo)
    assert infra.git("rev-parse", "HEAD", cwd=repo) != before["head"]
    assert infra.git("ls-remote", "origin", "refs/heads/main", cwd=repo).split()[0] == \
        infra.git("rev-parse", "HEAD", cwd=repo)
    infra.cpv("model", "tag", cwd=repo)
    infra.cpv("model", "download", "v0.1", "-o", infra.root / "out", cwd=repo)
    assert md5_of(infra.root / "out" / "model.bin") == md5
    infra.assert_no_secrets()


def test_storage_faults_are_one_line_and_change_nothing(infra: Infra) -> None:
    repo = init_model(infra)
    write_random(repo / "model.bin", 4096, seed=1)
    infra.cpv("model", "upload", "--metric", "accuracy=0.5", cwd=repo)
    write_random(repo / "model.bin", 4096, seed=2)
    before = snapshot(infra, repo)
    stored = bucket_keys(infra)
    other = "bert-base"
    infra.bare_repo(other)

    def nothing_changed() -> None:
        assert snapshot(infra, repo) == before
        assert bucket_keys(infra) == stored
        assert not (infra.root / other).exists()
        assert infra.remote_refs(other) == ""

    # Wrong secret key.
    infra.write_credentials(secret_key="wrong-secret-key-1234")
    for args, cwd in ((["model", "upload"], repo),
                      (["init", "--team", TEAM, "--model", other], infra.root)):
        line = fails(infra, *args, cwd=cwd)
        assert "Access denied" in line and "profile 'ml-team'" in line
        assert str(infra.credentials) in line
        nothing_changed()
    infra.write_credentials()
    # Keys in the environment take precedence over the configured profile (as with the AWS
    # CLI and stock dvc), so wrong ones there are what the error names.
    env = infra.with_env(AWS_ACCESS_KEY_ID=infra.s3.access_key,
                         AWS_SECRET_ACCESS_KEY="wrong-secret-key-1234")
    line = fails(infra, "model", "upload", cwd=repo, env=env)
    assert "Access denied" in line and "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY" in line
    nothing_changed()

    # A bucket that does not exist: at init, and under an existing repository.
    infra.configure_aws(bucket="no-such-bucket-cpv")
    line = fails(infra, "init", "--team", TEAM, "--model", other, cwd=infra.root)
    assert "Bucket no-such-bucket-cpv does not exist" in line
    assert "cpv config aws --bucket NAME" in line
    nothing_changed()
    infra.configure_aws()
    gone = infra.s3.create_bucket(f"{infra.bucket}-gone")
    infra.configure_aws(bucket=gone)
    gone_repo = init_model(infra, "gone-model")
    write_random(gone_repo / "model.bin", 4096, seed=3)
    gone_before = snapshot(infra, gone_repo, "gone-model")
    infra.s3.client().delete_bucket(Bucket=gone)
    line = fails(infra, "model", "upload", cwd=gone_repo)
    assert f"Bucket {gone} does not exist" in line
    assert snapshot(infra, gone_repo, "gone-model") == gone_before
    infra.configure_aws()

    # An endpoint nobody listens on.
    closed = f"http://127.0.0.1:{free_ports(1)[0]}"
    infra.configure_aws(endpoint_url=closed)
    for args, cwd in ((["model", "upload"], repo),
                      (["init", "--team", TEAM, "--model", other], infra.root)):
        line = fails(infra, *args, cwd=cwd)
        assert f"Cannot reach the S3 endpoint {closed}" in line
        assert "cpv config aws --endpoint-url" in line
        nothing_changed()
    infra.configure_aws()

    # Everything works again once the configuration is right.
    infra.cpv("model", "upload", cwd=repo)
    infra.assert_no_secrets("wrong-secret-key-1234")


def test_ssh_faults_are_one_line_and_change_nothing(infra: Infra) -> None:
    repo = init_model(infra)
    write_random(repo / "model.bin", 4096, seed=1)
    infra.cpv("model", "upload", cwd=repo)
    write_random(repo / "model.bin", 4096, seed=2)
    before = snapshot(infra, repo)
    other = "bert-base"
    infra.bare_repo(other)
    stranger = infra.root / "stranger_ed25519"
    infra.cpv("config", "ssh", "--key", stranger, "--ssh-config", infra.root / "unused",
              cwd=infra.root)
    empty = infra.root / "empty_known_hosts"
    empty.write_text("")
    commands = [(["init", "--team", TEAM, "--model", other], infra.root),
                (["model", "upload"], repo)]
    cases = [
        (infra.ssh_command_with(key=stranger),
         "The git host refused your SSH key: run 'cpv config ssh' and add the public key.",
         [*commands, (["model", "tag"], repo)]),
        (infra.ssh_command_with(known_hosts=empty),
         "The git host's SSH key is unknown: connect once with ssh to accept it, or add it to "
         "~/.ssh/known_hosts.", commands),
    ]
    for ssh_command, fix, attempts in cases:
        env = infra.with_env(GIT_SSH_COMMAND=ssh_command)
        for args, cwd in attempts:
            line = fails(infra, *args, cwd=cwd, env=env)
            assert line.endswith(fix), line
            assert snapshot(infra, repo) == before
            assert not (infra.root / other).exists()
            assert infra.remote_refs(other) == ""

    # No repository on the git host (cpv creates bare remotes only on local paths; on a host,
    # that is its admin's job).
    line = fails(infra, "init", "--team", TEAM, "--model", "not-on-host", cwd=infra.root)
    assert "does not appear to be a git repository" in line
    assert "Check that the git remote exists" in line
    assert not (infra.root / "not-on-host").exists()

    infra.cpv("model", "upload", cwd=repo)
    infra.cpv("model", "tag", cwd=repo)
