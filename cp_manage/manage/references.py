"""The one resolver: what a user typed where a version goes (a version, a stage, a commit)
becomes a commit and its metadata, in a clone or without one.

Stage names are made so that they can never read as a version or a commit
(``stages.validate_stage_name``), so the three kinds never collide.
"""

from __future__ import annotations

from cp_manage.artifacts import VersionInfo
from cp_manage.errors import (
    InvalidVersionError,
    NothingToDoError,
    StageNotFoundError,
    VersionNotFoundError,
)
from cp_manage.manage.catalog import VersionSource
from cp_manage.manage.detached import DetachedSource
from cp_manage.manage.repository import Repository
from cp_manage.manage.stages import StageLog, is_commit_prefix, is_stage_name, read_log
from cp_manage.spec import ArtifactSpec


def resolve_reference(source: VersionSource, spec: ArtifactSpec, ref: str | None, *,
                      log: StageLog | None = None) -> tuple[str, VersionInfo]:
    """The commit and metadata ``ref`` names: a version (``v1.2``; data also ``data/v1.2``), a
    stage (``production``: its current version, read fresh from the git remote unless ``log``
    is given), or a commit (4 or more hex digits: its version when it has one, else its upload).
    None means HEAD in a clone, and the latest version that is not retired without one.

    Raises:
        InvalidVersionError: ``ref`` is none of these.
        VersionNotFoundError, StageNotFoundError, AmbiguousCommitError, NothingToDoError (the
        commit holds no such artifact), RemoteError.
    """
    if ref is None:
        if isinstance(source, DetachedSource):
            return _latest(source, spec)
        return source.resolve(spec, None)
    try:
        spec.parse(ref)
    except InvalidVersionError as e:
        refusal = e
    else:
        return source.resolve(spec, ref)
    if is_stage_name(ref):
        log = log or read_log(source, spec, fetch=True)
        held = log.current().get(ref)
        if held is None:
            raise StageNotFoundError(ref, known=log.stages(), kind=spec.kind,
                                     demoted=ref in log.known_stages())
        return source.resolve(spec, str(held.version))
    if is_commit_prefix(ref):
        found = source.catalog.find_commit(spec, ref)
        if found is None and isinstance(source, Repository):
            source.fetch_tags_quietly()
            found = source.catalog.find_commit(spec, ref)
        if found is None:
            raise VersionNotFoundError(ref, known=None, kind=spec.kind)
        commit, info = found
        if info is None:
            raise NothingToDoError(f"Commit {commit[:10]} holds no {spec.kind}",
                                   hint=f"Run 'cpv {spec.kind} list --all' to see the uploads.")
        return commit, info
    refusal.hint = (f"{refusal.hint} A stage name (production) or a commit hash (4 or more "
                    "hex digits) works too.").lstrip()
    raise refusal


def _latest(source: DetachedSource, spec: ArtifactSpec) -> tuple[str, VersionInfo]:
    """Without a clone, no version means the latest one that is not retired."""
    retired = read_log(source, spec, fetch=True).retired()
    versions = source.versions(spec)
    offered = [i for i in versions if i.version not in retired and i.commit]
    if not versions:
        return source.resolve(spec, None)  # says there is none, as it always did
    if not offered:
        raise VersionNotFoundError("that is not retired", known=[], kind=spec.kind)
    return source.resolve(spec, str(offered[-1].version))
