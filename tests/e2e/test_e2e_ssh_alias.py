"""A scp-like git URL whose host is a ``Host`` alias of the SSH config is an SSH remote: ``cpv
init`` pushes to the git host through it and makes nothing in the current folder."""

from __future__ import annotations

import json

from conftest import TEAM, Infra
from servers import HOST, SSHServer

MODEL = "whisper-alias"


def test_init_pushes_to_a_host_alias(infra: Infra) -> None:
    bare = infra.bare_repo(MODEL)
    # OpenSSH reads ~/.ssh from the account's home, not $HOME: the alias lives in a config
    # given with -F, as a user's ~/.ssh/config would hold it.
    ssh_config = infra.root / "alias_ssh_config"
    ssh_config.write_text(infra.ssh.client_config.read_text().replace(
        f"Host {HOST} {SSHServer.ALIAS}", "Host myhost"))
    env = infra.with_env(GIT_SSH_COMMAND=f"ssh -F {ssh_config}")
    url = f"myhost:{bare}"
    laptop = infra.root / "laptop"
    laptop.mkdir()

    done = infra.cpv("init", "--team", TEAM, "--model", MODEL, "--git-url", url, cwd=laptop,
                     env=env)
    assert f"git remote:     {url}" in done.stdout
    repo = laptop / MODEL
    assert [p.name for p in laptop.iterdir()] == [MODEL]  # no stray repository named by the URL
    assert not (infra.cpv_home / "remotes" / "git").exists()
    assert infra.git("rev-parse", "HEAD", cwd=repo) == infra.git("rev-parse", "main", cwd=bare)
    assert infra.git("remote", "get-url", "origin", cwd=repo) == url

    # validate shakes hands with the alias, and a plain git clone from the same folder gets
    # the git host's history (not an empty local stray).
    found = json.loads(infra.cpv("config", "validate", "--json", cwd=repo, env=env).stdout)
    checks = {f["check"]: f for f in found}
    assert checks["ssh_handshake"]["detail"] == "authenticated to myhost"
    assert checks["git_remote"]["status"] == "passed"
    infra.run(["git", "clone", "--quiet", url, "copy"], cwd=laptop, env=env)
    assert infra.git("rev-parse", "HEAD", cwd=laptop / "copy") == infra.git(
        "rev-parse", "main", cwd=bare)
