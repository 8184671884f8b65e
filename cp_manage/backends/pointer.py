"""DVC pointer files (``model.bin.dvc``, ``data.dvc``): read strictly, write exactly as DVC 3 does.

A pointer comes from git, so from whoever could push: it is validated before anything is done
with it (a path that leaves the repository, an absolute path or a malformed hash is refused).
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from cp_manage.backends.objects import ObjectId
from cp_manage.errors import InvalidObjectIdError, PointerError


@dataclass(frozen=True)
class Pointer:
    """One DVC output: a file (``md5``) or a directory (``md5`` of its listing, ``nfiles``)."""

    path: str
    md5: str
    size: int
    nfiles: int | None = None

    @property
    def is_dir(self) -> bool:
        return self.nfiles is not None

    @property
    def oid(self) -> str:
        """The object id in DVC's cache and remote: the md5, with ``.dir`` for a directory.

        Plain text (``ObjectId(pointer.oid)`` gives the value type): callers hand it to YAML
        writers, DVC's among them, which refuse a ``str`` subclass."""
        return str(ObjectId.of(self.md5, listing=self.is_dir))

    def dumps(self) -> str:
        """The pointer file's text, byte for byte what ``dvc add`` writes: DVC's own YAML 1.2
        writer (ruamel.yaml) with DVC's settings, so even a path like ``NO`` or an md5 of
        digits is quoted exactly when DVC quotes it."""
        out: dict[str, Any] = {"md5": self.oid, "size": self.size}
        if self.nfiles is not None:
            out["nfiles"] = self.nfiles
        out.update(hash="md5", path=self.path)
        writer = YAML()
        writer.default_flow_style = False
        stream = io.StringIO()
        writer.dump({"outs": [out]}, stream)
        return stream.getvalue()


def check_relative_path(path: object, *, what: str) -> str:
    """A POSIX path relative to the repository that stays inside it."""
    hint = "Restore the pointer from git (git checkout -- FILE) or upload again."
    if not isinstance(path, str) or not path or "\0" in path:
        raise PointerError(f"{what}: the path {path!r} is empty or not text", hint=hint)
    pure = PurePosixPath(path)
    if pure.is_absolute() or path.startswith("\\") or ".." in pure.parts or re.match(
            r"^[A-Za-z]:", path):
        raise PointerError(f"{what} names {path!r}, which is outside the repository", hint=hint)
    return path


def parse_pointer(text: bytes | str, *, source: str, expected_path: str | None = None) -> Pointer:
    """Parse and validate a ``.dvc`` file.

    Raises:
        PointerError: when it is not a single-output DVC 3 md5 pointer, or names a path outside
            the repository or other than ``expected_path``.
    """
    hint = f"Restore it with 'git checkout -- {source}', or upload the artifact again."
    try:
        data = YAML(typ="safe").load(text)  # as DVC reads it: YAML 1.2, where NO is a string
    except YAMLError as e:
        raise PointerError(f"{source} is not valid YAML", hint=hint) from e
    outs = data.get("outs") if isinstance(data, dict) else None
    if not isinstance(outs, list) or len(outs) != 1 or not isinstance(outs[0], dict):
        raise PointerError(f"{source} is not a DVC pointer with one output", hint=hint)
    out = outs[0]
    raw_md5, size, nfiles = out.get("md5"), out.get("size"), out.get("nfiles")
    if not isinstance(raw_md5, str):
        raise PointerError(f"{source} has no md5", hint=hint)
    try:
        oid = ObjectId(raw_md5)
    except InvalidObjectIdError as e:
        raise PointerError(f"{source} has a malformed md5 {raw_md5!r}", hint=hint) from e
    is_dir = oid.is_listing
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise PointerError(f"{source} has a missing or invalid size", hint=hint)
    if is_dir and (not isinstance(nfiles, int) or isinstance(nfiles, bool) or nfiles < 0):
        raise PointerError(f"{source} has a missing or invalid nfiles", hint=hint)
    path = check_relative_path(out.get("path"), what=source)
    if expected_path is not None and path != expected_path:
        raise PointerError(f"{source} points at {path!r} instead of {expected_path!r}", hint=hint)
    return Pointer(path=path, md5=oid.md5, size=size, nfiles=nfiles if is_dir else None)
