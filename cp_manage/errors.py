"""The one exception hierarchy of cpv.

Every error says what happened and what to do next: ``str(err)`` is the message followed by the
hint. Subclasses also inherit the standard exception that fits, so ``except FileNotFoundError``
keeps working for callers that do not know cpv.
"""

from __future__ import annotations

import errno as _errno
import os as _os


class CPVError(Exception):
    """Root of every error cpv raises on purpose."""

    default_hint = ""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint if hint is not None else self.default_hint

    def __str__(self) -> str:
        if not self.hint:
            return self.message
        separator = " " if self.message.endswith((".", "!", "?")) else ". "
        return f"{self.message}{separator}{self.hint}"


class ConfigError(CPVError, ValueError):
    """The configuration is missing, corrupt, unsafe or has a wrong value."""


class InvalidNameError(CPVError, ValueError):
    """A team, model or path name cannot be used."""


class InvalidVersionError(CPVError, ValueError):
    """A version name is malformed."""

    default_hint = "Versions look like v1.0 or v0.12 (for data also data/v1.0)."


class VersionExistsError(CPVError, ValueError):
    """An explicit version is already taken."""

    def __init__(self, version: str, *, hint: str | None = None) -> None:
        super().__init__(
            f"Version {version} already exists",
            hint=hint or "Pick another version, or omit it to get the next free one.",
        )
        self.version = version


SHOWN_VERSIONS = 5
"""How many of the known versions a VersionNotFoundError names (the newest ones)."""


class VersionNotFoundError(CPVError, LookupError):
    """A version does not exist, locally or on the remote."""

    def __init__(self, version: str, *, known: list[str] | None = None,
                 kind: str = "model") -> None:
        if known is None:
            hint = f"Run 'cpv {kind} list' to see the versions there are."
        elif len(known) > SHOWN_VERSIONS:
            hint = (f"Newest {kind} versions: {', '.join(known[-SHOWN_VERSIONS:])} … and "
                    f"{len(known) - SHOWN_VERSIONS} more. Run 'cpv {kind} list' to see them all.")
        else:
            listing = ", ".join(known) if known else "none yet"
            hint = f"Known {kind} versions: {listing}. Run 'cpv {kind} list' to see them all."
        super().__init__(f"No {kind} version {version}", hint=hint)
        self.version = version


class StageNotFoundError(CPVError, LookupError):
    """A stage holds no version (it never did, or it was demoted)."""

    def __init__(self, stage: str, *, known: dict[str, str], kind: str = "model",
                 demoted: bool = False) -> None:
        listing = ", ".join(f"{name} ({version})" for name, version in known.items())
        hint = (f"Stages holding a {kind} version: {listing}." if listing else
                f"No stage holds a {kind} version now.") + (
            f" Promote one with 'cpv {kind} promote VERSION {stage}'.")
        what = "holds no" if demoted else "is not a stage of any"
        super().__init__(f"{stage} {what} {kind} version", hint=hint)
        self.stage = stage


class RetiredVersionError(CPVError, ValueError):
    """The version was retired: it cannot be promoted, and is no longer offered."""


class AmbiguousCommitError(CPVError, LookupError):
    """A short commit hash names several commits."""


class NotARepositoryError(CPVError, FileNotFoundError):
    """The path is not inside a cpv (git + DVC) repository."""

    def __init__(self, path: str) -> None:
        super().__init__(
            f"{path} is not inside a cpv repository",
            hint="Run 'cpv init --team T --model M' to create one, or pass --repo DIR.",
        )
        self.path = path


class ArtifactNotFoundError(CPVError, FileNotFoundError):
    """The model file or dataset folder to upload does not exist or cannot be used."""


class InvalidDatasetError(CPVError, ValueError):
    """A dataset folder holds something cpv cannot version (a symlink loop, a ``.git`` folder,
    a device file, a name that is not valid UTF-8)."""


class PointerError(CPVError, ValueError):
    """A .dvc pointer file is corrupt, or names something it must not."""


class InvalidObjectIdError(CPVError, ValueError):
    """Text that should name a stored object (an md5, with ``.dir`` for a folder's listing) does
    not. ``text`` is what was given."""

    def __init__(self, text: object) -> None:
        super().__init__(
            f"{text!r} is not an object id (32 lowercase hex digits of an md5, plus '.dir' for "
            "a folder's listing)",
            hint="It came from a damaged pointer, listing or cache entry; run 'cpv doctor'.")
        self.text = text


class UnsavedChangesError(CPVError):
    """The working-tree artifact has changes that were never uploaded."""


class NothingToDoError(CPVError):
    """The operation found nothing to act on (e.g. tagging a repository with no upload)."""


class UnknownMetricError(CPVError, LookupError):
    """No version records the metric asked for (``cpv model plot METRIC``)."""

    def __init__(self, metric: str, *, known: list[str], kind: str = "model") -> None:
        if known:
            hint = f"Known metrics: {', '.join(known)}."
        elif kind == "model":
            hint = ("No version records a numeric metric yet; upload with --metric K=V "
                    "(API: metrics=).")
        else:
            hint = "A dataset has no metrics."
        super().__init__(f"No {kind} version records the metric {metric!r}", hint=hint)
        self.metric = metric
        self.known = known


class GitError(CPVError):
    """A git command failed."""

    def __init__(self, message: str, *, command: list[str] | None = None, stderr: str = "",
                 hint: str | None = None, detail: str | None = None) -> None:
        lines = [line.strip() for line in stderr.strip().splitlines() if line.strip()]
        # git's first "fatal:"/"error:" line says what went wrong; later lines are advice.
        if detail is None:
            detail = next((line for line in lines if line.startswith(("fatal:", "error:"))),
                          lines[-1] if lines else "")
        super().__init__(f"{message}: {detail}" if detail else message, hint=hint)
        self.command = command or []
        self.stderr = stderr


class RemoteError(GitError):
    """The git remote could not be reached or refused an update."""


class PushRejectedError(RemoteError):
    """A push reached the git remote (or got as far as git's own checks) and refs were refused.

    The fields say what happened to each ref, in git's words:

    - ``rejected``: ref → reason, for each ref refused for a cause of its own: ``fetch first``
      or ``non-fast-forward`` (the branch moved on), ``already exists`` (the tag is taken),
      ``stale info``, ``hook declined`` (a hook refused it: ``remote_said`` has its words), or
      ``cannot lock ref '...': ...`` (another push changed it at the same moment);
    - ``held_back``: refs not updated only because another ref of the same atomic push was
      refused;
    - ``accepted``: refs that landed (none, when the push was atomic);
    - ``remote_said``: what the remote printed (its hooks' messages), one line each.
    """

    def __init__(self, message: str, *, rejected: dict[str, str], held_back: list[str],
                 accepted: list[str], remote_said: list[str], command: list[str] | None = None,
                 stderr: str = "", hint: str | None = None, detail: str | None = None) -> None:
        super().__init__(message, command=command, stderr=stderr, hint=hint, detail=detail)
        self.rejected = rejected
        self.held_back = held_back
        self.accepted = accepted
        self.remote_said = remote_said


class StorageError(CPVError, OSError):
    """The storage remote (local folder or S3) failed."""


class IntegrityError(CPVError):
    """Bytes did not match their recorded md5."""


class ConcurrentModificationError(CPVError):
    """Another writer changed the same thing at the same time."""

    default_hint = "Run the same command again."


class LocalFileError(CPVError, OSError):
    """A file on this machine cannot be written (or read): the disk is full, the file system
    is read-only, or permission is denied. ``path`` names it (None when the system did not
    say) and ``errno`` is the system's, so ``except OSError`` code sees the usual fields."""

    def __init__(self, message: str, *, path: str | None, code: int, hint: str) -> None:
        super().__init__(message, hint=hint)
        self.path = path
        self.errno = code
        self.strerror = _os.strerror(code)
        self.filename = path


class DiskFullError(LocalFileError):
    """No space (or no quota) is left where cpv writes. ``needed`` is the size being written
    and ``free`` what the file system has left, in bytes (each None when unknown)."""

    def __init__(self, path: str | None, *, needed: int | None, free: int | None,
                 code: int = _errno.ENOSPC, hint: str | None = None) -> None:
        what = "disk quota" if code == _errno.EDQUOT else "space"
        sizes = [f"{_size_text(needed)} needed" if needed else "",
                 f"{_size_text(free)} free there" if free is not None else ""]
        detail = ", ".join(s for s in sizes if s)
        where = f"to write {path}" if path else "on a disk cpv writes to"
        super().__init__(
            f"Not enough {what} left {where}" + (f": {detail}" if detail else ""),
            path=path, code=code,
            hint=hint or "Free some space there (or use another disk), then run the same "
            "command again.")
        self.needed = needed
        self.free = free


class ReadOnlyFileSystemError(LocalFileError):
    """cpv must write to a file system that is mounted read-only."""

    def __init__(self, path: str | None, *, hint: str | None = None) -> None:
        super().__init__(
            f"{path or 'A folder cpv writes to'} is on a read-only file system", path=path,
            code=_errno.EROFS,
            hint=hint or "Remount it read-write, or use a folder on a writable disk, then run "
            "the same command again.")


class FilePermissionError(LocalFileError, PermissionError):
    """The system refused cpv access to a file or folder (EACCES or EPERM)."""

    def __init__(self, path: str | None, *, code: int = _errno.EACCES,
                 hint: str | None = None) -> None:
        super().__init__(
            f"Permission denied: {path}" if path else "Permission denied", path=path, code=code,
            hint=hint or "Check who owns it and its permissions (ls -ld), or use a folder you "
            "can write to, then run the same command again.")


def _size_text(size: int | None) -> str:
    value = float(size or 0)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"  # pragma: no cover
