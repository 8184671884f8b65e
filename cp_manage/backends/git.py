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
from cp_manage.errors import ConfigError, GitError, PushRejectedError, RemoteError
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
_HELD_BACK = {"atomic push failed", "atomic push failure", "atomic transaction failed"}
"""The reasons ``push --porcelain`` gives a ref that was refused only because another ref of
the same atomic push was (git's client says the first two, depending on its version; the
remote the last, when its ref transaction failed)."""


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

    def show_many(self, revpaths: list[str]) -> list[bytes | None]:
        """The bytes of each ``rev:path`` (None where absent), in one git call."""
        if not revpaths:
            return []
        raw = self.run("cat-file", "--batch", input_bytes="".join(
            f"{item}\n" for item in revpaths).encode()).stdout
        found: list[bytes | None] = []
        at = 0
        for _ in revpaths:
            end = raw.index(b"\n", at)
            header = raw[at:end].split()
            at = end + 1
            if len(header) == 3 and header[1] != b"missing":
                size = int(header[2])
                found.append(raw[at:at + size] if header[1] == b"blob" else None)
                at += size + 1
            else:
                found.append(None)
        return found

    def commits_by_prefix(self, prefix: str) -> list[str]:
        """The commits whose hash starts with ``prefix`` (at least 4 hex digits); refs of that
        name are not consulted."""
        candidates = self.run("rev-parse", f"--disambiguate={prefix}", check=False
                              ).stdout.decode().split()
        if not candidates:
            return []
        types = self.run("cat-file", "--batch-check=%(objectname) %(objecttype)",
                         input_bytes="".join(f"{c}\n" for c in candidates).encode()).stdout
        return [line.split()[0] for line in types.decode().splitlines()
                if line.endswith(" commit")]

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

    def push_new_tag(self, name: str, message: str, commit: str) -> None:
        """Create the annotated tag ``name`` on the remote, then here.

        The tag object is written without a ref, pushed as ``ID:refs/tags/NAME`` (refused when
        the remote has that tag already: ``PushRejectedError``), and only then given the local
        ref, under ``critical()``: a tag exists locally only once the remote holds it, and a
        process killed in between leaves nothing to clean up.
        """
        ref = f"refs/tags/{name}"
        with critical():  # a signal waits: the tag is then on the remote, or nowhere
            ident = self.run("var", "GIT_COMMITTER_IDENT").stdout.decode().strip()
            body = f"object {commit}\ntype commit\ntag {name}\ntagger {ident}\n\n{message}"
            oid = self.run("hash-object", "-t", "tag", "-w", "--stdin",
                           input_bytes=body.encode()).stdout.decode().strip()
            self.push(f"{oid}:{ref}")
            self.run("update-ref", ref, oid)

    def delete_tags(self, *names: str) -> None:
        if names:
            self.run("tag", "--delete", "--", *names, check=False)

    def fetch(self, *refspecs: str, remote: str = "origin", missing_ok: bool = False) -> bool:
        """Fetch ``refspecs`` from ``remote``.

        Returns:
            True; False (having fetched nothing) when ``missing_ok`` and a ref the refspecs
            name is not on the remote (a branch not pushed yet).

        Raises:
            RemoteError: the fetch failed.
        """
        try:
            self.run("fetch", "--quiet", "--no-write-fetch-head", remote, *refspecs)
        except RemoteError as e:
            if missing_ok and "couldn't find remote ref" in e.stderr:
                return False
            raise
        return True

    def push(self, *refspecs: str, remote: str = "origin") -> None:
        """Push all ``refspecs`` in one atomic transaction: all of them land or none does.

        A critical section: SIGINT or SIGTERM arriving meanwhile waits until git has finished
        (within ``PUSH_TIMEOUT``), so cpv always knows whether the refs landed, and what landed
        is recorded for the interruption to report.

        Raises:
            PushRejectedError: refs were refused; its fields say which, why, and what the
                remote's hooks said.
            RemoteError: the push failed otherwise (an unreachable remote, say).
        """
        args = ["push", "--quiet", "--atomic", "--porcelain", remote, *refspecs]
        with critical():
            result = self.run(*args, check=False, timeout=PUSH_TIMEOUT)
            if result.returncode == 0:
                record_kept(_describe(refspecs))
                return
            stderr = result.stderr.decode("utf-8", "replace")
            report = result.stdout.decode("utf-8", "replace")
            rejection = _rejection(report, stderr)
            if rejection is None:
                raise RemoteError("git push failed", command=["git", *args],
                                  stderr=f"{stderr}\n{report}", hint=_hint_for(stderr))
            rejection.command, rejection.stderr = ["git", *args], f"{stderr}\n{report}"
            raise rejection


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


def _rejection(report: str, stderr: str) -> PushRejectedError | None:
    """What ``push --porcelain`` reports (``<flag>TAB<src>:<dst>TAB<summary>`` lines, ``!``
    for a refused ref) as a PushRejectedError; None when no ref was refused (e.g. the remote
    is unreachable)."""
    rejected: dict[str, str] = {}
    held_back: dict[str, str] = {}
    accepted: list[str] = []
    for line in report.splitlines():
        fields = line.split("\t")
        if len(fields) < 3 or len(fields[0]) != 1:
            continue  # "To <url>", "Done"
        ref = fields[1].rsplit(":", 1)[-1]
        if fields[0] != "!":
            accepted.append(ref)
            continue
        # "[rejected] (fetch first)", "[remote rejected] (hook declined)", "[no match]"
        summary = re.fullmatch(r"\[([^]]*)\](?: \((.*)\))?", fields[2].strip())
        reason = (summary.group(2) or summary.group(1)) if summary else fields[2].strip()
        if reason in _HELD_BACK:
            held_back[ref] = reason
        else:
            rejected[ref] = reason
    if not rejected and not held_back:
        return None
    said = [re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", line[len("remote:"):]).strip()
            for line in stderr.splitlines() if line.startswith("remote:")]
    said = [line for line in said if line and "hook declined to update" not in line]
    # The remote's failed ref transaction names the one ref it could not update and why:
    # another push changed it a moment earlier.
    for line in said:
        locked = re.match(r"(?:error: )?(cannot lock ref '([^']+)': .*)", line)
        if locked and locked.group(2) in held_back:
            del held_back[locked.group(2)]
            rejected[locked.group(2)] = locked.group(1)
    if not rejected:  # no ref to blame: the reasons given are all there is
        rejected, held_back = held_back, {}
    text = "the remote refused " + ", ".join(f"{ref} ({why})" for ref, why in rejected.items())
    detail = f"{text} (it said: {' / '.join(said)})" if said else text
    return PushRejectedError(
        "git push failed", rejected=rejected, held_back=list(held_back), accepted=accepted,
        remote_said=said, detail=detail,
        hint="The git remote's own rules refused it (see what it said); nothing was changed "
        "there. Resolve that with whoever runs the remote, then run the command again.")
