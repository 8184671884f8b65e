"""Fetching a version on a machine that has no clone: from the configuration alone.

The git URL comes from ``git_url_template``; only the version's tag is fetched, shallow, into a
bare mirror under ``$CPV_HOME/mirrors``, and only that version's objects come from storage.
"""

from __future__ import annotations

import configparser
import json
import logging

from cp_manage.artifacts import VersionInfo
from cp_manage.backends.cache import LocalCache
from cp_manage.backends.git import Git, run_git
from cp_manage.backends.pointer import Pointer, parse_pointer
from cp_manage.backends.storage import Storage, open_storage
from cp_manage.config import CPVConfig
from cp_manage.errors import ConfigError, VersionNotFoundError
from cp_manage.manage.repository import REPO_FILE, STORAGE_REMOTE
from cp_manage.spec import DATA, ArtifactSpec
from cp_manage.versions import Kind, Version

logger = logging.getLogger(__name__)


class DetachedSource:
    """The parts of a repository a download needs (``cache``, ``storage``), without a clone."""

    def __init__(self, config: CPVConfig, team: str, model: str) -> None:
        self.config = config
        self.team, self.model = team, model
        self.git_url = config.git_url(team, model)
        self.mirror = config.home / "mirrors" / team / f"{model}.git"
        self.git = Git(self.mirror)
        self.cache = LocalCache(config.home / "cache" / team / model)
        self._storage: Storage | None = None

    @property
    def storage(self) -> Storage:
        assert self._storage is not None, "resolve() a version first"
        return self._storage

    def _latest_tag(self, spec: ArtifactSpec) -> str:
        listing = run_git(["ls-remote", "--tags", "--refs", self.git_url], cwd=None).stdout
        versions: list[tuple[Version, str]] = []
        for line in listing.decode().splitlines():
            ref = line.split("\t", 1)[-1].removeprefix("refs/tags/")
            number = spec.version_of(ref)
            if number is not None:
                versions.append((number, ref))
        if not versions:
            raise VersionNotFoundError("(latest)", kind=spec.kind)
        return max(versions)[1]

    def resolve(self, kind: Kind, version: str | None
                ) -> tuple[str, VersionInfo, Pointer, ArtifactSpec]:
        """Fetch ``version``'s tag (the latest when None) shallowly; return its commit,
        metadata, pointer and artifact (from the commit's ``.cpv.json``), and open the storage
        its ``.dvc/config`` names."""
        # Tag names do not depend on the model's artifact, only on the kind.
        naming = DATA if kind == DATA.kind else ArtifactSpec.model()
        tag = naming.tag(naming.parse(version)) if version else self._latest_tag(naming)
        if not (self.mirror / "HEAD").exists():
            self.mirror.mkdir(parents=True, exist_ok=True)
            run_git(["init", "--quiet", "--bare"], cwd=self.mirror)
        fetched = self.git.run("fetch", "--quiet", "--depth=1", "--no-tags", self.git_url,
                               f"+refs/tags/{tag}:refs/tags/{tag}", check=False)
        if fetched.returncode != 0:
            if b"couldn't find remote ref" in fetched.stderr:
                raise VersionNotFoundError(tag.removeprefix("data/"), kind=kind)
            run_git(["ls-remote", self.git_url], cwd=None)  # raises the readable remote error
            raise VersionNotFoundError(tag, kind=kind)
        records = [r for r in self.git.tags(tag) if r.name == tag]
        if not records:
            raise VersionNotFoundError(tag, kind=kind)
        record = records[0]
        spec = naming if kind == DATA.kind else self._model_spec(record.commit)
        info = VersionInfo.from_tag(record.name, record.commit, record.contents)
        raw = self.git.show(record.commit, spec.pointer_file)
        if info is None or raw is None:
            raise VersionNotFoundError(tag, kind=kind)
        pointer = parse_pointer(raw, source=spec.pointer_file, expected_path=spec.path)
        self._storage = open_storage(self._storage_url(record.commit), config=self.config)
        return record.commit, info, pointer, spec

    def _model_spec(self, commit: str) -> ArtifactSpec:
        """The model artifact ``.cpv.json`` names at ``commit`` (``model.bin`` when none)."""
        try:
            recorded = json.loads(self.git.show(commit, REPO_FILE) or b"{}")
        except ValueError as e:
            raise ConfigError(f"{REPO_FILE} of {self.git_url} is corrupt ({e})") from e
        artifact = recorded.get("artifact") if isinstance(recorded, dict) else None
        return ArtifactSpec.model(artifact if isinstance(artifact, str) else None)

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
