"""A cpv repository: one git + DVC repository per (team, model) and its two remotes.

This is what every manager stands on: the repository's parts (git, the DVC cache, storage, the
catalog of versions) and one writer at a time in a clone. Each concern lives in its own module
and is reached through here: creating or adopting the repository in ``setup``, keeping in step
with the git remote and publishing commits and tags in ``publishing``, reading versions from
tags alone in ``catalog``.
"""

from __future__ import annotations

import configparser
import contextlib
import json
import logging
import re
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cp_manage.artifacts import VersionInfo
from cp_manage.backends.cache import LocalCache, StatRecord
from cp_manage.backends.git import Git, run_git
from cp_manage.backends.pointer import Pointer, parse_pointer
from cp_manage.backends.storage import LocalStorage, Storage, open_storage
from cp_manage.config import CPVConfig
from cp_manage.errors import (
    ConfigError,
    CPVError,
    InvalidNameError,
    NotARepositoryError,
    VersionNotFoundError,
)
from cp_manage.fsutil import atomic_write_bytes
from cp_manage.locking import exclusive
from cp_manage.manage.catalog import DATA_PATH as DATA_PATH  # noqa: PLC0414 - re-exported
from cp_manage.manage.catalog import METRICS_FILE as METRICS_FILE  # noqa: PLC0414
from cp_manage.manage.catalog import MODEL_PATH as MODEL_PATH  # noqa: PLC0414
from cp_manage.manage.catalog import Catalog
from cp_manage.manage.catalog import last_metrics as last_metrics  # noqa: PLC0414
from cp_manage.manage.pool import WorkspacePool
from cp_manage.manage.publishing import PUSH_ATTEMPTS as PUSH_ATTEMPTS  # noqa: PLC0414
from cp_manage.manage.publishing import TAG_ATTEMPTS as TAG_ATTEMPTS  # noqa: PLC0414
from cp_manage.manage.publishing import Changes as Changes  # noqa: PLC0414
from cp_manage.manage.publishing import Publisher
from cp_manage.manage.publishing import backoff as backoff  # noqa: PLC0414
from cp_manage.manage.publishing import is_lost_race as is_lost_race  # noqa: PLC0414
from cp_manage.manage.setup import IGNORE_COMMENT as IGNORE_COMMENT  # noqa: PLC0414
from cp_manage.manage.setup import REPO_FILE as REPO_FILE  # noqa: PLC0414
from cp_manage.manage.setup import STORAGE_REMOTE as STORAGE_REMOTE  # noqa: PLC0414
from cp_manage.manage.setup import TEMPORARY_PATTERNS as TEMPORARY_PATTERNS  # noqa: PLC0414
from cp_manage.manage.setup import InitResult as InitResult  # noqa: PLC0414
from cp_manage.manage.setup import ensure_ignored as ensure_ignored  # noqa: PLC0414
from cp_manage.manage.setup import init_repository, read_repo_file
from cp_manage.spec import DATA, ArtifactSpec
from cp_manage.swap import recover
from cp_manage.versions import Kind, Version

logger = logging.getLogger(__name__)

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
        self.publisher = Publisher(self.git, root)
        """Keeps this clone in step with its git remote and publishes to it."""

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
        recorded = read_repo_file(root)
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
        return init_repository(cls, root, team=team, model=model, config=config,
                               git_url=git_url, storage_url=storage_url, force=force,
                               artifact=artifact)

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
            for spec in (self.model_spec, DATA):
                if recover(self.root / spec.path):  # a swap killed half-way: see cp_manage.swap
                    logger.warning("Put back %s, which an interrupted command had set aside",
                                   spec.path)
            try:
                yield
            finally:
                self.cache.flush()  # nothing is recorded about an object before it is on disk
                self.state.save()

    def exclude_temporaries(self) -> None:
        """Make git ignore cpv's temporary files in this clone from now on (through
        ``.git/info/exclude``), whatever the committed ``.gitignore`` says: one written before
        cpv listed them gets them only with its next commit."""
        path = self.root / ".git" / "info" / "exclude"
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            text = ""
        except (OSError, UnicodeDecodeError):
            return  # not a plain .git folder: .gitignore covers new repositories
        missing = [pattern for pattern in TEMPORARY_PATTERNS if pattern not in text.splitlines()]
        if missing:
            if text and not text.endswith("\n"):
                text += "\n"
            atomic_write_bytes(path, (text + "".join(
                f"{line}\n" for line in [IGNORE_COMMENT, *missing])).encode())

    def branch(self) -> str:
        """The branch checked out (GitError when HEAD is detached)."""
        return self.publisher.branch()

    # -- publishing (see ``publishing.Publisher``) ----------------------------------------------

    def sync(self) -> None:
        """Fetch the branch and tags; fast-forward when the remote is ahead."""
        self.publisher.sync()

    def fetch_tags_quietly(self) -> None:
        """Bring in teammates' versions; on failure (offline) carry on with what is local."""
        self.publisher.fetch_tags_quietly()

    def commit_and_push(self, make_changes: Callable[[str | None], Changes], message: str, *,
                        write: bool = True, on_pushed: Callable[[], None] | None = None
                        ) -> str | None:
        """Commit the files ``make_changes(head)`` returns and push, replaying on a race."""
        return self.publisher.commit_and_push(make_changes, message, write=write,
                                              on_pushed=on_pushed)

    def remote_head(self) -> str | None:
        return self.publisher.remote_head()

    def push_head_if_needed(self) -> None:
        """Push HEAD when the remote branch does not contain it yet."""
        self.publisher.push_head_if_needed()

    def remote_tags(self) -> set[str]:
        """Tag names on the git remote (one ls-remote call)."""
        return self.publisher.remote_tags()

    def push_tags(self, tags: dict[str, str], commit: str) -> None:
        """Create annotated tags on ``commit`` and push them in one atomic transaction."""
        self.publisher.push_tags(tags, commit)

    def push_versions(self, head: str, propose: Callable[[], dict[str, str] | None], *,
                      retry: bool) -> dict[str, str] | None:
        """Push the annotated tags ``propose()`` names onto ``head`` in one atomic push."""
        return self.publisher.push_versions(head, propose, retry=retry)

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


def append_metrics(raw: bytes | None, metrics: dict[str, Any]) -> bytes:
    text = (raw or b"").decode("utf-8", "replace")
    if text and not text.endswith("\n"):
        text += "\n"
    return (text + json.dumps(metrics, sort_keys=True, allow_nan=False) + "\n").encode()


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
