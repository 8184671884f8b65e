"""The git backend: the only code that runs git, through the git CLI.

The CLI (not a binding) is used on purpose: it honours the user's ``GIT_SSH_COMMAND``,
``core.sshCommand``, credential helpers and hooks exactly as ``git push`` in a terminal does, and
``push --atomic`` is a real atomic transaction on the server. Every failure becomes a GitError
carrying the command and git's stderr.
"""

from __future__ import annotations

import configparser
import logging
import math
import os
import re
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

from cp_manage.config import CPVConfig, timeout_setting
from cp_manage.errors import ConfigError, GitError, RemoteError
from cp_manage.git_urls import parse_git_url
from cp_manage.interrupts import critical, record_kept

logger = logging.getLogger(__name__)

TIMEOUT = 600
PUSH_TIMEOUT = 120
"""A push carries only commits and tags (the large files go to storage), so it is quick; and
Ctrl-C waits for a push to finish, so a git host that stopped answering must not hold it long."""
STOP_GRACE = 5
_REMOTE_COMMANDS = {"push", "fetch", "clone", "ls-remote", "pull"}
_DOING = {"push": "pushing to", "fetch": "fetching from", "clone": "cloning",
          "ls-remote": "reading the refs of", "pull": "pulling from"}
# What ssh and curl say when the other side went silent.
_STALLED = ("timed out", "timeout, server", "not responding", "operation too slow")
# Never ask a question on a terminal: the library does not prompt.
_ENV = {"GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C", "LANGUAGE": "C", "GIT_ASKPASS": "true"}


@dataclass(frozen=True)
class TagRecord:
    """An annotated tag as read by ``for-each-ref``."""

    name: str
    commit: str
    contents: str
    tagger_date: str


def run_git(args: list[str], *, cwd: Path | None, input_bytes: bytes | None = None,
            env: dict[str, str] | None = None, timeout: float = TIMEOUT,
            check: bool = True) -> subprocess.CompletedProcess[bytes]:
    """Run ``git *args`` in ``cwd``; raise GitError (RemoteError for network verbs) on failure.

    A command that talks to the git host is bounded (``remote_timeout``): ssh and curl give
    up on a host that stops answering, and git itself is stopped after twice that.
    """
    command = ["git", "-c", "core.quotepath=false", *args]
    bound: float | None = None
    if args[0] in _REMOTE_COMMANDS:
        bound = remote_timeout()
        env = {**stall_env(cwd, bound, ssh=not _local_remote(args, cwd)), **(env or {})}
        timeout = min(timeout, 2 * bound)
    try:
        process = subprocess.Popen(
            command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env={**os.environ, **_ENV, **(env or {})},
            # A new session has no controlling terminal, so ssh cannot prompt either, and the
            # terminal's Ctrl-C reaches cpv alone: cpv decides whether git is stopped.
            start_new_session=True,
            stdin=subprocess.PIPE if input_bytes is not None else subprocess.DEVNULL,
        )
    except FileNotFoundError as e:
        raise GitError("git is not installed", command=command,
                       hint="Install git and make sure it is on PATH.") from e
    with process:
        try:
            out, err = process.communicate(input_bytes, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            _stop(process)
            if bound is not None:
                raise _stalled(args, cwd, command, f"did not finish {_doing(args, cwd)} within "
                               f"{timeout:g} s", "") from e
            raise GitError(f"git {args[0]} timed out after {timeout:.0f} s", command=command,
                           hint="Check the network and the git host, then run the command "
                           "again.") from e
        except BaseException:  # interrupted: stop git the way that lets it remove its locks
            _stop(process)
            raise
    result = subprocess.CompletedProcess(command, process.returncode, out, err)
    if check and result.returncode != 0:
        # push --porcelain reports each ref's fate ("[rejected] (fetch first)") on stdout.
        stderr = result.stderr.decode("utf-8", "replace") + (
            result.stdout.decode("utf-8", "replace") if args[0] == "push" else "")
        if bound is not None and any(sign in stderr.lower() for sign in _STALLED):
            raise _stalled(args, cwd, command, f"did not answer for {bound:g} s while "
                           f"{_doing(args, cwd)}", stderr)
        error_type = RemoteError if args[0] in _REMOTE_COMMANDS else GitError
        raise error_type(f"git {args[0]} failed", command=command, stderr=stderr,
                         hint=_hint_for(stderr))
    return result


def remote_timeout() -> float:
    """Seconds cpv waits for a git host that does not answer: ``CPV_GIT_TIMEOUT``, else
    ``git_timeout`` in config.json, else ``DEFAULT_TIMEOUT``.

    Raises:
        ConfigError: the value is not a number of seconds above 0.
    """
    try:
        settings = CPVConfig().get_config()
    except ConfigError:  # config.json unreadable: it is reported where it matters
        settings = {"git_timeout": os.environ.get("CPV_GIT_TIMEOUT")}
    return timeout_setting(settings, "git_timeout")


def stall_env(cwd: Path | None, bound: float, *, ssh: bool = True) -> dict[str, str]:
    """Environment that makes ssh and curl give up on a git host silent for ``bound`` s
    (``ssh`` False: the remote is on this machine, ssh is not involved).

    Over http(s), curl aborts a transfer slower than 1 byte/s for that long. Over ssh, the
    user's own ssh command (``GIT_SSH_COMMAND``, else ``core.sshCommand``, else ssh) gets a
    connection and handshake timeout and keep-alives that give up after that long; options
    the command already sets win (ssh takes the first value it is given). A command that is
    not OpenSSH, or a ``GIT_SSH`` program, is left as it is: git's own timeout bounds it.
    """
    seconds = str(math.ceil(bound))
    env = {name: os.environ.get(name, value) for name, value in (
        ("GIT_HTTP_LOW_SPEED_LIMIT", "1"), ("GIT_HTTP_LOW_SPEED_TIME", seconds))}
    if not ssh:
        return env
    command = os.environ.get("GIT_SSH_COMMAND") or (
        None if os.environ.get("GIT_SSH") else _configured_ssh_command(cwd) or "ssh")
    try:
        program = shlex.split(command)[0] if command else ""
    except ValueError:
        program = ""
    if command and os.path.basename(program) in ("ssh", "ssh.exe"):
        interval = max(1, math.ceil(bound / 3))
        env["GIT_SSH_COMMAND"] = (f"{command} -o ConnectTimeout={seconds} -o "
                                  f"ServerAliveInterval={interval} -o ServerAliveCountMax=3")
    return env


def _remote_operand(args: list[str]) -> str:
    """The remote a remote command names: its first argument that is no option (a URL or a
    remote's name), else ``origin``."""
    operands = [arg for arg in args[1:] if not arg.startswith("-")]
    return operands[0] if operands else "origin"


def _local_remote(args: list[str], cwd: Path | None) -> bool:
    """Whether a remote command certainly talks to a repository on this machine (the embedded
    default remote): then no ssh settings are looked up. Read from the URL given, or from the
    clone's own ``.git/config``; when unsure, False."""
    remote = _remote_operand(args)
    if cwd is not None and "/" not in remote and ":" not in remote:
        parser = configparser.RawConfigParser(strict=False)
        try:
            parser.read(cwd / ".git" / "config", encoding="utf-8")
            remote = parser.get(f'remote "{remote}"', "url")
        except (configparser.Error, OSError, UnicodeDecodeError):
            return False
    return parse_git_url(remote.strip()).kind == "local"


def _configured_ssh_command(cwd: Path | None) -> str | None:
    result = subprocess.run(["git", "config", "--get", "core.sshCommand"], cwd=cwd,
                            capture_output=True, text=True, timeout=30, check=False,
                            env={**os.environ, **_ENV})
    return result.stdout.strip() or None


def _doing(args: list[str], cwd: Path | None) -> str:
    """What a remote command was doing, naming the remote's URL: "pushing to ssh://…"."""
    return f"{_DOING.get(args[0], args[0])} {_remote_url(args, cwd)}"


def _remote_url(args: list[str], cwd: Path | None) -> str:
    """The URL a remote command talks to (a remote's name resolved to its URL)."""
    remote = _remote_operand(args)
    if cwd is not None and "/" not in remote and ":" not in remote:
        result = subprocess.run(["git", "remote", "get-url", remote], cwd=cwd,
                                capture_output=True, text=True, timeout=30, check=False)
        remote = result.stdout.strip() or remote
    return remote


def _stalled(args: list[str], cwd: Path | None, command: list[str], what: str,
             stderr: str) -> RemoteError:
    """The error for a git host that stopped answering: "The git host H did not answer …"."""
    parsed = parse_git_url(_remote_url(args, cwd))
    host = f"{parsed.host}:{parsed.port}" if parsed.host and parsed.port else parsed.host
    who = f"The git host {host}" if host else "The git remote"
    return RemoteError(f"{who} {what}", command=command, stderr=stderr,
                       detail="", hint="Check that the git host is up and reachable, then run "
                       "the same command again. CPV_GIT_TIMEOUT (or 'cpv config set "
                       "git_timeout SECONDS') sets how long cpv waits for an answer.")


def _stop(process: subprocess.Popen[bytes]) -> None:
    """End git with SIGTERM, on which it removes its lock files (``index.lock``, ref locks),
    unlike after SIGKILL, which would leave them to break the next command; SIGKILL only if
    it does not end within ``STOP_GRACE`` seconds."""
    process.terminate()
    try:
        process.wait(STOP_GRACE)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _hint_for(stderr: str) -> str:
    lowered = stderr.lower()
    if "please tell me who you are" in lowered or "empty ident" in lowered:
        return ("Set your identity: git config --global user.name 'Your Name' && "
                "git config --global user.email you@example.com.")
    if "host key verification failed" in lowered:
        return ("The git host's SSH key is unknown: connect once with ssh to accept it, or add it "
                "to ~/.ssh/known_hosts.")
    if "permission denied (publickey" in lowered:
        return "The git host refused your SSH key: run 'cpv config ssh' and add the public key."
    if "could not read from remote" in lowered or "does not appear to be a git" in lowered:
        return "Check that the git remote exists and is reachable, then run the command again."
    if "could not resolve host" in lowered or "connection refused" in lowered:
        return "The git host is unreachable: check the network and the remote URL."
    return "Run the command again with --verbose for details."


def check_identity(cwd: Path) -> None:
    """Make sure git can name the author and committer of a commit made in ``cwd``.

    Raises:
        GitError: no identity (user.name / user.email) is configured, and git will not guess.
    """
    for variable in ("GIT_AUTHOR_IDENT", "GIT_COMMITTER_IDENT"):
        result = run_git(["var", variable], cwd=cwd, check=False)
        if result.returncode != 0:
            raise GitError(
                "git does not know who you are, so it cannot commit",
                command=["git", "var", variable], stderr=result.stderr.decode("utf-8", "replace"),
                hint="Set your identity with git config --global user.name 'Your Name' and "
                "git config --global user.email you@example.com, then run the command again.")


class Git:
    """A git repository on disk."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def run(self, *args: str, input_bytes: bytes | None = None, check: bool = True,
            env: dict[str, str] | None = None, timeout: float = TIMEOUT
            ) -> subprocess.CompletedProcess[bytes]:
        logger.debug("git %s", " ".join(args))
        return run_git(list(args), cwd=self.root, input_bytes=input_bytes, check=check, env=env,
                       timeout=timeout)

    def out(self, *args: str) -> str:
        return self.run(*args).stdout.decode("utf-8", "replace").strip()

    # -- reading -------------------------------------------------------------------------------

    def rev_parse(self, rev: str) -> str | None:
        """The full hash of ``rev`` (peeled to a commit), or None when it does not exist."""
        result = self.run("rev-parse", "--verify", "--quiet", "--end-of-options",
                          f"{rev}^{{commit}}", check=False)
        return result.stdout.decode().strip() if result.returncode == 0 else None

    def head(self) -> str | None:
        return self.rev_parse("HEAD")

    def branch(self) -> str | None:
        result = self.run("symbolic-ref", "--quiet", "--short", "HEAD", check=False)
        return result.stdout.decode().strip() if result.returncode == 0 else None

    def show(self, rev: str, path: str) -> bytes | None:
        """The bytes of ``path`` at ``rev``, or None when it is absent there."""
        result = self.run("cat-file", "blob", f"{rev}:{path}", check=False)
        return result.stdout if result.returncode == 0 else None

    def tags(self, pattern: str) -> list[TagRecord]:
        """Every annotated tag matching ``pattern`` with its message, in one git call."""
        fmt = "%(refname:strip=2)%00%(*objectname)%00%(taggerdate:iso-strict)%00%(contents)%00%00"
        raw = self.run("for-each-ref", f"--format={fmt}", f"refs/tags/{pattern}").stdout
        records = []
        for entry in raw.decode("utf-8", "replace").split("\0\0\n"):
            if not entry.strip("\n"):
                continue
            name, commit, date, contents = [*entry.split("\0", 3), "", "", ""][:4]
            if commit:  # lightweight tags have no peeled object; cpv only writes annotated ones
                records.append(TagRecord(name=name.strip("\n"), commit=commit, contents=contents,
                                         tagger_date=date))
        return records

    def tags_at(self, commit: str) -> list[str]:
        return self.out("tag", "--points-at", commit).splitlines()

    def is_ancestor(self, older: str, newer: str) -> bool:
        return self.run("merge-base", "--is-ancestor", older, newer, check=False).returncode == 0

    def remote_url(self, name: str = "origin") -> str | None:
        result = self.run("remote", "get-url", name, check=False)
        return result.stdout.decode().strip() if result.returncode == 0 else None

    def is_dirty(self, path: str) -> bool:
        return bool(self.out("status", "--porcelain", "--", path))

    # -- writing -------------------------------------------------------------------------------

    def commit_paths(self, paths: list[str], message: str) -> str:
        """Commit exactly ``paths`` as they are in the working tree; other staged work stays."""
        self.run("add", "--", *paths)
        self.run("commit", "--quiet", "--no-verify", "-m", message, "--only", "--", *paths)
        head = self.head()
        assert head is not None
        return head

    def undo_commit(self, commit: str) -> None:
        """Take back ``commit`` (the tip) keeping unrelated work: reset --keep to its parent."""
        if self.head() == commit:
            self.run("reset", "--quiet", "--keep", f"{commit}~1")

    def create_tag(self, name: str, message: str, commit: str) -> None:
        self.run("tag", "--annotate", "--cleanup=verbatim", "--file=-", "--", name, commit,
                 input_bytes=message.encode())

    def delete_tags(self, *names: str) -> None:
        if names:
            self.run("tag", "--delete", "--", *names, check=False)

    def fetch(self, *refspecs: str, remote: str = "origin") -> None:
        self.run("fetch", "--quiet", "--no-write-fetch-head", remote, *refspecs)

    def push(self, *refspecs: str, remote: str = "origin") -> None:
        """Push all ``refspecs`` in one atomic transaction: all of them land or none does.

        A critical section: SIGINT or SIGTERM arriving meanwhile waits until git has finished
        (within ``PUSH_TIMEOUT``), so cpv always knows whether the refs landed, and what landed
        is recorded for the interruption to report.

        Raises:
            RemoteError: naming the refs the remote refused, why, and what its hooks said.
        """
        args = ["push", "--quiet", "--atomic", "--porcelain", remote, *refspecs]
        with critical():
            result = self.run(*args, check=False, timeout=PUSH_TIMEOUT)
            if result.returncode == 0:
                record_kept(_describe(refspecs))
                return
            stderr = result.stderr.decode("utf-8", "replace")
            report = result.stdout.decode("utf-8", "replace")
            detail = _refusal(report, stderr)
            hint = _hint_for(stderr) if detail is None else (
                "The git remote's own rules refused it (see what it said); nothing was changed "
                "there. Resolve that with whoever runs the remote, then run the command again.")
            raise RemoteError("git push failed", command=["git", *args],
                              stderr=f"{stderr}\n{report}", hint=hint, detail=detail)


def _describe(refspecs: tuple[str, ...]) -> str:
    """What pushing ``refspecs`` put on the remote, in words: "tag v0.3 and commit 1a2b… on
    main"."""
    tags, others = [], []
    for refspec in refspecs:
        source, _, target = refspec.rpartition(":")
        target = target.lstrip("+")
        if target.startswith("refs/tags/"):
            tags.append(target.removeprefix("refs/tags/"))
        elif target.startswith("refs/heads/") and re.fullmatch(r"[0-9a-f]{40,64}", source):
            others.append(f"commit {source[:10]} on {target.removeprefix('refs/heads/')}")
        else:
            others.append(f"{source} as {target}" if source else target)
    words = ([f"{'tags' if len(tags) > 1 else 'tag'} {', '.join(tags)}"] if tags else []) + others
    return " and ".join(words)


def _refusal(report: str, stderr: str) -> str | None:
    """What ``push --porcelain`` says was refused (``!<TAB>src:dst<TAB>[reason]`` lines), and
    the remote's own words; None when nothing was refused (e.g. the remote is unreachable)."""
    refused = []
    for line in report.splitlines():
        fields = line.split("\t")
        if line.startswith("!") and len(fields) >= 3 and "atomic push failure" not in fields[2]:
            refused.append(f"{fields[1].rsplit(':', 1)[-1]} {fields[2]}")
    if not refused:
        return None
    said = [re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", line[len("remote:"):]).strip()
            for line in stderr.splitlines() if line.startswith("remote:")]
    said = [line for line in said if line and "hook declined to update" not in line]
    text = f"the remote refused {', '.join(refused)}"
    return f"{text} (it said: {' / '.join(said)})" if said else text
