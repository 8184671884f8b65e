"""Reading and fetching versions on a machine that has no clone: from the configuration alone.

The git URL comes from ``git_url_template``. The remote's tags are fetched with the history
behind them (small: pointers, metrics, code; no branch) into a bare mirror under
``$CPV_HOME/mirrors``. The history is what dates an untagged artifact by its upload, as in a
clone. The same ``Catalog`` a clone uses then lists and describes the versions, and a download
takes only its version's objects from storage. Without a clone there is no HEAD: no version
means the latest one. The model's artifact (a file or a folder) is the one the newest tagged
commit's ``.cpv.json`` names.
"""

from __future__ import annotations

import configparser
import json
import logging
import shutil

from cp_manage.artifacts import VersionInfo
from cp_manage.backends.cache import LocalCache
from cp_manage.backends.git import Git, run_git
from cp_manage.backends.storage import Storage, open_storage
from cp_manage.config import CPVConfig
from cp_manage.errors import (
    ConfigError,
    CPVError,
    RemoteError,
    VersionNotFoundError,
)
from cp_manage.locking import exclusive
from cp_manage.manage.catalog import Catalog
from cp_manage.manage.repository import REPO_FILE, STORAGE_REMOTE
from cp_manage.spec import DATA, ArtifactSpec
from cp_manage.versions import Kind

logger = logging.getLogger(__name__)


class DetachedSource:
    """The team's versions of one model without a clone: a ``VersionSource`` (catalog, cache
    and storage) backed by a bare mirror of the git remote's tags."""

    def __init__(self, config: CPVConfig, team: str, model: str) -> None:
        self.config = config
        self.team, self.model = team, model
        self.git_url = config.git_url(team, model)
        self.mirror = config.home / "mirrors" / team / f"{model}.git"
        self.git = Git(self.mirror)
        self.catalog = Catalog(self.git, team, model)
        self.cache = LocalCache(config.home / "cache" / team / model)
        self._fetched = False
        self._storage_commit: str | None = None
        self._storage: Storage | None = None
        self._model_spec: ArtifactSpec | None = None

    # -- the mirror ----------------------------------------------------------------------------

    def refresh(self) -> None:
        """Bring the mirror's tags in step with the git remote (once per instance).

        Every tag comes with its commit and that commit's files (pointers, ``metrics.log``,
        ``.dvc/config``), never their history. When the remote cannot be reached but the
        mirror holds tags from an earlier run, those are used, with a warning.

        Raises:
            RemoteError: the remote cannot be reached (or holds no such repository) and
                nothing was fetched from it before.
        """
        if self._fetched:
            return
        self.mirror.parent.mkdir(parents=True, exist_ok=True)
        with exclusive(self.mirror.parent / f"{self.model}.git.lock",
                       f"Another cpv command is still fetching into {self.mirror}"):
            created = not (self.mirror / "HEAD").exists()
            if created:
                self.mirror.mkdir(exist_ok=True)
                run_git(["init", "--quiet", "--bare"], cwd=self.mirror)
            try:
                self._fetch_tags()
            except RemoteError as e:
                if created:
                    shutil.rmtree(self.mirror, ignore_errors=True)  # e.g. a mistyped model
                if created or not self.git.out("for-each-ref", "--count=1", "refs/tags"):
                    raise RemoteError(f"Cannot read the versions of {self.team}/{self.model} "
                                      f"from {self.git_url}", command=e.command,
                                      stderr=e.stderr, hint=e.hint) from e
                logger.warning("Could not fetch versions from %s (%s); showing those fetched "
                               "before", self.git_url, e.message)
        self._fetched = True

    def _fetch_tags(self) -> None:
        args = ["fetch", "--quiet", "--no-write-fetch-head", "--prune", "--no-tags",
                self.git_url, "+refs/tags/*:refs/tags/*"]
        if self.git.run(*args, check=False).returncode == 0:
            return
        # A fetch that matches no ref may fail without a word: either the remote has no
        # tags (no version yet) or the fetch failed. The remote's listing tells which.
        if run_git(["ls-remote", "--tags", "--refs", self.git_url], cwd=None).stdout.strip():
            self.git.run(*args)  # it failed: again, to raise its readable error
        self.git.delete_tags(*self.git.out("tag").split())  # as --prune would have done

    # -- reading (VersionSource) ---------------------------------------------------------------

    def spec(self, kind: Kind) -> ArtifactSpec:
        """The artifact of ``kind``: for the model, the one the ``.cpv.json`` of the newest
        tagged commit names (``model.bin`` when it names none); for data, ``data/``.

        Raises:
            ConfigError: that ``.cpv.json`` is corrupt or names an unusable artifact.
        """
        if kind == DATA.kind:
            return DATA
        if self._model_spec is None:
            self.refresh()
            newest = self.git.run("rev-list", "-1", "--tags", check=False).stdout.decode().strip()
            raw = self.git.show(newest, REPO_FILE) if newest else None
            try:
                recorded = json.loads(raw or b"{}")
                artifact = recorded.get("artifact") if isinstance(recorded, dict) else None
                self._model_spec = ArtifactSpec.model(
                    artifact if isinstance(artifact, str) else None)
            except (ValueError, CPVError) as e:
                raise ConfigError(f"The {REPO_FILE} of {self.git_url} names no usable "
                                  f"artifact ({e})", hint="Restore it in the repository and "
                                  "push.") from e
        return self._model_spec

    def versions(self, spec: ArtifactSpec) -> list[VersionInfo]:
        """Every version of ``spec`` on the git remote, oldest first."""
        self.refresh()
        return self.catalog.versions(spec)

    def resolve(self, spec: ArtifactSpec, version: str | None) -> tuple[str, VersionInfo]:
        """The commit and metadata of ``version`` (the latest when None).

        Raises:
            InvalidVersionError, VersionNotFoundError, PointerError, RemoteError.
        """
        self.refresh()
        try:
            if version is None:
                latest = self.catalog.versions(spec)
                if not latest or latest[-1].commit is None:
                    raise VersionNotFoundError("(latest)", known=[], kind=spec.kind)
                found = latest[-1].commit, latest[-1]
            else:
                found = self.catalog.resolve(spec, version)
        except VersionNotFoundError as e:
            # The listing that works here names the model: no clone says which.
            kind = spec.kind
            e.hint = e.hint.replace(f"'cpv {kind} list'",
                                    f"'cpv {kind} list --team {self.team} --model {self.model}'")
            raise
        if found[0] != self._storage_commit:
            self._storage_commit, self._storage = found[0], None
        return found

    # -- objects (for downloads) ---------------------------------------------------------------

    @property
    def storage(self) -> Storage:
        """The storage the ``.dvc/config`` of the last resolved version names."""
        if self._storage is None:
            assert self._storage_commit is not None, "resolve() a version first"
            self._storage = open_storage(self._storage_url(self._storage_commit),
                                         config=self.config)
        return self._storage

    def _storage_url(self, commit: str) -> str:
        parser = configparser.ConfigParser()
        parser.read_string((self.git.show(commit, ".dvc/config") or b"").decode())
        name = parser.get("core", "remote", fallback=STORAGE_REMOTE)
        url = parser.get(f"'remote \"{name}\"'", "url", fallback=None)
        if not url:
            raise ConfigError(f"{self.git_url} names no DVC storage remote")
        if "://" not in url and not url.startswith("/"):
            # A relative local remote only makes sense inside a clone: use the configured one.
            url = self.config.storage_url(self.team, self.model)
        return url
