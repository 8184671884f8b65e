"""Version names: parse, validate, order and bump. Pure logic, no I/O.

Model versions are tags ``vMAJOR.MINOR``; data versions are tags ``data/vMAJOR.MINOR``. Order
comes from the numbers, never from tag dates, so ``v0.10`` sorts after ``v0.9``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from cp_manage.errors import InvalidNameError, InvalidVersionError

Kind = Literal["model", "data"]

DATA_PREFIX = "data/"
TAG_PREFIXES: dict[str, str] = {"model": "", "data": DATA_PREFIX}
"""What each kind's version tags start with (``cp_manage.spec.ArtifactSpec`` carries it too)."""
# Numbers without leading zeros (v01.0 would sort ambiguously), bounded so a tag name stays short.
_VERSION_RE = re.compile(r"v(0|[1-9][0-9]{0,8})\.(0|[1-9][0-9]{0,8})")
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


@dataclass(frozen=True, order=True)
class Version:
    """A version number; ``str()`` gives ``vX.Y``."""

    major: int
    minor: int

    def __str__(self) -> str:
        return f"v{self.major}.{self.minor}"

    def bump(self, *, major: bool = False) -> Version:
        """The next version: the next minor, or with ``major`` the next ``vN.0``."""
        return Version(self.major + 1, 0) if major else Version(self.major, self.minor + 1)

    def tag(self, kind: Kind) -> str:
        """The git tag name of this version for ``kind``."""
        return f"{TAG_PREFIXES[kind]}{self}"


FIRST = Version(0, 1)


def parse_version(text: object, *, kind: Kind = "model") -> Version:
    """Parse ``vX.Y`` (and, for data, ``data/vX.Y``).

    Raises:
        InvalidVersionError: for anything else, including surrounding whitespace and text git
            would read as an option, a revision expression or another ref.
    """
    if not isinstance(text, str):
        raise InvalidVersionError(f"Version must be a string like v1.0, not {type(text).__name__}")
    prefix = TAG_PREFIXES[kind]
    body = text[len(prefix) :] if prefix and text.startswith(prefix) else text
    match = _VERSION_RE.fullmatch(body)
    if match is None:
        # repr() shows trailing spaces and control characters for what they are.
        message = f"{text[:80]!r} is not a valid {kind} version"
        meant = _meant(body)
        if meant is None:
            raise InvalidVersionError(message)
        prefix = text[: len(text) - len(body)]
        raise InvalidVersionError(message, hint=f"Did you mean {prefix}{meant}? "
                                  f"{InvalidVersionError.default_hint}")
    return Version(int(match.group(1)), int(match.group(2)))


def _meant(body: str) -> str | None:
    """The version a malformed name most likely stands for: ``0.1``, ``V0.1``, ``v1`` and
    ``1`` become ``v0.1``, ``v0.1``, ``v1.0`` and ``v1.0``; None when no guess is safe."""
    match = re.fullmatch(r"[vV]?([0-9]{1,9})(?:\.([0-9]{1,9}))?", body)
    if match is None:
        return None
    guess = f"v{int(match.group(1))}.{int(match.group(2) or 0)}"
    return guess if guess != body else None


def version_from_tag(tag: str, kind: Kind) -> Version | None:
    """The version a tag name stands for, or None when the tag is not one of ``kind``'s."""
    prefix = TAG_PREFIXES[kind]
    if not tag.startswith(prefix):
        return None
    match = _VERSION_RE.fullmatch(tag[len(prefix) :])
    return Version(int(match.group(1)), int(match.group(2))) if match else None


def next_version(existing: Iterable[Version], *, major: bool = False) -> Version:
    """The version after the highest of ``existing`` (``v0.1`` or ``v1.0`` when there is none)."""
    highest = max(existing, default=None)
    if highest is None:
        return Version(1, 0) if major else FIRST
    return highest.bump(major=major)


def sort_versions(versions: Iterable[Version]) -> list[Version]:
    """Oldest first, by number."""
    return sorted(versions)


def validate_name(value: object, what: str) -> str:
    """Check a team or model name: one path segment of letters, digits, ``.``, ``_``, ``-``.

    Raises:
        InvalidNameError: when the name is empty, has ``/``, ``..``, spaces or other characters
            that would escape its folder or break a URL.
    """
    if not isinstance(value, str) or not value:
        raise InvalidNameError(f"The {what} name is empty", hint=f"Pass a {what} name such as "
                               f"{'AI-Convo' if what == 'team' else 'faster-whisper'}.")
    if not _NAME_RE.fullmatch(value) or ".." in value:
        raise InvalidNameError(
            f"Invalid {what} name {value!r}",
            hint="Use letters, digits, '.', '_' and '-' only (no '/', '..' or spaces), "
            "starting with a letter or digit, at most 100 characters.",
        )
    return value
