"""A cpv repository: one git + DVC repository per (team, model) and its two remotes.

This is the shared lifecycle every manager stands on: creating or adopting the repository,
keeping it in step with the git remote, committing and tagging so that nothing exists on one
laptop only, and reading versions from tags alone.
"""

from __future__ import annotations

import configparser
import contextlib
import json
import logging
import random
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from cp_manage import __version__
from cp_manage.artifacts import VersionInfo
from cp_manage.backends.cache import LocalCache, StatRecord
from cp_manage.backends.git import Git, run_git
from cp_manage.backends.pointer import Pointer, parse_pointer
from cp_manage.backends.storage import Storage, open_storage
from cp_manage.config import CPVConfig
from cp_manage.errors import (
    ConcurrentModificationError,
    ConfigError,
    CPVError,
    GitError,
    NotARepositoryError,
    PointerError,
    RemoteError,
    VersionNotFoundError,
)
from cp_manage.faults import crash_point
from cp_manage.fsutil import atomic_write_bytes
from cp_manage.interrupts import critical
from cp_manage.manage.pool import WorkspacePool
from cp_manage.versions import Kind, Version, parse_version, validate_name, version_from_tag

logger = logging.getLogger(__name__)

REPO_FILE = ".cpv.json"
METRICS_FILE = "metrics.log"
MODEL_PATH = "model.bin"
DATA_PATH = "data"
STORAGE_REMOTE = "storage"
PUSH_ATTEMPTS = 30
TAG_ATTEMPTS = 30

Changes = dict[str, bytes]


@dataclass(frozen=True)
class InitResult:
    """What ``init`` did: ``created`` is False when the repository was already there."""

    path: Path
    created: bool
    cloned: bool
    git_url: str
    storage_url: str


def _is_local_url(url: str) -> bool:
    return ("://" not in url and not re.match(r"^[\w.-]+@[\w.-]+:", url)) or url.startswith(
        "file://")


class Repository:
    """A cpv repository on disk. Construct with ``Repository.open`` or ``Repository.init``."""

    def __init__(self, root: Path, *, config: CPVConfig, team: str, model: str) -> None:
        self.root = root
        self.config = config
        self.team = team
        self.model = model
        self.git = Git(root)
        self.cache = LocalCache(root / ".dvc" / "cache")
        self._private = root / ".git" / "cpv"
        self.state = StatRecord(self._private / "state.json")
        # Objects this clone has seen in storage, so an unchanged upload or a tag needs no
        # storage round trip (nor boto3's start-up); 'cpv doctor' asks the storage itself.
        self.stored = StatRecord(self._private / "stored.json")
        self.pool = WorkspacePool(self._private / "pool")
        self.skipped: dict[str, str] = {}  # tags left out of a listing, and why
        self._storage: Storage | None = None

    # -- opening -------------------------------------------------------------------------------

    @staticmethod
    def find_root(start: Path) -> Path:
        """The top of the git + DVC repository holding ``start``.

        Raises:
            NotARepositoryError: ``start`` is not inside one.
        """
        start = start.expanduser().absolute()
        if not start.exists():
            raise NotARepositoryError(str(start))
        probe = start if start.is_dir() else start.parent
        result = run_git(["rev-parse", "--show-toplevel"], cwd=probe, check=False)
        if result.returncode != 0:
            raise NotARepositoryError(str(start))
        root = Path(result.stdout.decode().strip())
        if not (root / ".dvc").is_dir():
            raise NotARepositoryError(str(start))
        return root

    @classmethod
    def open(cls, start: Path, *, config: CPVConfig, team: str | None = None,
             model: str | None = None) -> Repository:
        """Open the repository holding ``start``; team and model come from ``.cpv.json``."""
        root = cls.find_root(start)
        recorded = cls._read_repo_file(root)
        team = team or recorded.get("team") or root.parent.name
        model = model or recorded.get("model") or root.name
        if recorded and (recorded.get("team"), recorded.get("model")) != (team, model):
            raise ConfigError(
                f"{root} holds {recorded.get('team')}/{recorded.get('model')}, not {team}/{model}",
                hint="Pass the matching team and model, or another repo_path.")
        return cls(root, config=config, team=team, model=model)

    @staticmethod
    def _read_repo_file(root: Path) -> dict[str, Any]:
        try:
            data = json.loads((root / REPO_FILE).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            raise ConfigError(f"{root / REPO_FILE} is corrupt ({e})",
                              hint=f"Restore it with 'git checkout -- {REPO_FILE}'.") from e
        return data if isinstance(data, dict) else {}

    # -- init ----------------------------------------------------------------------------------

    @classmethod
    def init(cls, root: Path, *, team: str, model: str, config: CPVConfig,
             git_url: str | None = None, storage_url: str | None = None,
             force: bool = False) -> tuple[Repository, InitResult]:
        """Create (or clone, or adopt) the repository of team/model at ``root``.

        Running it again on a finished repository changes nothing (``created`` is False).

        Raises:
            InvalidNameError, ConfigError, RemoteError, StorageError.
        """
        validate_name(team, "team")
        validate_name(model, "model")
        root = root.expanduser().absolute()
        git_url = config.git_url(team, model, git_url)
        storage_url = config.storage_url(team, model, storage_url)

        if (root / ".git").exists() and (root / ".dvc").is_dir() and (root / REPO_FILE).exists():
            repo = cls.open(root, config=config, team=team, model=model)
            return repo, InitResult(root, False, False, repo.git.remote_url() or git_url,
                                    repo.storage_url())

        storage = open_storage(storage_url, config=config)
        storage.ensure_location()
        if _is_local_url(git_url):
            cls._ensure_bare_remote(Path(git_url.removeprefix("file://")))

        if (root / ".git").exists():
            repo = cls(root, config=config, team=team, model=model)
            repo._adopt(git_url, storage_url)
            return repo, InitResult(root, True, False, git_url, storage_url)

        if root.exists() and any(root.iterdir()) and not force:
            raise ConfigError(f"{root} exists and is not empty",
                              hint="Choose another --path, or pass force=True / --force to "
                              "initialise inside it.")
        heads = run_git(["ls-remote", "--heads", git_url], cwd=None).stdout.strip()
        if heads:
            # Someone made this model already: take the team's history instead of a new one.
            root.parent.mkdir(parents=True, exist_ok=True)
            run_git(["clone", "--quiet", "--", git_url, str(root)], cwd=root.parent)
            clone = Git(root)
            if clone.head() is None and clone.rev_parse("refs/remotes/origin/main"):
                # The host's HEAD names a branch that does not exist (a host whose default is
                # master, say), so nothing was checked out: take main, the branch cpv pushes.
                clone.run("checkout", "--quiet", "-B", "main", "--track", "origin/main")
            repo = cls.open(root, config=config, team=team, model=model)
            return repo, InitResult(root, True, True, git_url, repo.storage_url())

        root.mkdir(parents=True, exist_ok=True)
        run_git(["init", "--quiet", "--initial-branch=main"], cwd=root)
        repo = cls(root, config=config, team=team, model=model)
        repo._write_skeleton(storage_url)
        repo.git.run("remote", "add", "origin", git_url)
        commit = repo.git.commit_paths(repo._skeleton_paths(), f"Initialize {team}/{model}")
        try:
            repo.git.push(f"{commit}:refs/heads/main")
            repo.git.run("branch", "--quiet", "--set-upstream-to=origin/main", check=False)
        except RemoteError:
            logger.warning("Created %s but could not push it; the next command retries", root)
            raise
        return repo, InitResult(root, True, False, git_url, storage_url)

    @staticmethod
    def _ensure_bare_remote(path: Path) -> None:
        if (path / "HEAD").exists():
            return
        path.mkdir(parents=True, exist_ok=True)
        run_git(["init", "--quiet", "--bare", "--initial-branch=main"], cwd=path)

    def _skeleton_paths(self) -> list[str]:
        return [REPO_FILE, "README.md", "train.py", ".gitignore", METRICS_FILE, ".dvcignore",
                ".dvc/config", ".dvc/.gitignore"]

    def _write_skeleton(self, storage_url: str) -> None:
        from cp_manage.manage import templates

        files = {
            REPO_FILE: self._repo_file_bytes(),
            "README.md": templates.readme(self.team, self.model).encode(),
            "train.py": templates.train_script(self.team, self.model).encode(),
            ".gitignore": f"/{MODEL_PATH}\n/{DATA_PATH}\n".encode(),
            METRICS_FILE: b"",
            ".dvcignore": templates.DVCIGNORE.encode(),
            ".dvc/.gitignore": b"/config.local\n/tmp\n/cache\n",
        }
        for name, content in files.items():
            target = self.root / name
            if not target.exists():
                atomic_write_bytes(target, content)
        self._write_dvc_config(storage_url)

    def _repo_file_bytes(self) -> bytes:
        return (json.dumps({"team": self.team, "model": self.model, "format": 1}, indent=2)
                + "\n").encode()

    def _write_dvc_config(self, storage_url: str) -> None:
        """Name the storage remote in ``.dvc/config``: what teammates share, never secrets."""
        parser = configparser.ConfigParser()
        path = self.root / ".dvc" / "config"
        if path.exists():
            parser.read(path, encoding="utf-8")
        section = f"'remote \"{STORAGE_REMOTE}\"'"
        if not parser.has_section("core"):
            parser.add_section("core")
        parser.set("core", "remote", STORAGE_REMOTE)
        if not parser.has_section(section):
            parser.add_section(section)
        parser.set(section, "url", storage_url)
        settings = self.config.get_config()
        if storage_url.startswith("s3://"):
            for key, option in (("endpoint_url", "endpointurl"), ("region", "region")):
                if settings.get(key):
                    parser.set(section, option, settings[key])
        lines = []
        for name in parser.sections():
            lines.append(f"[{name}]")
            lines += [f"    {k} = {v}" for k, v in parser.items(name, raw=True)]
        atomic_write_bytes(path, ("\n".join(lines) + "\n").encode())

    def _adopt(self, git_url: str, storage_url: str) -> None:
        """Make a hand-made git (+ DVC) repository a cpv repository, keeping its history."""
        (self.root / ".dvc").mkdir(exist_ok=True)
        self._write_skeleton(self.storage_url_or(storage_url))
        if self.git.remote_url() is None:
            self.git.run("remote", "add", "origin", git_url)
        paths = [p for p in self._skeleton_paths() if (self.root / p).exists()]
        if self.git.branch() is None:
            raise GitError("The repository to adopt has no branch checked out",
                           hint="Check out a branch (git switch main), then run init again.")
        self.commit_and_push(lambda _head: {p: (self.root / p).read_bytes() for p in paths},
                             f"Adopt {self.team}/{self.model} into cpv", write=False)

    # -- remotes -------------------------------------------------------------------------------

    def storage_url_or(self, default: str) -> str:
        try:
            return self.storage_url()
        except ConfigError:
            return default

    def storage_url(self) -> str:
        """The DVC default remote's URL from ``.dvc/config``."""
        parser = configparser.ConfigParser()
        parser.read(self.root / ".dvc" / "config", encoding="utf-8")
        name = parser.get("core", "remote", fallback=None)
        url = parser.get(f"'remote \"{name}\"'", "url", fallback=None) if name else None
        if not url:
            raise ConfigError(f"{self.root} has no DVC default remote",
                              hint="Run 'cpv init' in it again, or "
                              "'dvc remote add -d storage URL'.")
        if "://" not in url and not Path(url).is_absolute():
            url = str((self.root / ".dvc" / url).resolve())
        return url

    def missing_in_storage(self, oids: Iterable[str]) -> set[str]:
        """Those of ``oids`` not in storage, asking storage only about unrecorded ones."""
        url = self.storage_url()
        unknown = {oid for oid in oids if not self.stored.has(f"{url}\0{oid}")}
        missing = self.storage.missing(unknown) if unknown else set()
        self.record_stored(unknown - missing)
        return missing

    def record_stored(self, oids: Iterable[str]) -> None:
        url = self.storage_url()
        for oid in oids:
            self.stored.mark(f"{url}\0{oid}")

    def warm_up_storage(self) -> None:
        """Start connecting to storage in the background, where that is slow (S3)."""
        warm_up = getattr(self.storage, "warm_up", None)
        if warm_up is not None:
            warm_up()

    @property
    def storage(self) -> Storage:
        if self._storage is None:
            self._storage = open_storage(self.storage_url(), config=self.config)
        return self._storage

    # -- locking and syncing -------------------------------------------------------------------

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """One cpv writer at a time in this clone (other clones coordinate through the remote)."""
        self._private.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(self._private / "lock"))
        try:
            lock.acquire(timeout=600)
        except Timeout as e:
            raise ConcurrentModificationError(
                f"Another cpv command is still running in {self.root}",
                hint="Wait for it to finish, then run this command again.") from e
        try:
            yield
        finally:
            self.cache.flush()  # nothing is recorded about an object before it is on disk
            self.state.save()
            self.stored.save()
            lock.release()

    def branch(self) -> str:
        branch = self.git.branch()
        if branch is None:
            raise GitError(f"{self.root} has no branch checked out (detached HEAD)",
                           hint="Run 'git switch main' (or your branch), then try again.")
        return branch

    def sync(self) -> None:
        """Fetch the branch and tags; fast-forward when the remote is ahead.

        Raises:
            ConcurrentModificationError: local and remote history diverged.
        """
        branch = self.branch()
        try:
            self.git.fetch(f"+refs/heads/{branch}:refs/remotes/origin/{branch}", "--tags")
        except RemoteError as e:
            if "couldn't find remote ref" in e.stderr:
                return
            raise
        remote = self.git.rev_parse(f"refs/remotes/origin/{branch}")
        head = self.git.head()
        if remote is None or head == remote or (head and self.git.is_ancestor(remote, head)):
            return
        if head is None or self.git.is_ancestor(head, remote):
            self.git.run("merge", "--ff-only", "--quiet", remote)
            return
        raise ConcurrentModificationError(
            f"The local branch {branch} and origin/{branch} have diverged",
            hint="Run 'git pull --rebase' (or push your own commits), then run the command again.")

    def fetch_tags_quietly(self) -> None:
        """Bring in teammates' versions; on failure (offline) carry on with what is local."""
        try:
            self.git.fetch("--tags")
        except RemoteError as e:
            logger.warning("Could not fetch versions from the git remote (%s); showing local "
                           "versions only", e.message)

    def commit_and_push(self, make_changes: Callable[[str | None], Changes], message: str, *,
                        write: bool = True, on_pushed: Callable[[], None] | None = None
                        ) -> str | None:
        """Commit the files ``make_changes(head)`` returns and push, replaying on a race.

        ``make_changes`` computes file contents from the current HEAD, so when another writer
        pushed first the change is recomputed on top of theirs. Returns the new commit, or None
        when nothing differs from HEAD. A failed push takes the local commit back.

        Writing, committing, pushing and ``on_pushed`` (the caller's bookkeeping once the remote
        holds the change) form one critical section: a SIGINT or SIGTERM arriving meanwhile is
        raised only once the commit is on the remote (and says so) or taken back.
        """
        branch = self.branch()
        for attempt in range(PUSH_ATTEMPTS):
            self.sync()
            head = self.git.head()
            changes = make_changes(head)
            if head and all(self.git.show(head, p) == c for p, c in changes.items()):
                # Already committed: perhaps by a run that died before its push. Finish it.
                with critical():
                    self.push_head_if_needed()
                    if on_pushed is not None:
                        on_pushed()
                return None
            pushed = False
            with critical():
                if write:
                    for path, content in changes.items():
                        atomic_write_bytes(self.root / path, content)
                commit = self.git.commit_paths(sorted(changes), message)
                crash_point("after_commit")
                try:
                    self.git.push(f"{commit}:refs/heads/{branch}")
                except RemoteError as e:
                    self.git.undo_commit(commit)
                    if not (is_lost_race(e) and attempt + 1 < PUSH_ATTEMPTS):
                        raise
                else:
                    pushed = True
                    self.git.run("update-ref", f"refs/remotes/origin/{branch}", commit,
                                 check=False)
                    if on_pushed is not None:
                        on_pushed()
            if pushed:
                crash_point("after_push")
                return commit
            logger.info("The remote moved on; replaying on top of it")
            backoff(attempt)
        raise ConcurrentModificationError("Gave up after repeated races with other writers")

    def remote_head(self) -> str | None:
        return self.git.rev_parse(f"refs/remotes/origin/{self.branch()}")

    def push_head_if_needed(self) -> None:
        """Push HEAD when the remote branch does not contain it yet."""
        head, remote = self.git.head(), self.remote_head()
        if head and (remote is None or not self.git.is_ancestor(head, remote)):
            with critical():
                self.git.push(f"{head}:refs/heads/{self.branch()}")
                self.git.run("update-ref", f"refs/remotes/origin/{self.branch()}", head,
                             check=False)

    def remote_tags(self) -> set[str]:
        """Tag names on the git remote (one ls-remote call)."""
        listing = self.git.out("ls-remote", "--tags", "--refs", "origin")
        return {line.split("\t", 1)[1].removeprefix("refs/tags/")
                for line in listing.splitlines() if "\t" in line}

    def push_tags(self, tags: dict[str, str], commit: str) -> None:
        """Create annotated tags (name → message) on ``commit`` and push them in one atomic
        transaction, with the commit when the remote lacks it. On any failure no tag remains.
        """
        branch = self.branch()
        created: list[str] = []
        with critical():  # a signal waits: the tags are then on the remote, or nowhere
            try:
                for name, message in tags.items():
                    self.git.create_tag(name, message, commit)
                    created.append(name)
                crash_point("after_tag_created")
                refspecs = [f"refs/tags/{name}" for name in tags]
                remote = self.git.rev_parse(f"refs/remotes/origin/{branch}")
                if remote is None or not self.git.is_ancestor(commit, remote):
                    refspecs.insert(0, f"{commit}:refs/heads/{branch}")
                self.git.push(*refspecs)
            except BaseException:
                self.git.delete_tags(*created)
                raise
        crash_point("after_tag_pushed")

    def push_versions(self, head: str, propose: Callable[[], dict[str, str] | None], *,
                      retry: bool) -> dict[str, str] | None:
        """Push the annotated tags ``propose()`` names onto ``head`` in one atomic push.

        ``propose`` runs after each fetch of the remote's tags, so it sees every version taken
        so far, and returns ``{tag: message}`` (or None: nothing to push). When another writer
        takes one of the names first and ``retry`` is set, it runs again after a pause, so an
        automatic version moves on to the next free number.

        Returns:
            What was pushed, or None when ``propose`` returned None.

        Raises:
            CPVError: the push failed (``is_lost_race`` tells whether it lost a race; with
                ``retry`` it did not).
            ConcurrentModificationError: every one of ``TAG_ATTEMPTS`` attempts lost a race.
        """
        for attempt in range(TAG_ATTEMPTS):
            self.fetch_tags_quietly()
            tags = propose()
            if tags is None:
                return None
            try:
                self.push_tags(tags, head)
            except CPVError as e:
                if not (retry and is_lost_race(e)):
                    raise
                if attempt + 1 == TAG_ATTEMPTS:
                    raise ConcurrentModificationError(
                        f"Gave up after {TAG_ATTEMPTS} lost races for a version",
                        hint="Many writers are tagging at once; run the command again.") from e
                logger.info("%s taken meanwhile; trying the next version", ", ".join(tags))
                backoff(attempt)
                continue
            return tags
        raise AssertionError("unreachable")

    # -- reading -------------------------------------------------------------------------------

    def head_or_raise(self) -> str:
        head = self.git.head()
        if head is None:
            raise CPVError(f"{self.root} has no commits yet", hint="Run 'cpv init' first.")
        return head

    def pointer_at(self, commit: str, path: str) -> Pointer | None:
        raw = self.git.show(commit, f"{path}.dvc")
        if raw is None:
            return None
        return parse_pointer(raw, source=f"{path}.dvc", expected_path=Path(path).name)

    def workspace_pointer(self, path: str) -> Pointer | None:
        """The pointer file as it is in the working tree (validated)."""
        target = self.root / f"{path}.dvc"
        if not target.exists():
            return None
        return parse_pointer(target.read_bytes(), source=f"{path}.dvc",
                             expected_path=Path(path).name)

    def metrics_at(self, commit: str | None) -> dict[str, Any]:
        raw = self.git.show(commit, METRICS_FILE) if commit else None
        return last_metrics(raw or b"")

    def versions(self, kind: Kind, *, fetch: bool = True) -> list[VersionInfo]:
        """Every version of ``kind``, oldest first by number, read from tags alone."""
        if fetch:
            self.fetch_tags_quietly()
        pattern = "data/" if kind == "data" else "v*"
        found: list[tuple[Version, VersionInfo]] = []
        for record in self.git.tags(pattern):
            number = version_from_tag(record.name, kind)
            if number is None:
                continue
            info = VersionInfo.from_tag(record.name, record.commit, record.contents)
            if info is None or info.kind != kind:
                try:
                    info = self.info_from_commit(kind, record.commit, tag=record.name)
                except PointerError as e:
                    # A tag cpv did not write, on a broken commit: list the others.
                    self.skipped[record.name] = str(e)
                    continue
                if info is None:
                    continue
            info.version = str(number)
            found.append((number, info))
        result = [info for _, info in sorted(found, key=lambda pair: pair[0])]
        if kind == "model" and any((i.data_version or "").startswith("md5:") for i in result):
            # Lineage recorded before its data was tagged: name the data by its tag now.
            data_tags = {i.md5: i.tag for i in self.versions("data", fetch=False)}
            for info in result:
                if info.data_version and info.data_version.startswith("md5:"):
                    info.data_version = data_tags.get(info.data_version[4:], info.data_version)
        return result

    def version_numbers(self, kind: Kind) -> list[Version]:
        return [parse_version(info.version, kind="model") for info in self.versions(
            kind, fetch=False) if info.version]

    def resolve(self, kind: Kind, version: str | None) -> tuple[str, VersionInfo]:
        """The commit and metadata of ``version`` (HEAD when None).

        Raises:
            InvalidVersionError, VersionNotFoundError, NothingToDoError.
        """
        if version is None:
            head = self.head_or_raise()
            info = self.info_from_commit(kind, head, tag=None)
            if info is None:
                raise VersionNotFoundError("HEAD", known=None, kind=kind)
            return head, info
        number = parse_version(version, kind=kind)
        tag = number.tag(kind)
        for attempt in range(2):
            for info in self.versions(kind, fetch=attempt == 1):
                if info.tag == tag and info.commit:
                    return info.commit, info
        commit = self.git.rev_parse(f"refs/tags/{tag}")
        if commit is not None:
            # The tag exists but was skipped from the listing: say why (a broken pointer).
            found = self.info_from_commit(kind, commit, tag=tag)
            if found is not None:
                found.version = str(number)
                return commit, found
        raise VersionNotFoundError(str(number), kind=kind,
                                   known=[str(i.version) for i in self.versions(kind, fetch=False)])

    def info_from_commit(self, kind: Kind, commit: str, *, tag: str | None) -> VersionInfo | None:
        """Metadata computed from a commit's pointer and metrics (HEAD, or a foreign tag)."""
        path = DATA_PATH if kind == "data" else MODEL_PATH
        pointer = self.pointer_at(commit, path)
        if pointer is None:
            return None
        date, author, subject = self.git.out(
            "log", "-1", "--format=%aI%x00%an <%ae>%x00%s", commit).split("\0", 2)
        return VersionInfo(
            kind=kind, version=None, tag=tag, path=pointer.path, md5=pointer.md5,
            size_bytes=pointer.size, metrics=self.metrics_at(commit) if kind == "model" else {},
            created_at=date, author=author, message=subject, cpv_version=__version__,
            commit=commit, team=self.team, model=self.model, file_count=pointer.nfiles,
            data_version=self.data_version_at(commit) if kind == "model" else None,
        )

    def data_version_at(self, commit: str) -> str | None:
        """Lineage: the data tag whose dataset the commit holds, else ``md5:<hash>``."""
        pointer = self.pointer_at(commit, DATA_PATH)
        if pointer is None:
            return None
        for info in reversed(self.versions("data", fetch=False)):
            if info.md5 == pointer.md5:
                return info.tag
        return f"md5:{pointer.md5}"

    def author(self) -> str:
        result = self.git.run("var", "GIT_COMMITTER_IDENT", check=False)
        ident = result.stdout.decode("utf-8", "replace").strip()
        return re.sub(r"\s+\d+\s+[+-]\d{4}$", "", ident) or "unknown"


def backoff(attempt: int) -> None:
    """Sleep a little, more after each lost race, with jitter so writers spread out."""
    time.sleep(random.uniform(0, min(2.0, 0.05 * 2 ** attempt)))


def is_lost_race(error: CPVError) -> bool:
    """Whether a push failed because another writer moved the branch or took a tag first."""
    text = str(getattr(error, "stderr", "")).lower()
    return any(s in text for s in ("non-fast-forward", "fetch first", "already exists",
                                   "[rejected]", "stale info", "cannot lock ref"))


def last_metrics(raw: bytes) -> dict[str, Any]:
    """The current metrics: the last JSON object line of ``metrics.log``."""
    for raw_line in reversed(raw.decode("utf-8", "replace").splitlines()):
        line = raw_line.strip()
        if not line:
            continue
        try:
            value = json.loads(line)
        except ValueError:
            continue
        return value if isinstance(value, dict) else {}
    return {}


def append_metrics(raw: bytes | None, metrics: dict[str, Any]) -> bytes:
    text = (raw or b"").decode("utf-8", "replace")
    if text and not text.endswith("\n"):
        text += "\n"
    return (text + json.dumps(metrics, sort_keys=True, allow_nan=False) + "\n").encode()


def ensure_ignored(raw: bytes | None, path: str) -> bytes:
    """``.gitignore`` with ``/path`` in it (DVC-tracked artifacts never enter git)."""
    text = (raw or b"").decode("utf-8", "replace")
    entry = f"/{path}"
    if entry in text.splitlines():
        return text.encode()
    if text and not text.endswith("\n"):
        text += "\n"
    return (text + entry + "\n").encode()


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
