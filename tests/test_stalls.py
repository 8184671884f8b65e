"""Remotes that stop answering, or answer "slow down": cpv gives up within its bound with a
message saying what it waited for, and retries transient failures, saying so with --verbose.

The S3 endpoint is a real SeaweedFS frozen with SIGSTOP (connections are accepted, nothing is
ever answered), always thawed again in a ``finally``; transient failures come from a small proxy
on 127.0.0.1 that answers the first requests with 503 SlowDown and forwards the rest to it. The
git host is a listener that accepts connections and never says a word.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import signal
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import (
    CPV,
    TIMEOUT,
    ModelRepo,
    assert_one_error_line,
    git,
    md5_of,
    run_cpv,
    write_random,
)
from servers import SeaweedS3, SSHServer, find_sshd, free_ports

from cp_manage.backends import s3 as s3_module
from cp_manage.backends.s3 import S3Storage
from cp_manage.backends.s3_watch import EndpointStalled, EndpointWatch
from cp_manage.errors import StorageError

MiB = 1024 * 1024
SHORT = 3
"""The S3 timeout (seconds) of most tests here: long enough for a loaded machine's server to
answer, short enough to keep the tests fast."""


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    with SeaweedS3(tmp_path_factory.mktemp("seaweed")) as server:
        yield server


@contextlib.contextmanager
def frozen(s3: SeaweedS3) -> Iterator[None]:
    """The S3 server stopped (SIGSTOP) for the block, and thawed (SIGCONT) whatever happens."""
    s3.pause()
    try:
        yield
    finally:
        s3.resume()


@pytest.fixture
def bucket(s3: SeaweedS3) -> str:
    return s3.create_bucket(f"cpv-{secrets.token_hex(4)}")


@pytest.fixture
def aws_env(s3: SeaweedS3, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    """The test server's keys in the environment; nothing of the machine's AWS set-up."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    env = {**s3.env(), "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config")}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


def cpv(args: list[str], cwd: Path, **env: str) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run cpv; return its result and how long it took."""
    began = time.monotonic()
    result = subprocess.run([*CPV, *args], cwd=cwd, env={**os.environ, **env},
                            capture_output=True, text=True, timeout=TIMEOUT, check=False)
    return result, time.monotonic() - began


def init_on_s3(tmp_path: Path, bucket: str, endpoint: str) -> Path:
    root = tmp_path / "m"
    result, _ = cpv(["init", "--team", "T", "--model", "m", "--path", str(root),
                     "--storage-url", f"s3://{bucket}/T/m"], tmp_path,
                    AWS_ENDPOINT_URL=endpoint)
    assert result.returncode == 0, result.stderr
    return root


# -- S3: a stalled endpoint ends the command within the bound -------------------------------------


def test_upload_to_a_stalled_endpoint_fails_within_the_bound_saying_what_it_waited_for(
        s3: SeaweedS3, bucket: str, aws_env: dict[str, str], tmp_path: Path) -> None:
    root = init_on_s3(tmp_path, bucket, s3.endpoint_url)
    md5 = write_random(root / "model.bin", 4096)
    before = git("ls-remote", "origin", cwd=root)
    with frozen(s3):
        result, took = cpv(["model", "upload"], root, AWS_ENDPOINT_URL=s3.endpoint_url,
                           CPV_S3_TIMEOUT=str(SHORT))
    line = assert_one_error_line(result)
    print(f"\n{took:.1f} s: {line}")
    assert f"The S3 endpoint {s3.endpoint_url} did not answer for {SHORT} s while checking " \
        f"object {md5}" in line
    assert "CPV_S3_TIMEOUT" in line and "run the same command again" in line
    assert took < 4 * SHORT + 15  # the stdlib HEAD, then botocore's; never a retry of either
    assert git("ls-remote", "origin", cwd=root) == before

    again, _ = cpv(["model", "upload"], root, AWS_ENDPOINT_URL=s3.endpoint_url)
    assert again.returncode == 0, again.stderr
    assert md5 in git("show", "HEAD:model.bin.dvc", cwd=root)


def test_download_from_a_stalled_endpoint_fails_within_the_bound(
        s3: SeaweedS3, bucket: str, aws_env: dict[str, str], tmp_path: Path) -> None:
    root = init_on_s3(tmp_path, bucket, s3.endpoint_url)
    md5 = write_random(root / "model.bin", 4096)
    for args in (["model", "upload"], ["model", "tag"]):
        done, _ = cpv(args, root, AWS_ENDPOINT_URL=s3.endpoint_url)
        assert done.returncode == 0, done.stderr
    for entry in (root / ".dvc" / "cache").rglob("*"):  # so it must come from storage
        if entry.is_file():
            entry.chmod(0o644)
            entry.unlink()
    out = tmp_path / "out"
    with frozen(s3):
        result, took = cpv(["model", "download", "v0.1", "-o", str(out)], root,
                           AWS_ENDPOINT_URL=s3.endpoint_url, CPV_S3_TIMEOUT=str(SHORT))
    line = assert_one_error_line(result)
    print(f"\n{took:.1f} s: {line}")
    assert f"did not answer for {SHORT} s while downloading object {md5}" in line
    assert took < 2 * SHORT + 15
    assert not out.exists() or list(out.iterdir()) == []

    again, _ = cpv(["model", "download", "v0.1", "-o", str(out)], root,
                   AWS_ENDPOINT_URL=s3.endpoint_url)
    assert again.returncode == 0, again.stderr
    assert md5_of(out / "model.bin") == md5


def test_a_multipart_upload_stalled_mid_way_ends_on_every_thread(
        s3: SeaweedS3, bucket: str, aws_env: dict[str, str], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Eight parts in flight when the endpoint freezes, more waiting: each in-flight request
    times out once, the rest are never sent, and the calling thread is not left waiting."""
    monkeypatch.setattr(s3_module, "UPLOAD_PART", MiB)
    monkeypatch.setattr(s3_module, "SMALL_OBJECT", MiB)
    source = tmp_path / "weights"
    md5 = write_random(source, 24 * MiB)
    monkeypatch.setenv("CPV_S3_TIMEOUT", str(SHORT))
    storage = S3Storage(f"s3://{bucket}/T/m", endpoint_url=s3.endpoint_url)
    assert storage.timeout == SHORT
    storage.check_location()  # the client exists before the freeze
    paused: list[bool] = []
    outcome: list[BaseException | None] = []

    def freeze_after_the_first_part(done: int, _total: int) -> None:
        if done and not paused:
            paused.append(True)
            s3.pause()

    def upload() -> None:
        try:
            storage.upload(md5, source, progress=freeze_after_the_first_part)
            outcome.append(None)
        except BaseException as e:  # handed to the test's thread
            outcome.append(e)

    began = time.monotonic()
    worker = threading.Thread(target=upload, daemon=True)
    worker.start()
    try:
        worker.join(timeout=60)
        took = time.monotonic() - began
    finally:
        s3.resume()
    assert not worker.is_alive(), "the upload was still waiting a minute after the freeze"
    assert paused
    error = outcome[-1]
    assert isinstance(error, StorageError), outcome
    print(f"\n{took:.1f} s: {error}")
    assert f"did not answer for {SHORT} s while uploading part" in error.message
    assert f"of object {md5}" in error.message
    assert took < 3 * SHORT + 10


def test_a_ranged_download_stalled_mid_way_ends(
        s3: SeaweedS3, bucket: str, aws_env: dict[str, str], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(s3_module, "DOWNLOAD_PART", MiB)
    source = tmp_path / "weights"
    md5 = write_random(source, 12 * MiB)
    monkeypatch.setenv("CPV_S3_TIMEOUT", str(SHORT))
    storage = S3Storage(f"s3://{bucket}/T/m", endpoint_url=s3.endpoint_url)
    storage.upload(md5, source)
    paused: list[bool] = []

    def freeze_after_the_first_bytes(done: int, _total: int) -> None:
        if done and not paused:
            paused.append(True)
            s3.pause()

    began = time.monotonic()
    try:
        with pytest.raises(StorageError) as raised:
            storage.download(md5, tmp_path / "out", size=12 * MiB,
                             progress=freeze_after_the_first_bytes)
        took = time.monotonic() - began
    finally:
        s3.resume()
    print(f"\n{took:.1f} s: {raised.value}")
    assert paused
    assert f"did not answer for {SHORT} s while" in raised.value.message
    assert md5 in raised.value.message
    assert took < 3 * SHORT + 10


def test_a_refused_connection_is_no_stall(aws_env: dict[str, str]) -> None:
    """Nothing listens: refused at once (retried, then reported as unreachable), never taken
    for an endpoint that did not answer (urllib3 files a refused connection under its
    timeouts)."""
    endpoint = f"http://127.0.0.1:{free_ports(1)[0]}"
    storage = S3Storage("s3://bucket/x", endpoint_url=endpoint)
    began = time.monotonic()
    with pytest.raises(StorageError) as raised:
        storage.ensure_location()
    assert f"Cannot reach the S3 endpoint {endpoint}" in raised.value.message
    assert "did not answer" not in raised.value.message
    assert time.monotonic() - began < 15
    assert storage.watch.stalled is None


def test_a_stall_is_remembered_for_one_timeout_then_the_endpoint_gets_another_chance(
        ) -> None:
    """Within a command, no request follows a stall; a program that keeps the storage open
    (a training script uploading every epoch) is not cut off from it for good."""
    watch = EndpointWatch(0.3, "http://127.0.0.1:1")
    watch.note_stall("uploading part 2 of object x")
    assert watch.is_stalled()
    with pytest.raises(EndpointStalled):
        watch._refuse_after_stall()
    time.sleep(0.4)
    assert not watch.is_stalled()
    watch._refuse_after_stall()


def test_with_the_default_timeout_a_stalled_upload_ends_within_a_minute(
        s3: SeaweedS3, bucket: str, aws_env: dict[str, str], tmp_path: Path) -> None:
    """The one test that waits the default 30 s: the whole command, Python's start included,
    ends in less than a minute."""
    root = init_on_s3(tmp_path, bucket, s3.endpoint_url)
    write_random(root / "model.bin", 4096)
    with frozen(s3):
        result, took = cpv(["model", "upload"], root, AWS_ENDPOINT_URL=s3.endpoint_url)
    line = assert_one_error_line(result)
    print(f"\n{took:.1f} s: {line}")
    assert "did not answer for 30 s while checking object" in line
    assert took < 60


def test_an_unusable_timeout_setting_is_one_error_line(
        s3: SeaweedS3, bucket: str, aws_env: dict[str, str], tmp_path: Path) -> None:
    root = init_on_s3(tmp_path, bucket, s3.endpoint_url)
    write_random(root / "model.bin", 4096)
    result, _ = cpv(["model", "upload"], root, AWS_ENDPOINT_URL=s3.endpoint_url,
                    CPV_S3_TIMEOUT="soon")
    line = assert_one_error_line(result)
    assert "CPV_S3_TIMEOUT must be a number of seconds above 0, not 'soon'" in line


# -- S3: transient failures are retried, and --verbose says so ----------------------------------


class FaultyProxy:
    """A TCP proxy on 127.0.0.1 in front of ``upstream``: the first ``failures`` PUT requests
    are answered 503 SlowDown (as S3 does when throttling) and their connection closed, or
    with ``reset`` their connection is reset without an answer; every
    other request is forwarded byte for byte (so signatures, made for the proxy's host and
    port, still match: the server checks what it receives) with ``Connection: close`` added,
    an unsigned header, so that each request comes on a connection of its own."""

    ERROR = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
             b"<Message>Please reduce your request rate.</Message></Error>")

    def __init__(self, upstream: int, failures: int, *, reset: bool = False) -> None:
        self.upstream = upstream
        self.reset = reset
        self.remaining = failures
        self.refused: list[str] = []
        self.lock = threading.Lock()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.endpoint_url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self.listener.close()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        with connection:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = connection.recv(65536)
                if not chunk:
                    return
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            with self.lock:
                refuse = self.remaining > 0 and data.startswith(b"PUT ")
                self.remaining -= refuse
            if refuse:
                self._refuse(connection, head, body)
            else:
                line, _, rest = data.partition(b"\r\n")
                self._forward(connection, line + b"\r\nConnection: close\r\n" + rest)

    def _refuse(self, connection: socket.socket, head: bytes, body: bytes) -> None:
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in
                   (line.partition(":") for line in lines[1:])}
        self.refused.append(lines[0])
        if self.reset:  # no answer: an RST (linger 0 on close), as a dropped connection gives
            connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return
        if "100-continue" not in headers.get("expect", "").lower():
            left = int(headers.get("content-length", "0")) - len(body)
            while left > 0 and (chunk := connection.recv(min(left, 65536))):
                left -= len(chunk)
        connection.sendall(b"HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\n"
                           b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
                           % (len(self.ERROR), self.ERROR))

    def _forward(self, connection: socket.socket, first: bytes) -> None:
        with socket.create_connection(("127.0.0.1", self.upstream)) as upstream:
            upstream.sendall(first)

            def pipe(source: socket.socket, target: socket.socket) -> None:
                with contextlib.suppress(OSError):
                    while chunk := source.recv(65536):
                        target.sendall(chunk)
                with contextlib.suppress(OSError):
                    target.shutdown(socket.SHUT_WR)

            back = threading.Thread(target=pipe, args=(upstream, connection), daemon=True)
            back.start()
            pipe(connection, upstream)
            back.join()


@pytest.mark.parametrize(("reset", "failed"), [
    (False, "SlowDown, HTTP 503"), (True, "ConnectionClosedError")])
def test_transient_failures_are_retried_with_backoff_and_verbose_says_so(
        s3: SeaweedS3, bucket: str, aws_env: dict[str, str], tmp_path: Path, reset: bool,
        failed: str) -> None:
    proxy = FaultyProxy(int(s3.endpoint_url.rsplit(":", 1)[1]), failures=0, reset=reset)
    try:
        root = init_on_s3(tmp_path, bucket, proxy.endpoint_url)
        md5 = write_random(root / "model.bin", 300_000)
        proxy.remaining = 3
        result, took = cpv(["model", "upload", "--verbose"], root,
                           AWS_ENDPOINT_URL=proxy.endpoint_url)
    finally:
        proxy.close()
    assert result.returncode == 0, result.stderr
    retries = [line for line in result.stderr.splitlines() if "retrying in" in line]
    print(f"\n{took:.1f} s; refused: {proxy.refused}\n" + "\n".join(retries))
    assert len(proxy.refused) == 3
    assert retries, result.stderr
    assert all(f"S3 request failed ({failed}" in line for line in retries), retries
    assert all(f"while uploading object {md5}; retrying in" in line for line in retries), retries
    # One PUT refused three times, retried each time after a growing, jittered wait.
    assert [line.rsplit("(", 1)[1] for line in retries] == [
        "attempt 2 of 5)", "attempt 3 of 5)", "attempt 4 of 5)"]
    stored = s3.client().list_objects_v2(Bucket=bucket)["Contents"]
    assert [o["Key"] for o in stored] == [f"T/m/files/md5/{md5[:2]}/{md5[2:]}"]
    assert hashlib.md5(s3.client().get_object(Bucket=bucket, Key=stored[0]["Key"])[
        "Body"].read()).hexdigest() == md5


# -- git: a host that stops answering is bounded too ---------------------------------------------


@pytest.fixture
def model_repo(repo: ModelRepo) -> ModelRepo:
    """A model repository (embedded remotes) with a first upload, and a new one to upload."""
    repo.write_model(4096, seed=1)
    run_cpv("model", "upload", cwd=repo.root)
    repo.write_model(4096, seed=2)
    return repo


class SilentListener:
    """A TCP listener on 127.0.0.1 that accepts connections and never says a word."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                self.held.append(self.listener.accept()[0])

    def close(self) -> None:
        self.listener.close()
        for connection in self.held:
            connection.close()


@pytest.mark.skipif(find_sshd() is None, reason="sshd missing: apt-get install openssh-server")
@pytest.mark.parametrize("configured", ["GIT_SSH_COMMAND", "core.sshCommand"])
def test_a_frozen_ssh_git_host_is_named_within_the_bound(
        model_repo: ModelRepo, tmp_path: Path, configured: str) -> None:
    """sshd stopped (SIGSTOP): the connection is accepted, the SSH banner never comes. The
    user's own ssh command (its config: key, port, known hosts) is kept, with cpv's timeouts
    added, as the upload once sshd is back shows."""
    repo = model_repo
    with SSHServer(tmp_path / "ssh") as ssh:
        url = ssh.git_url(repo.remote)
        repo.git("remote", "set-url", "origin", url)
        env = {"CPV_GIT_TIMEOUT": "2"}
        if configured == "GIT_SSH_COMMAND":
            env["GIT_SSH_COMMAND"] = ssh.ssh_command
        else:
            repo.git("config", "core.sshCommand", ssh.ssh_command)
        assert ssh.process is not None
        os.kill(ssh.process.pid, signal.SIGSTOP)
        try:
            result, took = cpv(["model", "upload"], repo.root, **env)
        finally:
            os.kill(ssh.process.pid, signal.SIGCONT)
        line = assert_one_error_line(result)
        print(f"\n{took:.1f} s: {line}")
        assert f"The git host 127.0.0.1:{ssh.port} did not answer for 2 s while fetching " \
            f"from {url}" in line
        assert "CPV_GIT_TIMEOUT" in line
        assert took < 15
        again, _ = cpv(["model", "upload"], repo.root, **env)
        assert again.returncode == 0, again.stderr
        assert f"{repo.head()}\trefs/heads/main" in repo.remote_refs()


def test_a_silent_http_git_host_is_named_within_the_bound(model_repo: ModelRepo) -> None:
    listener = SilentListener()
    url = f"http://127.0.0.1:{listener.port}/T/m.git"
    model_repo.git("remote", "set-url", "origin", url)
    try:
        result, took = cpv(["model", "upload"], model_repo.root, CPV_GIT_TIMEOUT="2")
    finally:
        listener.close()
    line = assert_one_error_line(result)
    print(f"\n{took:.1f} s: {line}")
    assert f"The git host 127.0.0.1:{listener.port} did not answer for 2 s while fetching " \
        f"from {url}" in line
    assert took < 15


def test_a_push_the_git_host_never_finishes_is_stopped(model_repo: ModelRepo) -> None:
    """The host answers (a local remote here) but its hook hangs: git itself is stopped
    after twice the timeout, and the upload is taken back."""
    repo = model_repo
    pid_file = repo.root.parent / "hook.pid"
    hook = repo.remote / "hooks" / "pre-receive"
    hook.write_text(f"#!/bin/sh\necho $$ > '{pid_file}'\nexec sleep 300\n")
    hook.chmod(0o755)
    before = repo.remote_refs()
    try:
        result, took = cpv(["model", "upload"], repo.root, CPV_GIT_TIMEOUT="3")
    finally:
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)
    line = assert_one_error_line(result)
    print(f"\n{took:.1f} s: {line}")
    assert f"The git remote did not finish pushing to {repo.remote} within 6 s" in line
    assert took < 20
    assert repo.remote_refs() == before
    assert repo.git("rev-parse", "HEAD") == before.split()[0]
    hook.unlink()
    again, _ = cpv(["model", "upload"], repo.root)
    assert again.returncode == 0, again.stderr
