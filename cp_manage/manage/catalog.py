"""The catalog of versions: read-only, from the annotated tags of any git directory.

A clone's ``.git`` and the bare mirror of a machine without a clone (see ``detached``) serve the
same catalog, so ``list``, ``show`` and ``diff`` give the same answers on both. Versions and
their metadata come from the tags' annotations; a tag cpv did not write is described from its
commit's pointer and ``metrics.log``. Nothing here fetches, writes or calls storage.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from cp_manage._version import __version__
from cp_manage.artifacts import VersionInfo
from cp_manage.backends.git import Git
from cp_manage.backends.pointer import Pointer, parse_pointer
from cp_manage.errors import AmbiguousCommitError, PointerError, VersionNotFoundError
from cp_manage.manage.handlers import ObjectSource
from cp_manage.spec import DATA, DATA_PATH, DEFAULT_ARTIFACT, ArtifactSpec
from cp_manage.versions import Kind, Version

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.log"
MODEL_PATH = DEFAULT_ARTIFACT
"""The model artifact of a repository made without ``--artifact`` (see ``ArtifactSpec``)."""
__all__ = ["DATA_PATH", "METRICS_FILE", "MODEL_PATH", "Catalog", "VersionSource", "last_metrics"]


class Catalog:
    """The versions of one (team, model) held by the tags of the git directory ``git``.

    Every query names the artifact by its ``ArtifactSpec`` (which file or folder, which tags).
    """

    def __init__(self, git: Git, team: str, model: str) -> None:
        self.git = git
        self.team = team
        self.model = model
        self.skipped: dict[str, str] = {}  # tags left out of a listing, and why

    def versions(self, spec: ArtifactSpec) -> list[VersionInfo]:
        """Every version of ``spec``'s artifact, oldest first by number."""
        found: list[tuple[Version, VersionInfo]] = []
        for record in self.git.tags(spec.tag_pattern):
            number = spec.version_of(record.name)
            if number is None:
                continue
            info = VersionInfo.from_tag(record.name, record.commit, record.contents)
            if info is None or info.kind != spec.kind:
                try:
                    info = self.info_from_commit(spec, record.commit, tag=record.name)
                except PointerError as e:
                    # A tag cpv did not write, on a broken commit: list the others.
                    self.skipped[record.name] = str(e)
                    continue
                if info is None:
                    continue
            info.version = str(number)
            found.append((number, info))
        result = [info for _, info in sorted(found, key=lambda pair: pair[0])]
        if spec.records_metrics and any((i.data_version or "").startswith("md5:")
                                        for i in result):
            # Lineage recorded before its data was tagged: name the data by its tag now.
            data_tags = {i.md5: i.tag for i in self.versions(DATA)}
            for info in result:
                if info.data_version and info.data_version.startswith("md5:"):
                    info.data_version = data_tags.get(info.data_version[4:], info.data_version)
        return result

    def find(self, spec: ArtifactSpec, version: str) -> tuple[str, VersionInfo] | None:
        """The commit and metadata of ``version``, or None when no tag here names it.

        Raises:
            InvalidVersionError: ``version`` is malformed.
            PointerError: the tag is not cpv's and its commit's pointer is broken.
        """
        number = spec.parse(version)
        tag = spec.tag(number)
        for info in self.versions(spec):
            if info.tag == tag and info.commit:
                return info.commit, info
        commit = self.git.rev_parse(f"refs/tags/{tag}")
        if commit is not None:
            # The tag exists but was skipped from the listing: say why (a broken pointer).
            found = self.info_from_commit(spec, commit, tag=tag)
            if found is not None:
                found.version = str(number)
                return commit, found
        return None

    def resolve(self, spec: ArtifactSpec, version: str) -> tuple[str, VersionInfo]:
        """The commit and metadata of ``version``.

        Raises:
            InvalidVersionError, VersionNotFoundError (naming the known versions), PointerError.
        """
        found = self.find(spec, version)
        if found is None:
            raise VersionNotFoundError(str(spec.parse(version)), kind=spec.kind,
                                       known=[str(i.version) for i in self.versions(spec)])
        return found

    def find_commit(self, spec: ArtifactSpec, prefix: str
                    ) -> tuple[str, VersionInfo | None] | None:
        """The commit whose hash starts with ``prefix`` (4 to 64 hex digits) and what it holds:
        its version when one of ``spec``'s tags is on it, else its upload described from the
        commit (None when it holds no such artifact). None when no such commit is here.

        Raises:
            AmbiguousCommitError: several commits start with ``prefix``.
        """
        commits = self.git.commits_by_prefix(prefix)
        if len(commits) > 1:
            raise AmbiguousCommitError(
                f"{prefix} is the start of {len(commits)} commits",
                hint="Give more digits of the commit hash.")
        if not commits:
            return None
        commit = commits[0]
        on_it = [info for info in self.versions(spec) if info.commit == commit]
        if on_it:
            return commit, on_it[-1]
        return commit, self.info_from_commit(spec, commit, tag=None)

    def uploads(self, spec: ArtifactSpec, revs: Sequence[str]) -> list[VersionInfo]:
        """Every upload of ``spec``'s artifact in the history of ``revs`` (such as ``HEAD``,
        ``refs/remotes/origin/main`` or ``--tags``), oldest first: each commit that changed its
        pointer (or, for a model, its metrics) and holds it, described from the commit
        (``version`` and ``tag`` None, whether or not a tag names it). Two git calls, whatever
        the number of uploads.
        """
        model = spec.records_metrics
        changed = [spec.pointer_file, METRICS_FILE] if model else [spec.pointer_file]
        result = self.git.run("log", "--reverse", "--format=%H%x00%aI%x00%an <%ae>%x00%s",
                              *revs, "--", *changed, check=False)
        if result.returncode != 0:  # no commit yet
            return []
        rows = [line.split("\0", 3) for line in
                result.stdout.decode("utf-8", "replace").splitlines() if line.count("\0") == 3]
        files = [spec.pointer_file, METRICS_FILE, DATA.pointer_file] if model else [
            spec.pointer_file]
        contents = self.git.show_many([f"{row[0]}:{name}" for row in rows for name in files])
        data_tags = {i.md5: str(i.tag) for i in self.versions(DATA)} if model else {}
        found = []
        for index, (commit, date, author, subject) in enumerate(rows):
            raw = contents[index * len(files): (index + 1) * len(files)]
            if raw[0] is None:
                continue
            try:
                pointer = parse_pointer(raw[0], source=spec.pointer_file,
                                        expected_path=Path(spec.path).name)
            except PointerError as e:
                logger.warning("Skipping the upload %s: %s", commit[:10], e)
                continue
            try:
                data = parse_pointer(raw[2], source=DATA.pointer_file,
                                     expected_path=DATA.path) if model and raw[2] else None
            except PointerError:
                data = None  # lineage unknown; the upload itself is fine
            found.append(VersionInfo(
                kind=spec.kind, version=None, tag=None, path=pointer.path, md5=pointer.md5,
                size_bytes=pointer.size, metrics=last_metrics(raw[1] or b"") if model else {},
                created_at=date, author=author, message=subject, cpv_version=__version__,
                commit=commit, team=self.team, model=self.model, file_count=pointer.nfiles,
                data_version=(data_tags.get(data.md5, f"md5:{data.md5}") if data else None),
            ))
        return found

    def pointer_at(self, commit: str, path: str) -> Pointer | None:
        raw = self.git.show(commit, f"{path}.dvc")
        if raw is None:
            return None
        return parse_pointer(raw, source=f"{path}.dvc", expected_path=Path(path).name)

    def metrics_at(self, commit: str | None) -> dict[str, Any]:
        raw = self.git.show(commit, METRICS_FILE) if commit else None
        return last_metrics(raw or b"")

    def info_from_commit(self, spec: ArtifactSpec, commit: str, *,
                         tag: str | None) -> VersionInfo | None:
        """Metadata computed from a commit's pointer and metrics (HEAD, or a foreign tag).

        Date, author and message are those of the upload: the last commit up to ``commit``
        that changed the artifact (or, for a model, its metrics).
        """
        pointer = self.pointer_at(commit, spec.path)
        if pointer is None:
            return None
        model = spec.records_metrics
        changed = [spec.pointer_file, METRICS_FILE] if model else [spec.pointer_file]
        log = ["log", "-1", "--format=%aI%x00%an <%ae>%x00%s", commit]
        # A shallow history may not reach the upload: then the commit itself speaks for it.
        upload = self.git.out(*log, "--", *changed) or self.git.out(*log)
        date, author, subject = upload.split("\0", 2)
        return VersionInfo(
            kind=spec.kind, version=None, tag=tag, path=pointer.path, md5=pointer.md5,
            size_bytes=pointer.size, metrics=self.metrics_at(commit) if model else {},
            created_at=date, author=author, message=subject, cpv_version=__version__,
            commit=commit, team=self.team, model=self.model, file_count=pointer.nfiles,
            data_version=self.data_version_at(commit) if model else None,
        )

    def data_version_at(self, commit: str) -> str | None:
        """Lineage: the data tag whose dataset the commit holds, else ``md5:<hash>``."""
        pointer = self.pointer_at(commit, DATA_PATH)
        if pointer is None:
            return None
        for info in reversed(self.versions(DATA)):
            if info.md5 == pointer.md5:
                return info.tag
        return f"md5:{pointer.md5}"


class VersionSource(ObjectSource, Protocol):
    """Where reading happens: a clone (``Repository``) or, on a machine without one, the bare
    mirror of the team's tags (``DetachedSource``). Both answer from a ``Catalog``; a clone
    also knows HEAD, the mirror takes no version to mean the latest one."""

    team: str
    model: str

    @property
    def catalog(self) -> Catalog: ...

    def spec(self, kind: Kind) -> ArtifactSpec:
        """The artifact of ``kind``: the repository's model (chosen at init), or its data."""
        ...

    def versions(self, spec: ArtifactSpec) -> list[VersionInfo]:
        """Every version of ``spec``, oldest first, brought up to date with the git remote."""
        ...

    def resolve(self, spec: ArtifactSpec, version: str | None) -> tuple[str, VersionInfo]:
        """The commit and metadata of ``version``.

        Raises:
            InvalidVersionError, VersionNotFoundError, PointerError.
        """
        ...


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
