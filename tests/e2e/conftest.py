"""A team's real infrastructure on 127.0.0.1 for the end-to-end tests.

One S3 store (SeaweedFS) and one SSH git host (sshd) serve the whole session. Each test gets its
own bucket, its own folder of bare repositories on the git host, its own HOME and CPV_HOME, and
configures cpv the way a user does: a credentials file plus ``cpv config aws``, ``cpv config set
git_url_template`` and ``cpv config ssh``. Every command runs as a real subprocess with the test's
environment passed explicitly, and its output is kept so the secrets test can search it.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from helpers import CPV, DVC, TIMEOUT, isolate_environment
from servers import SeaweedS3, SSHServer, find_sshd

TEAM = "AI-Convo"
PROFILE = "ml-team"
LARGE = 16 * 1024 * 1024


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    with SeaweedS3(tmp_path_factory.mktemp("e2e-s3")) as server:
        yield server


@pytest.fixture(scope="session")
def ssh_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SSHServer]:
    if find_sshd() is None:
        pytest.skip("sshd is not installed (apt-get install -y openssh-server)")
    with SSHServer(tmp_path_factory.mktemp("e2e-ssh")) as server:
        yield server


@dataclass
class Infra:
    """One user's machine configured for the team's S3 bucket and SSH git host."""

    s3: SeaweedS3
    ssh: SSHServer
    root: Path
    env: dict[str, str]
    bucket: str
    credentials: Path
    git_host: Path
    transcript: list[str] = field(default_factory=list)

    @property
    def home(self) -> Path:
        return Path(self.env["HOME"])

    @property
    def cpv_home(self) -> Path:
        return Path(self.env["CPV_HOME"])

    @property
    def git_url_template(self) -> str:
        return (f"ssh://{self.ssh.user}@127.0.0.1:{self.ssh.port}{self.git_host}"
                "/{team}/{model}.git")

    def git_url(self, model: str, team: str = TEAM) -> str:
        return self.git_url_template.format(team=team, model=model)

    def storage_prefix(self, model: str, team: str = TEAM) -> str:
        return f"{team}/{model}"

    # -- running things -------------------------------------------------------------------------

    def run(self, args: list[str], *, cwd: Path, env: dict[str, str] | None = None,
            expect: int | None = 0) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(args, cwd=cwd, env=env or self.env, capture_output=True,
                                text=True, timeout=TIMEOUT, check=False)
        self.transcript.append(f"$ {' '.join(args)}\n{result.stdout}\n{result.stderr}")
        if expect is not None:
            assert result.returncode == expect, (
                f"{' '.join(args)} exited {result.returncode}, expected {expect}\n"
                f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}")
        return result

    def cpv(self, *args: str | os.PathLike[str], cwd: Path, expect: int | None = 0,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """``cpv ARGS`` as a subprocess of this machine; asserts the exit code unless None."""
        return self.run([*CPV, *map(str, args)], cwd=cwd, env=env, expect=expect)

    def git(self, *args: str | os.PathLike[str], cwd: Path) -> str:
        return self.run(["git", *map(str, args)], cwd=cwd).stdout.strip()

    def dvc(self, *args: str, cwd: Path) -> str:
        """Stock dvc, with the credentials the AWS way: a credentials file and a profile."""
        env = {**self.env, "AWS_SHARED_CREDENTIALS_FILE": str(self.credentials),
               "AWS_PROFILE": PROFILE}
        return self.run([DVC, *args], cwd=cwd, env=env).stdout

    # -- the git host's side ----------------------------------------------------------------------

    def bare_repo(self, model: str, team: str = TEAM, *, branch: str = "main") -> Path:
        """What the git host's admin does: create the empty repository cpv pushes to (its
        HEAD naming ``branch``, the host's default)."""
        path = self.git_host / team / f"{model}.git"
        path.mkdir(parents=True)
        self.git("init", "-q", "--bare", f"--initial-branch={branch}", path, cwd=self.root)
        return path

    def remote_refs(self, model: str, team: str = TEAM) -> str:
        return self.git("for-each-ref", cwd=self.git_host / team / f"{model}.git")

    # -- configuration --------------------------------------------------------------------------

    def configure_aws(self, *, bucket: str | None = None, endpoint_url: str | None = None
                      ) -> None:
        self.cpv("config", "aws", "--credentials-file", self.credentials, "--profile", PROFILE,
                 "--bucket", bucket or self.bucket,
                 "--endpoint-url", endpoint_url or self.s3.endpoint_url,
                 "--region", self.s3.region, cwd=self.root)

    def configure_ssh(self, key: Path, *, ssh_config: Path | None = None,
                      host: str = "127.0.0.1") -> None:
        """``cpv config ssh`` for the test git host (the block goes to ``ssh_config``)."""
        self.cpv("config", "ssh", "--key", key, "--host", host, "--hostname", "127.0.0.1",
                 "--port", self.ssh.port, "--user", self.ssh.user, "--ssh-config",
                 ssh_config or self.root / "cpv-ssh-config", cwd=self.root)

    def write_credentials(self, *, secret_key: str | None = None) -> None:
        """The credentials file with the server's keys (or a wrong secret key)."""
        self.s3.write_credentials_file(self.credentials, profile=PROFILE, secret_key=secret_key)

    def ssh_command_with(self, *, key: Path | None = None,
                         known_hosts: Path | None = None) -> str:
        """An ssh command like ``SSHServer.ssh_command`` with another key or known_hosts."""
        text = self.ssh.client_config.read_text()
        if key is not None:
            text = text.replace(f"IdentityFile {self.ssh.client_key}", f"IdentityFile {key}")
        if known_hosts is not None:
            text = text.replace(f"UserKnownHostsFile {self.ssh.known_hosts}",
                                f"UserKnownHostsFile {known_hosts}")
        path = self.root / f"ssh_config-{secrets.token_hex(3)}"
        path.write_text(text)
        return f"ssh -F {path}"

    def with_env(self, **values: str | None) -> dict[str, str]:
        """This machine's environment with some variables changed (None removes one)."""
        env = dict(self.env)
        for name, value in values.items():
            if value is None:
                env.pop(name, None)
            else:
                env[name] = value
        return env

    # -- what must never hold a secret ----------------------------------------------------------

    def assert_no_secrets(self, *extra: str) -> list[Path]:
        """Neither key (nor ``extra`` strings) in any output, nor in any file of this machine
        or of its git host (git objects decompressed), except the credentials file itself.
        Returns the git repositories searched."""
        needles = [self.s3.access_key, self.s3.secret_key, *extra]
        for entry in self.transcript:
            for needle in needles:
                assert needle not in entry, f"a secret in the output of:\n{entry[:2000]}"
        git_dirs = []
        for path in sorted(self.root.rglob("*")):
            if path.name in ("HEAD",) and (path.parent / "objects").is_dir():
                git_dirs.append(path.parent)
            if not path.is_file() or path.is_symlink() or path == self.credentials or (
                    path.stat().st_size > LARGE):
                continue  # large files are artifacts: the test's own random bytes
            raw = path.read_bytes()
            for needle in needles:
                assert needle.encode() not in raw, f"a secret in {path}"
        assert git_dirs, "no git repository to search"
        for git_dir in git_dirs:
            dump = subprocess.run(
                ["git", f"--git-dir={git_dir}", "cat-file", "--batch-all-objects", "--batch"],
                capture_output=True, timeout=TIMEOUT, check=True, env=self.env).stdout
            for needle in needles:
                assert needle.encode() not in dump, f"a secret in a git object of {git_dir}"
        return git_dirs


def make_infra(root: Path, s3: SeaweedS3, ssh: SSHServer) -> Infra:
    """A fresh machine under ``root``: isolated HOME and CPV_HOME, no ambient AWS setting,
    git reaching the host through the test server's ssh config, cpv configured for S3."""
    with pytest.MonkeyPatch.context() as mp:
        isolate_environment(mp, root / "env")  # also drops every AWS_* variable
        mp.setenv("AWS_EC2_METADATA_DISABLED", "true")
        mp.setenv("GIT_SSH_COMMAND", ssh.ssh_command)
        env = dict(os.environ)
    git_host = root / "git-host"
    git_host.mkdir(parents=True, exist_ok=True)
    bucket = s3.create_bucket(f"cpv-e2e-{secrets.token_hex(4)}")
    infra = Infra(s3=s3, ssh=ssh, root=root, env=env, bucket=bucket,
                  credentials=Path(env["HOME"]) / ".aws" / "credentials", git_host=git_host)
    infra.write_credentials()
    infra.configure_aws()
    infra.cpv("config", "set", "git_url_template", infra.git_url_template, cwd=root)
    infra.configure_ssh(ssh.client_key)
    return infra


@pytest.fixture
def infra(tmp_path: Path, s3_server: SeaweedS3, ssh_server: SSHServer) -> Infra:
    """This test's machine, configured for the session's S3 store and git host."""
    return make_infra(tmp_path, s3_server, ssh_server)
