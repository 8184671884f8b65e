"""Which git URLs are local paths and which are SSH, by git's own rule; and what validate's
SSH handshake is given for each."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import MODEL, TEAM, assert_one_error_line, run_cpv
from servers import free_ports

from cp_manage.credentials import ssh_target
from cp_manage.git_urls import parse_git_url

# url, kind, (host, user, port) for ssh, path for local
TABLE = [
    # scp-like: a colon before any slash, whatever the host is called
    ("myhost:/srv/x.git", "ssh", ("myhost", None, None), "/srv/x.git"),
    ("bitbucket:AI-Team/m.git", "ssh", ("bitbucket", None, None), "AI-Team/m.git"),
    ("git@host:x.git", "ssh", ("host", "git", None), "x.git"),
    ("git@bitbucket.org:AI-Team/{model}.git", "ssh", ("bitbucket.org", "git", None),
     "AI-Team/{model}.git"),
    ("host:~/x.git", "ssh", ("host", None, None), "~/x.git"),
    ("[::1]:srv/x.git", "ssh", ("::1", None, None), "srv/x.git"),
    ("git@[::1]:x.git", "ssh", ("::1", "git", None), "x.git"),
    ("[git@host:2222]:x.git", "ssh", ("host", "git", 2222), "x.git"),
    # local: no colon, or a slash before the first colon
    ("./a:b", "local", None, "./a:b"),
    ("/srv/a:b", "local", None, "/srv/a:b"),
    ("/srv/git/model.git", "local", None, "/srv/git/model.git"),
    ("model.git", "local", None, "model.git"),
    ("../remotes/m.git", "local", None, "../remotes/m.git"),
    ("file:///x", "local", None, "/x"),
    ("file:///srv/with%20space.git", "local", None, "/srv/with space.git"),
    # a scheme decides
    ("ssh://h/x", "ssh", ("h", None, None), "/x"),
    ("ssh://git@h:2222/x.git", "ssh", ("h", "git", 2222), "/x.git"),
    ("git+ssh://h/x", "ssh", ("h", None, None), "/x"),
    ("https://h/x", "other", None, "/x"),
    ("git://h/x", "other", None, "/x"),
    ("http://h:8080/x", "other", None, "/x"),
    ("hg::https://h/x", "other", None, ""),  # a remote helper
    ("./a://b", "other", None, ""),  # git: "protocol './a' is not supported"
]


@pytest.mark.parametrize(("url", "kind", "target", "path"), TABLE, ids=[row[0] for row in TABLE])
def test_kind_of_git_url(url: str, kind: str, target: tuple[str, str | None, int | None] | None,
                         path: str) -> None:
    parsed = parse_git_url(url)
    assert parsed.kind == kind
    assert parsed.path == path
    if kind == "ssh":
        assert (parsed.host, parsed.user, parsed.port) == target
    assert ssh_target(url) == target


@pytest.mark.parametrize("url", ["myhost:/srv/git/model.git", "myhost:AI-Team/model.git"])
def test_init_leaves_no_stray_repository_for_a_host_alias(
        url: str, workdir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A ``Host myhost`` alias whose host is down: cpv goes to it over ssh, and fails, but
    makes no local bare repository named after the URL in the current folder."""
    ssh_config = tmp_path / "ssh_config"
    ssh_config.write_text(f"Host myhost\n  HostName 127.0.0.1\n  Port {free_ports(1)[0]}\n"
                          "  BatchMode yes\n  ConnectTimeout 5\n")
    monkeypatch.setenv("GIT_SSH_COMMAND", f"ssh -F {ssh_config}")
    failed = run_cpv("init", "--team", TEAM, "--model", MODEL, "--git-url", url, cwd=workdir,
                     expect=1)
    assert "myhost" in assert_one_error_line(failed)
    assert list(workdir.iterdir()) == []
