"""``cpv config validate --json`` against the test S3 store and SSH git host: every check passes
on a good setup, and each broken part fails on its own with a fix that names what to do."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from conftest import TEAM, Infra

MODEL = "yolov8"
CHECKS = ["credentials_file", "aws_profile", "bucket", "ssh_key", "ssh_handshake", "git_remote"]


def validate(infra: Infra, *args: str, cwd: Path, expect: int, env: dict[str, str] | None = None
             ) -> dict[str, dict[str, str]]:
    result = infra.cpv("config", "validate", "--json", *args, cwd=cwd, expect=expect, env=env)
    findings = json.loads(result.stdout)
    assert [f["check"] for f in findings] == CHECKS, result.stdout
    return {f["check"]: f for f in findings}


def statuses(findings: dict[str, dict[str, str]]) -> dict[str, str]:
    return {name: f["status"] for name, f in findings.items()}


def test_validate_passes_then_names_a_wrong_secret_key(infra: Infra) -> None:
    infra.bare_repo(MODEL)
    passing = infra.cpv("config", "validate", "--json", "--team", TEAM, "--model", MODEL,
                        cwd=infra.root)
    print(f"\n$ cpv config validate --json --team {TEAM} --model {MODEL}\n{passing.stdout}")
    findings = {f["check"]: f for f in json.loads(passing.stdout)}
    assert list(findings) == CHECKS
    assert all(f["status"] == "passed" for f in findings.values()), passing.stdout
    assert infra.s3.endpoint_url in findings["bucket"]["detail"]
    assert f":{infra.ssh.port}" in findings["ssh_handshake"]["detail"]

    # Inside a clone it checks the clone's own remote.
    infra.cpv("init", "--team", TEAM, "--model", MODEL, cwd=infra.root)
    inside = validate(infra, cwd=infra.root / MODEL, expect=0)
    assert infra.git_url(MODEL) in inside["git_remote"]["detail"]

    # git's other way to its ssh command, core.sshCommand, is honoured the same.
    infra.git("config", "--global", "core.sshCommand", infra.ssh.ssh_command, cwd=infra.root)
    by_core = validate(infra, "--team", TEAM, "--model", MODEL, cwd=infra.root, expect=0,
                       env=infra.with_env(GIT_SSH_COMMAND=None))
    assert set(statuses(by_core).values()) == {"passed"}

    infra.write_credentials(secret_key="wrong-secret-key-1234")
    wrong = infra.cpv("config", "validate", "--json", "--team", TEAM, "--model", MODEL,
                      cwd=infra.root, expect=1)
    print(f"\n$ cpv config validate --json --team {TEAM} --model {MODEL}  "
          f"# wrong secret key\n{wrong.stdout}")
    findings = {f["check"]: f for f in json.loads(wrong.stdout)}
    assert statuses(findings) == {**dict.fromkeys(CHECKS, "passed"), "bucket": "failed"}
    assert "denied" in findings["bucket"]["detail"].lower()
    assert "profile 'ml-team'" in findings["bucket"]["fix"]
    assert str(infra.credentials) in findings["bucket"]["fix"]

    # Keys in the environment take precedence over the profile, for validate as for uploads.
    env = infra.with_env(AWS_ACCESS_KEY_ID=infra.s3.access_key,
                         AWS_SECRET_ACCESS_KEY=infra.s3.secret_key)
    by_env = validate(infra, "--team", TEAM, "--model", MODEL, cwd=infra.root, expect=0,
                      env=env)
    assert by_env["credentials_file"]["detail"] == "keys come from AWS_* environment variables"
    assert statuses(by_env)["aws_profile"] == "skipped"
    assert statuses(by_env)["bucket"] == "passed"
    infra.assert_no_secrets("wrong-secret-key-1234")


def test_validate_names_each_ssh_problem(infra: Infra) -> None:
    infra.bare_repo(MODEL)
    args = ("--team", TEAM, "--model", MODEL)

    # A key the git host does not know: 'cpv config ssh' makes it, the host refuses it.
    new_key = infra.home / ".ssh" / "id_ed25519_cpv"
    made = infra.cpv("config", "ssh", "--key", new_key, "--host", "127.0.0.1", "--hostname",
                     "127.0.0.1", "--port", str(infra.ssh.port), "--user", infra.ssh.user,
                     "--ssh-config", infra.home / ".ssh" / "config", cwd=infra.root)
    assert new_key.read_text().startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    assert Path(f"{new_key}.pub").read_text().strip() in made.stdout
    refused = validate(infra, *args, cwd=infra.root, expect=1,
                       env=infra.with_env(GIT_SSH_COMMAND=infra.ssh_command_with(key=new_key)))
    assert statuses(refused)["ssh_key"] == "passed"
    assert statuses(refused)["ssh_handshake"] == "failed"
    assert "permission denied" in refused["ssh_handshake"]["detail"].lower()
    assert "public key" in refused["ssh_handshake"]["fix"]
    assert statuses(refused)["git_remote"] == "failed"

    # An unknown host key with StrictHostKeyChecking yes.
    empty = infra.root / "empty_known_hosts"
    empty.write_text("")
    unknown = validate(infra, *args, cwd=infra.root, expect=1,
                       env=infra.with_env(GIT_SSH_COMMAND=infra.ssh_command_with(
                           known_hosts=empty)))
    assert statuses(unknown)["ssh_handshake"] == "failed"
    assert "host key verification failed" in unknown["ssh_handshake"]["detail"].lower()
    assert unknown["ssh_handshake"]["fix"] == (
        f"Accept the host key once: ssh -p {infra.ssh.port} 127.0.0.1")
    assert "known_hosts" in unknown["git_remote"]["fix"]

    # A private key others can read.
    loose = infra.home / ".ssh" / "id_loose"
    shutil.copy(infra.ssh.client_key, loose)
    infra.configure_ssh(loose)
    loose.chmod(0o644)
    findings = validate(infra, *args, cwd=infra.root, expect=1)
    assert statuses(findings) == {**dict.fromkeys(CHECKS, "passed"), "ssh_key": "failed"}
    assert findings["ssh_key"]["fix"] == f"Run 'chmod 600 {loose}'."
    assert "644" in findings["ssh_key"]["detail"]


def test_the_ssh_block_cpv_writes_is_what_ssh_uses(infra: Infra) -> None:
    """The seed's flow: a host alias in ~/.ssh/config (written by 'cpv config ssh') and a
    scp-like git URL naming the alias; validate and every git operation go through it."""
    ssh_config = infra.home / ".ssh" / "config"
    ssh_config.parent.mkdir(mode=0o700, exist_ok=True)
    ssh_config.write_text("\n".join([
        "Host *",
        f"  UserKnownHostsFile {infra.ssh.known_hosts}",
        "  GlobalKnownHostsFile /dev/null",
        "  StrictHostKeyChecking yes",
        "  BatchMode yes",
        "",
    ]))
    key = infra.home / ".ssh" / "id_team"
    shutil.copy(infra.ssh.client_key, key)
    infra.configure_ssh(key, ssh_config=ssh_config, host="team-git")
    assert "Host team-git" in ssh_config.read_text()
    infra.cpv("config", "set", "git_url_template",
              f"team-git:{infra.git_host}/{{team}}/{{model}}.git", cwd=infra.root)
    env = infra.with_env(GIT_SSH_COMMAND=f"ssh -F {ssh_config}")
    infra.bare_repo(MODEL)
    findings = validate(infra, "--team", TEAM, "--model", MODEL, cwd=infra.root, expect=0,
                        env=env)
    assert findings["ssh_handshake"]["detail"] == "authenticated to team-git"
    infra.cpv("init", "--team", TEAM, "--model", MODEL, cwd=infra.root, env=env)
    assert infra.git("remote", "get-url", "origin", cwd=infra.root / MODEL) == (
        f"team-git:{infra.git_host}/{TEAM}/{MODEL}.git")
