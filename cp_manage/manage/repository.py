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

from cp_manage.artifacts import VersionInfo
from cp_manage.backends.cache import LocalCache, StatRecord
from cp_manage.backends.git import Git, check_identity, run_git
from cp_manage.backends.pointer import Pointer, parse_pointer
from cp_manage.backends.storage import LocalStorage, Storage, open_storage
from cp_manage.config import CPVConfig
from cp_manage.errors import (
    ConcurrentModificationError,
    ConfigError,
    CPVError,
    GitError,
    InvalidNameError,
    NotARepositoryError,
    RemoteError,
    VersionNotFoundError,
)
from cp_manage.faults import crash_point
from cp_manage.fsutil import atomic_write_bytes
from cp_manage.git_urls import parse_git_url
from cp_manage.interrupts import critical
from cp_manage.locking import exclusive
from cp_manage.manage.catalog import DATA_PATH as DATA_PATH  # noqa: PLC0414 - re-exported
from cp_manage.manage.catalog import METRICS_FILE as METRICS_FILE  # noqa: PLC0414
from cp_manage.manage.catalog import MODEL_PATH as MODEL_PATH  # noqa: PLC0414
from cp_manage.manage.catalog import Catalog
from cp_manage.manage.catalog import last_metrics as last_metrics  # noqa: PLC0414
from cp_manage.manage.pool import WorkspacePool
from cp_manage.spec import DATA, ArtifactSpec
from cp_manage.versions import Kind, Version, validate_name

logger = logging.getLogger(__name__)

REPO_FILE = ".cpv.json"
STORAGE_REMOTE = "storage"
PUSH_ATTEMPTS = 30
TAG_ATTEMPTS = 30

Changes = dict[str, bytes]

IGNORE_COMMENT = "# cpv's temporary files"
TEMPORARY_PATTERNS = ("*.cpv-tmp", "*.cpv-tmpdir", "*.cpv-old", "*.cpv-discarded",
                      "*.cpv-partial", "*.cpv-state")
"""What cpv writes beside the files it replaces: half-written files and folders, an old
dataset being swapped out, work a forced revert set aside, partial transfers a rerun continues
(with their state). None of it belongs in git."""


@dataclass(frozen=True)
class InitResult:
    """What ``init`` did: ``created`` is False when the repository was already there."""

    path: Path
    created: bool
    cloned: bool
    git_url: str
    storage_url: str


class Repository:
    """A cpv repository on disk. Construct with ``Repository.open`` or ``Repository.init``."""

    def __init__(self, root: Path, *, config: CPVConfig, team: str, model: str,
                 artifact: str | None = None) -> None:
        self.root = root
        self.config = config
        self.team = team
        self.model = model
        self.model_spec = ArtifactSpec.model(artifact)
        """The model artifact chosen at init (``model.bin`` when ``.cpv.json`` names none)."""
        self.git = Git(root)
        self.catalog = Catalog(self.git, team, model)
        """The versions this clone's tags hold (``versions`` and ``resolve`` fetch first)."""
        self.cache = LocalCache(root / ".dvc" / "cache")
        self._private = root / ".git" / "cpv"
        self.state = StatRecord(self._private / "state.json")
        self.pool = WorkspacePool(self._private / "pool")
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
        artifact = recorded.get("artifact")
        try:
            if artifact is not None and not isinstance(artifact, str):
                raise InvalidNameError(f"{artifact!r} is not a name")
            return cls(root, config=config, team=team, model=model, artifact=artifact)
        except InvalidNameError as e:
            # .cpv.json comes from git, so from whoever could push: refused, never followed.
            raise ConfigError(f"{root / REPO_FILE} names an unusable artifact: {e.message}",
                              hint=f"Restore it with 'git checkout -- {REPO_FILE}'.") from e

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
             force: bool = False, artifact: str | None = None) -> tuple[Repository, InitResult]:
        """Create (or clone, or adopt) the repository of team/model at ``root``.

        Running it again on a finished repository changes nothing (``created`` is False); on
        one whose first run failed (nothing committed, or the commit never reached the git
        remote) it finishes the work. ``artifact`` names the model artifact (default
        ``model.bin``; ``NAME/`` is a folder); an existing repository keeps its own, and naming
        another one is an error.

        Raises:
            InvalidNameError, ConfigError, GitError (no git identity), RemoteError,
            StorageError.
        """
        validate_name(team, "team")
        validate_name(model, "model")
        if artifact is not None:
            ArtifactSpec.model(artifact)  # refuse a bad name before anything is created
        root = root.expanduser().absolute()
        git_url = config.git_url(team, model, git_url)
        storage_url = config.storage_url(team, model, storage_url)

        adopting = (root / ".git").exists()
        if adopting and (root / ".dvc").is_dir() and (root / REPO_FILE).exists():
            repo = cls.open(root, config=config, team=team, model=model)
            repo._check_artifact(artifact)
            if repo._published():
                return repo, InitResult(root, False, False, repo.git.remote_url() or git_url,
                                        repo.storage_url())
        # Everything that can be refused without side effects is checked before anything
        # (folder, bare remote, storage) is made.
        check_identity(root if adopting else _nearest_folder(root))
        if not adopting and root.exists() and any(root.iterdir()) and not force:
            raise ConfigError(f"{root} exists and is not empty",
                              hint="Choose another --path, or pass force=True / --force to "
                              "initialise inside it.")
        if adopting:
            git_url = Git(root).remote_url() or git_url  # its own remote, if it has one
        remote = parse_git_url(git_url)
        local_remote = Path(remote.path).expanduser().absolute() if remote.kind == "local" else None
        if local_remote is not None and not remote.scheme:
            git_url = str(local_remote)  # git would read a relative path from inside root

        storage = open_storage(storage_url, config=config)
        storage.ensure_location()
        if local_remote is not None:
            cls._ensure_bare_remote(local_remote)

        if adopting:
            recorded = cls._read_repo_file(root).get("artifact")
            repo = cls(root, config=config, team=team, model=model,
                       artifact=artifact or (recorded if isinstance(recorded, str) else None))
            repo._adopt(git_url, storage_url)
            return repo, InitResult(root, True, False, repo.git.remote_url() or git_url,
                                    repo.storage_url())

        try:
            heads = run_git(["ls-remote", "--heads", git_url], cwd=None).stdout.strip()
        except RemoteError as e:
            raise RemoteError(f"Cannot read the git remote {git_url}", command=e.command,
                              stderr=e.stderr, hint=e.hint) from e
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
            repo._check_artifact(artifact)
            return repo, InitResult(root, True, True, git_url, repo.storage_url())

        root.mkdir(parents=True, exist_ok=True)
        run_git(["init", "--quiet", "--initial-branch=main"], cwd=root)
        repo = cls(root, config=config, team=team, model=model, artifact=artifact)
        repo._write_skeleton(storage_url)
        repo.git.run("remote", "add", "origin", git_url)
        commit = repo.git.commit_paths(repo._skeleton_paths(), f"Initialize {team}/{model}")
        try:
            repo.git.push(f"{commit}:refs/heads/main")
            repo.git.run("branch", "--quiet", "--set-upstream-to=origin/main", check=False)
        except RemoteError as e:
            e.hint = f"{e.hint} {root} is kept: 'cpv init' run again pushes it.".lstrip()
            raise
        return repo, InitResult(root, True, False, git_url, storage_url)

    def _check_artifact(self, artifact: str | None) -> None:
        """An existing repository keeps the artifact it was made with."""
        if artifact is not None and ArtifactSpec.model(artifact) != self.model_spec:
            raise ConfigError(
                f"{self.team}/{self.model} versions the artifact {self.model_spec.name!r}, "
                f"not {artifact!r}",
                hint=f"Drop --artifact (or pass --artifact {self.model_spec.name}); a "
                "repository versions one artifact, chosen when it was made.")

    def _published(self) -> bool:
        """Whether HEAD has history and the git remote is known to hold its first commit."""
        roots = self.git.run("rev-list", "--max-parents=0", "HEAD", check=False)
        first = roots.stdout.decode().split()[:1] if roots.returncode == 0 else []
        return bool(first) and bool(self.git.out(
            "for-each-ref", "--count=1", f"--contains={first[0]}", "refs/remotes/origin"))

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
            "README.md": templates.readme(self.team, self.model, self.model_spec).encode(),
            "train.py": templates.train_script(self.team, self.model, self.model_spec).encode(),
            ".gitignore": ensure_ignored(f"/{self.model_spec.path}\n/{DATA_PATH}\n".encode(),
                                         self.model_spec.path, temporary=True),
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
        recorded = {"team": self.team, "model": self.model, "format": 1,
                    "artifact": self.model_spec.name}
        return (json.dumps(recorded, indent=2) + "\n").encode()

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
        branch = self.git.branch()
        if branch is None:
            raise GitError("The repository to adopt has no branch checked out",
                           hint="Check out a branch (git switch main), then run init again.")
        # No commit yet: an init that failed before its first commit, finished now.
        message = (f"Initialize {self.team}/{self.model}" if self.git.head() is None
                   else f"Adopt {self.team}/{self.model} into cpv")
        self.commit_and_push(lambda _head: {p: (self.root / p).read_bytes() for p in paths},
                             message, write=False)
        if self.git.run("rev-parse", "--verify", "--quiet", "@{upstream}",
                        check=False).returncode != 0:
            self.git.run("branch", "--quiet", f"--set-upstream-to=origin/{branch}", check=False)

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
        """Those of ``oids`` not in storage, as storage itself says now (one stat or HEAD
        each, or one listing). No record of what was uploaded once is trusted instead:
        objects can be removed from storage behind cpv's back (``dvc gc -c``, a clean-up).
        """
        return self.storage.missing(oids)

    def warn_if_storage_folder_is_gone(self) -> None:
        """Warn when a local storage folder is gone (one stat): what needed no storage, such as
        a download served from the local cache, succeeds, but the user must hear of it. S3 is
        not asked here: that would be a round trip, or fail offline."""
        storage = self.storage
        if isinstance(storage, LocalStorage) and not storage.root.is_dir():
            logger.warning("The storage folder %s does not exist (is the share that holds it "
                           "mounted?); this came from the local cache, but uploads, tags and "
                           "downloads of anything not cached fail until it is back",
                           storage.root)

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
        with exclusive(self._private / "lock",
                       f"Another cpv command is still running in {self.root}"):
            try:
                yield
            finally:
                self.cache.flush()  # nothing is recorded about an object before it is on disk
                self.state.save()

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
        return self.catalog.pointer_at(commit, path)

    def workspace_pointer(self, path: str) -> Pointer | None:
        """The pointer file as it is in the working tree (validated)."""
        target = self.root / f"{path}.dvc"
        if not target.exists():
            return None
        return parse_pointer(target.read_bytes(), source=f"{path}.dvc",
                             expected_path=Path(path).name)

    def metrics_at(self, commit: str | None) -> dict[str, Any]:
        return self.catalog.metrics_at(commit)

    def spec(self, kind: Kind) -> ArtifactSpec:
        """The artifact of ``kind``: this repository's model, or its data."""
        return self.model_spec if kind == self.model_spec.kind else DATA

    def versions(self, spec: ArtifactSpec, *, fetch: bool = True) -> list[VersionInfo]:
        """Every version of ``spec``, oldest first by number, read from tags alone (after
        fetching the remote's, unless ``fetch`` is False)."""
        if fetch:
            self.fetch_tags_quietly()
        return self.catalog.versions(spec)

    def version_numbers(self, spec: ArtifactSpec) -> list[Version]:
        return [spec.parse(info.version) for info in self.versions(spec, fetch=False)
                if info.version]

    def resolve(self, spec: ArtifactSpec, version: str | None) -> tuple[str, VersionInfo]:
        """The commit and metadata of ``version`` (HEAD when None: HEAD's version, exactly as
        by its name, when HEAD carries one); the remote's tags are fetched only when the version
        is not known here.

        Raises:
            InvalidVersionError, VersionNotFoundError, NothingToDoError.
        """
        if version is None:
            head = self.head_or_raise()
            on_head = [i for i in self.versions(spec, fetch=False) if i.commit == head]
            if on_head:
                return head, on_head[-1]
            info = self.info_from_commit(spec, head, tag=None)
            if info is None:
                raise VersionNotFoundError("HEAD", known=None, kind=spec.kind)
            return head, info
        found = self.catalog.find(spec, version)
        if found is not None:
            return found
        self.fetch_tags_quietly()
        return self.catalog.resolve(spec, version)

    def info_from_commit(self, spec: ArtifactSpec, commit: str, *,
                         tag: str | None) -> VersionInfo | None:
        return self.catalog.info_from_commit(spec, commit, tag=tag)

    def data_version_at(self, commit: str) -> str | None:
        return self.catalog.data_version_at(commit)

    def author(self) -> str:
        result = self.git.run("var", "GIT_COMMITTER_IDENT", check=False)
        ident = result.stdout.decode("utf-8", "replace").strip()
        return re.sub(r"\s+\d+\s+[+-]\d{4}$", "", ident) or "unknown"


def _nearest_folder(path: Path) -> Path:
    """``path``, or its closest ancestor that exists as a folder."""
    while not path.is_dir() and path != path.parent:
        path = path.parent
    return path


def backoff(attempt: int) -> None:
    """Sleep a little, more after each lost race, with jitter so writers spread out."""
    time.sleep(random.uniform(0, min(2.0, 0.05 * 2 ** attempt)))


def is_lost_race(error: CPVError) -> bool:
    """Whether a push failed because another writer moved the branch or took a tag first."""
    text = str(getattr(error, "stderr", "")).lower()
    return any(s in text for s in ("non-fast-forward", "fetch first", "already exists",
                                   "[rejected]", "stale info", "cannot lock ref"))


def append_metrics(raw: bytes | None, metrics: dict[str, Any]) -> bytes:
    text = (raw or b"").decode("utf-8", "replace")
    if text and not text.endswith("\n"):
        text += "\n"
    return (text + json.dumps(metrics, sort_keys=True, allow_nan=False) + "\n").encode()


def ensure_ignored(raw: bytes | None, path: str, *, temporary: bool = False) -> bytes:
    """``.gitignore`` with ``/path`` in it (DVC-tracked artifacts never enter git) and, with
    ``temporary``, the patterns of cpv's temporary files."""
    text = (raw or b"").decode("utf-8", "replace")
    lines = text.splitlines()
    missing = [f"/{path}"] if f"/{path}" not in lines else []
    if temporary and not set(TEMPORARY_PATTERNS) <= set(lines):
        missing += [IGNORE_COMMENT] if IGNORE_COMMENT not in lines else []
        missing += [p for p in TEMPORARY_PATTERNS if p not in lines]
    if not missing:
        return text.encode()
    if text and not text.endswith("\n"):
        text += "\n"
    return (text + "".join(f"{line}\n" for line in missing)).encode()


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
