"""One-time setup of the team's infrastructure: the AWS profile, the git host's SSH key, and
the checks that prove both work.

cpv records *where* credentials are (a file, a profile name, a key path); the secrets stay in
the files their own tools own (``~/.aws/credentials``, ``~/.ssh``) and never reach a log line,
an error message, ``config.json`` or git.
"""

from __future__ import annotations

import configparser
import os
import re
import shlex
import stat
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cp_manage.errors import ConfigError, CPVError
from cp_manage.fsutil import atomic_write_bytes
from cp_manage.git_urls import parse_git_url
from cp_manage.report import Finding, ValidationReport

if TYPE_CHECKING:  # config.py calls into this module; at run time only that way round
    from cp_manage.config import CPVConfig

BLOCK_START = "# >>> cpv: {host} >>>"
BLOCK_END = "# <<< cpv: {host} <<<"


def default_credentials_path() -> Path:
    env = os.environ.get("AWS_SHARED_CREDENTIALS_FILE")
    return Path(env).expanduser() if env else Path.home() / ".aws" / "credentials"


# -- AWS -------------------------------------------------------------------------------------------


def setup_aws_profile(config: CPVConfig, credential_path: str | os.PathLike[str] | None = None,
                      aws_profile: str = "default", *, bucket: str | None = None,
                      endpoint_url: str | None = None, region: str | None = None,
                      aws_access_key_id: str | None = None,
                      aws_secret_access_key: str | None = None) -> dict[str, Any]:
    """Make sure the profile exists in the credentials file and remember where it is.

    With keys, the profile is written into the credentials file (mode 0600), other profiles
    kept. Without keys, the profile must already be there. config.json gets the path and the
    profile name, never a key.

    Raises:
        ConfigError: the file or profile is missing and no keys were given.
    """
    path = Path(credential_path).expanduser().absolute() if credential_path else (
        default_credentials_path().absolute())
    if not aws_profile or not re.fullmatch(r"[\w.+@-]+", aws_profile):
        raise ConfigError(f"Invalid AWS profile name {aws_profile!r}",
                          hint="Use letters, digits, '.', '_', '-'.")
    parser = configparser.RawConfigParser()
    if path.exists():
        try:
            parser.read(path, encoding="utf-8")
        except configparser.Error as e:
            raise ConfigError(f"{path} is not a valid AWS credentials file",
                              hint="Fix it, or point --credentials-file at another file.") from e
    if aws_access_key_id or aws_secret_access_key:
        if not (aws_access_key_id and aws_secret_access_key):
            raise ConfigError("Give both the access key id and the secret access key")
        if not parser.has_section(aws_profile):
            parser.add_section(aws_profile)
        parser.set(aws_profile, "aws_access_key_id", aws_access_key_id)
        parser.set(aws_profile, "aws_secret_access_key", aws_secret_access_key)
        lines: list[str] = []
        for section in parser.sections():
            lines.append(f"[{section}]")
            lines += [f"{k} = {v}" for k, v in parser.items(section)]
            lines.append("")
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        atomic_write_bytes(path, "\n".join(lines).encode(), mode=0o600)
    elif not path.exists():
        raise ConfigError(f"The AWS credentials file {path} does not exist",
                          hint=f"Run 'aws configure --profile {aws_profile}', or pass the keys.")
    elif not parser.has_section(aws_profile):
        raise ConfigError(
            f"Profile {aws_profile!r} is not in {path}",
            hint=f"Run 'aws configure --profile {aws_profile}', or pick one of: "
            f"{', '.join(parser.sections()) or 'none'}.")
    values: dict[str, str | None] = {"aws_credential_path": str(path),
                                     "aws_profile": aws_profile}
    if bucket is not None:
        values["bucket"] = bucket
    if endpoint_url is not None:
        values["endpoint_url"] = endpoint_url
    if region is not None:
        values["region"] = region
    config.update(values)
    settings: dict[str, Any] = config.get_config()
    return settings


# -- SSH -------------------------------------------------------------------------------------------


def setup_git_ssh(config: CPVConfig, keygen_filename: str | os.PathLike[str] | None = None,
                  bitbucket_user: str = "git", *, host: str = "bitbucket.org",
                  hostname: str = "altssh.bitbucket.org", port: int = 443,
                  ssh_config_path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Make the key when missing (ed25519) and keep one marked block for ``host`` in the SSH
    config. Idempotent; other entries are untouched, and a ``Host`` entry for the same host
    that cpv did not write is kept as it is (never duplicated).

    Returns:
        ``{"key": path, "public_key": text, "ssh_config": path, "block_written": bool}``.
    """
    for value, what in ((host, "host"), (hostname, "hostname"), (bitbucket_user, "user")):
        if not re.fullmatch(r"[\w.@-]+", str(value)):
            raise ConfigError(f"Invalid SSH {what} {value!r}")
    if not 0 < int(port) < 65536:
        raise ConfigError(f"Invalid SSH port {port}")
    ssh_dir = Path.home() / ".ssh"
    key = Path(keygen_filename).expanduser().absolute() if keygen_filename else (
        ssh_dir / "id_ed25519_cpv")
    if not key.exists():
        key.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "cpv",
                            "-f", str(key)], check=True, capture_output=True, timeout=60)
        except FileNotFoundError as e:
            raise ConfigError("ssh-keygen is not installed",
                              hint="Install OpenSSH (e.g. apt-get install openssh-client).") from e
        except subprocess.CalledProcessError as e:
            raise ConfigError(f"ssh-keygen failed: {e.stderr.decode(errors='replace').strip()}"
                              ) from e
    os.chmod(key, 0o600)
    config_path = Path(ssh_config_path).expanduser() if ssh_config_path else ssh_dir / "config"
    existing = config_path.read_text(encoding="utf-8") if config_path.exists() else ""
    start, end = BLOCK_START.format(host=host), BLOCK_END.format(host=host)
    block = "\n".join([start, f"Host {host}", f"  Hostname {hostname}", f"  Port {port}",
                       "  AddKeysToAgent yes", f"  IdentityFile {key}",
                       "  IdentitiesOnly yes", f"  User {bitbucket_user}", end]) + "\n"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end) + r"\n?", re.S)
    outside = pattern.sub("", existing)
    foreign = re.search(rf"^\s*Host\s+(.*\s)?{re.escape(host)}(\s|$)", outside, re.M | re.I)
    written = False
    if foreign is None:
        updated = pattern.sub(block, existing) if pattern.search(existing) else (
            existing + ("\n" if existing and not existing.endswith("\n") else "") + block)
        if updated != existing:
            config_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            atomic_write_bytes(config_path, updated.encode(), mode=0o600)
        written = True
    config.update({"bitbucket_ssh_keyfile": str(key), "ssh_host": host})
    public = key.with_name(key.name + ".pub")
    return {"key": str(key), "public_key": public.read_text().strip() if public.exists() else "",
            "ssh_config": str(config_path), "block_written": written}


# -- validation ------------------------------------------------------------------------------------


def git_ssh_command(cwd: Path | None = None) -> list[str]:
    """The ssh command git itself would use: GIT_SSH_COMMAND, core.sshCommand, else ssh."""
    command = os.environ.get("GIT_SSH_COMMAND")
    if not command:
        result = subprocess.run(["git", "config", "--get", "core.sshCommand"], cwd=cwd,
                                capture_output=True, text=True, timeout=30, check=False)
        command = result.stdout.strip() or None
    return shlex.split(command) if command else ["ssh"]


def ssh_target(url: str) -> tuple[str, str | None, int | None] | None:
    """(host, user, port) of an SSH git URL (``ssh://``, or scp-like ``[user@]host:path``
    where host may be a ``Host`` alias), or None for other URLs."""
    parsed = parse_git_url(url)
    if parsed.kind != "ssh" or not parsed.host:
        return None
    return parsed.host, parsed.user, parsed.port


def validate_credentials(config: CPVConfig, *, git_url: str | None = None,
                         repo_root: Path | None = None) -> ValidationReport:
    """Check each part of the setup separately; a part with nothing configured is skipped."""
    settings = config.get_config()
    report = ValidationReport()
    add = report.findings.append

    # 1. credentials file and 2. profile
    env_keys = bool(os.environ.get("AWS_ACCESS_KEY_ID") and os.environ.get("AWS_SECRET_ACCESS_KEY"))
    cred_setting = settings.get("aws_credential_path")
    profile = settings.get("aws_profile")
    cred_path = Path(cred_setting).expanduser() if cred_setting else default_credentials_path()
    if not cred_setting and not profile and not env_keys and not cred_path.exists():
        add(Finding("credentials_file", "skipped", "no AWS credentials configured"))
        add(Finding("aws_profile", "skipped", "no AWS profile configured"))
    elif env_keys:  # they take precedence over any configured profile (see S3Storage)
        add(Finding("credentials_file", "passed", "keys come from AWS_* environment variables"))
        add(Finding("aws_profile", "skipped", "environment keys take precedence"))
    else:
        parser = configparser.RawConfigParser()
        try:
            with open(cred_path, encoding="utf-8") as handle:
                parser.read_file(handle)
            add(Finding("credentials_file", "passed", f"{cred_path} is readable"))
        except (OSError, configparser.Error) as e:
            add(Finding("credentials_file", "failed", f"cannot read {cred_path}: "
                        f"{getattr(e, 'strerror', None) or type(e).__name__}",
                        "Run 'aws configure' or 'cpv config aws --credentials-file PATH'."))
        name = profile or "default"
        if parser.has_section(name):
            keys = {k for k, _ in parser.items(name)}
            if {"aws_access_key_id", "aws_secret_access_key"} <= keys:
                add(Finding("aws_profile", "passed", f"profile {name!r} has a key pair"))
            else:
                add(Finding("aws_profile", "failed", f"profile {name!r} lacks a key pair",
                            f"Run 'aws configure --profile {name}'."))
        elif cred_path.exists():
            add(Finding("aws_profile", "failed", f"profile {name!r} is not in {cred_path}",
                        f"Run 'aws configure --profile {name}' or 'cpv config aws --profile'."))
        else:
            add(Finding("aws_profile", "failed", f"profile {name!r}: no credentials file",
                        f"Run 'aws configure --profile {name}'."))

    # 3. bucket
    bucket = settings.get("bucket")
    if not bucket:
        add(Finding("bucket", "skipped", "no bucket configured"))
    else:
        from cp_manage.backends.s3 import S3Storage

        try:
            S3Storage(f"s3://{bucket}", config=config).ensure_location()
            add(Finding("bucket", "passed", f"s3://{bucket} is reachable"
                        + (f" at {settings['endpoint_url']}" if settings.get("endpoint_url")
                           else "")))
        except CPVError as e:
            add(Finding("bucket", "failed", e.message, e.hint or "Check 'cpv config aws'."))

    # 4. SSH key
    key_setting = settings.get("bitbucket_ssh_keyfile")
    if not key_setting:
        add(Finding("ssh_key", "skipped", "no SSH key configured"))
    else:
        key = Path(key_setting).expanduser()
        if not key.is_file():
            add(Finding("ssh_key", "failed", f"{key} does not exist",
                        "Run 'cpv config ssh --key PATH' to create it."))
        elif stat.S_IMODE(key.stat().st_mode) & 0o077:
            add(Finding("ssh_key", "failed",
                        f"{key} is readable by others (mode {stat.S_IMODE(key.stat().st_mode):o})",
                        f"Run 'chmod 600 {key}'."))
        else:
            add(Finding("ssh_key", "passed", f"{key} exists with mode 600"))

    # 5. SSH handshake and 6. git remote
    url = git_url
    template = settings.get("git_url_template")
    if url is None and template:
        url = str(template)
    target = ssh_target(url) if url else None
    if target is None and settings.get("ssh_host"):
        target = (str(settings["ssh_host"]), None, None)  # user and port from ~/.ssh/config
    if target is None:
        add(Finding("ssh_handshake", "skipped", "no SSH git host configured"))
    else:
        add(_check_handshake(target, repo_root))
    if git_url is None:
        add(Finding("git_remote", "skipped", "no repository to check (run inside one, or pass "
                    "--team and --model)"))
    else:
        add(_check_git_remote(git_url, repo_root))
    return report


def _check_handshake(target: tuple[str, str | None, int | None], cwd: Path | None) -> Finding:
    host, user, port = target
    command = [*git_ssh_command(cwd), "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-T"]
    if port:
        command += ["-p", str(port)]
    command += [f"{user}@{host}" if user else host, "true"]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=30,
                                stdin=subprocess.DEVNULL, check=False, start_new_session=True)
    except (OSError, subprocess.TimeoutExpired) as e:
        return Finding("ssh_handshake", "failed", f"ssh to {host} did not complete ({e})",
                       "Check the network and the host name.")
    # ssh exits 255 for its own failures; anything else means we got in (the host may still
    # refuse a shell, as Bitbucket does).
    if result.returncode != 255:
        return Finding("ssh_handshake", "passed", f"authenticated to {host}"
                       + (f":{port}" if port else ""))
    err = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "ssh failed"
    lowered = result.stderr.lower()
    if "host key verification failed" in lowered or "no matching host key" in lowered:
        fix = f"Accept the host key once: ssh {'-p ' + str(port) + ' ' if port else ''}{host}"
    elif "permission denied" in lowered:
        fix = "Add your public key (cpv config ssh prints it) to your account on the git host."
    else:
        fix = "Check the host, port and network ('cpv config ssh --hostname/--port')."
    return Finding("ssh_handshake", "failed", f"{host}: {err}", fix)


def _check_git_remote(url: str, cwd: Path | None) -> Finding:
    from cp_manage.backends.git import run_git
    from cp_manage.errors import GitError

    try:
        run_git(["ls-remote", "--heads", url], cwd=cwd, timeout=60)
    except GitError as e:
        return Finding("git_remote", "failed", f"{url}: {e.message}", e.hint or None)
    return Finding("git_remote", "passed", f"{url} answers")
