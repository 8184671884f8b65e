"""Directory artifacts (``data/``), stored exactly as DVC 3 stores them.

Each file is one md5 object; the folder is one more object, its listing: ``json.dumps`` of
``[{"md5": ..., "relpath": ...}, ...]`` sorted by relpath, whose md5 plus ``.dir`` is what
``data.dvc`` names. So a second upload of a dataset in which a few files changed stores and sends
just those files and the new listing, and stock ``dvc pull`` reads what cpv wrote.

Walking a dataset follows symbolic links (to files and to folders; a loop is an error) and
refuses what cannot be versioned faithfully: a ``.git`` inside, device files, names that are not
valid UTF-8. Empty folders are not recorded, as in DVC.

``sample_count`` is a documented estimate: every non-empty line of a ``.jsonl``/``.ndjson`` file,
every non-empty line but the header of a ``.csv``/``.tsv`` file, and one sample per other file.
It is only known when the files are in the local cache (it is computed when a version is tagged).
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import shutil
import stat
import tempfile
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cp_manage.backends.cache import FileStat
from cp_manage.backends.pointer import Pointer, check_relative_path
from cp_manage.errors import ArtifactNotFoundError, InvalidDatasetError, PointerError
from cp_manage.fsutil import Progress, md5_bytes, md5_file
from cp_manage.manage.handlers import ObjectSource, fetch_object, fetch_tree, run_parallel

if TYPE_CHECKING:
    from cp_manage.manage.repository import Repository

logger = logging.getLogger(__name__)

_MD5_RE = re.compile(r"[0-9a-f]{32}")
LINE_SAMPLES = {".jsonl", ".ndjson"}
TABLE_SAMPLES = {".csv", ".tsv"}
TOP_LEVEL_SPLIT = "."
"""The ``splits`` key for files directly in the dataset folder, not in a split folder."""


@dataclass(frozen=True)
class DatasetFile:
    """A file found in a dataset folder: its relative path (``/``-separated) and its stat."""

    relpath: str
    path: Path
    stat: FileStat


def scan_dataset(root: Path) -> list[DatasetFile]:
    """Every file below ``root``, sorted by relative path, following symbolic links.

    Raises:
        ArtifactNotFoundError: ``root`` is missing, a file, or holds no file at all; a link
            inside points nowhere.
        InvalidDatasetError: a symbolic-link loop, a ``.git`` inside, a device file or socket,
            a name that is not valid UTF-8.
    """
    if not root.exists():
        raise ArtifactNotFoundError(f"Dataset folder {root} does not exist",
                                    hint="Pass the folder holding the dataset (e.g. with train/, "
                                    "validation/, test/).")
    if not root.is_dir():
        raise ArtifactNotFoundError(f"{root} is not a folder",
                                    hint="A dataset is a folder; put the file in one.")
    found: list[DatasetFile] = []
    top = root.stat()
    # (folder, its relative path, the folders above it): what a symbolic link may not lead back to
    pending: list[tuple[Path, str, frozenset[tuple[int, int]]]] = [
        (root, "", frozenset({(top.st_dev, top.st_ino)}))]
    while pending:
        folder, prefix, above = pending.pop()
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as e:
            raise ArtifactNotFoundError(f"Cannot read the folder {folder}: {e.strerror}",
                                        hint="Check its permissions.") from e
        for entry in entries:
            relpath = f"{prefix}{entry.name}"
            path = Path(entry.path)
            _check_name(root, relpath)
            try:
                info = os.stat(path)
            except OSError as e:
                if e.errno == errno.ELOOP:
                    raise InvalidDatasetError(f"{path} is a symbolic-link loop",
                                              hint="Remove or fix the link, then try again.") from e
                if entry.is_symlink():
                    raise ArtifactNotFoundError(
                        f"{path} is a symbolic link to {os.readlink(path)!r}, which does not "
                        "exist", hint="Remove the broken link or restore its target.") from e
                raise ArtifactNotFoundError(f"Cannot read {path}: {e.strerror}") from e
            if stat.S_ISDIR(info.st_mode):
                key = (info.st_dev, info.st_ino)
                if key in above:
                    raise InvalidDatasetError(
                        f"{path} is a symbolic link to a folder that contains it (a loop)",
                        hint="Remove the link, or replace it by a copy of what it should hold.")
                pending.append((path, f"{relpath}/", above | {key}))
            elif stat.S_ISREG(info.st_mode):
                found.append(DatasetFile(relpath, path, FileStat(
                    info.st_ino, info.st_size, info.st_mtime_ns)))
            else:
                raise InvalidDatasetError(f"{path} is not a regular file (a device, pipe or "
                                          "socket)", hint="Remove it from the dataset.")
    if not found:
        raise ArtifactNotFoundError(f"Dataset folder {root} holds no files",
                                    hint="Put the dataset's files in it first (empty folders "
                                    "are not versioned).")
    found.sort(key=lambda f: f.relpath)
    return found


def _check_name(root: Path, relpath: str) -> None:
    name = relpath.rsplit("/", 1)[-1]
    if name == ".git":
        raise InvalidDatasetError(
            f"The dataset {root} holds a git repository ({relpath})",
            hint="Copy the files without their .git folder (e.g. git archive, or rsync "
            "--exclude .git) and upload that.")
    try:
        relpath.encode("utf-8")
    except UnicodeEncodeError as e:
        raise InvalidDatasetError(
            f"The name {relpath!r} in {root} is not valid UTF-8",
            hint="Rename the file with a UTF-8 name (e.g. convmv -f latin1 -t utf8).") from e


def listing_bytes(md5s: dict[str, str]) -> bytes:
    """The ``.dir`` object of a folder (relpath → md5), byte for byte what DVC 3 writes."""
    listing = [{"md5": md5s[relpath], "relpath": relpath} for relpath in sorted(md5s)]
    return json.dumps(listing, sort_keys=True).encode("utf-8")


def parse_listing(raw: bytes, *, oid: str) -> dict[str, str]:
    """Read and validate a ``.dir`` object: relpath → md5, every path inside the folder.

    Raises:
        PointerError: the listing is malformed or names a path outside the folder.
    """
    hint = "Upload the dataset again, or restore the listing with 'cpv doctor --repair'."
    try:
        entries = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise PointerError(f"The directory listing {oid} is not valid JSON", hint=hint) from e
    if not isinstance(entries, list):
        raise PointerError(f"The directory listing {oid} is not a list", hint=hint)
    md5s: dict[str, str] = {}
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("md5"), str) or \
                not _MD5_RE.fullmatch(entry["md5"]):
            raise PointerError(f"The directory listing {oid} has a malformed entry", hint=hint)
        relpath = check_relative_path(entry.get("relpath"), what=f"The listing {oid}")
        if any(part in ("", ".", "..") for part in relpath.split("/")) or relpath in md5s:
            raise PointerError(f"The directory listing {oid} names {relpath!r} twice or "
                               "ambiguously", hint=hint)
        md5s[relpath] = entry["md5"]
    for relpath in md5s:
        parts = relpath.split("/")
        for depth in range(1, len(parts)):
            if "/".join(parts[:depth]) in md5s:
                raise PointerError(f"The directory listing {oid} names {relpath!r} below a file",
                                   hint=hint)
    return md5s


def read_listing(source: ObjectSource, pointer: Pointer) -> dict[str, str]:
    """The listing of a directory pointer, from the local cache, else from storage (then kept
    in the cache); its md5 is checked either way.

    Raises:
        StorageError, IntegrityError, PointerError.
    """
    with tempfile.TemporaryDirectory(prefix="cpv-listing-") as scratch:
        target = Path(scratch) / "listing"
        fetch_object(source, pointer.oid, target, size=pointer.size, progress=None)
        raw = target.read_bytes()
    source.cache.add_bytes(raw, pointer.oid)
    return parse_listing(raw, oid=pointer.oid)


def _splits(relpaths: Iterable[str]) -> dict[str, int]:
    return dict(sorted(Counter(
        r.split("/", 1)[0] if "/" in r else TOP_LEVEL_SPLIT for r in relpaths).items()))


def count_samples(source: ObjectSource, md5s: dict[str, str]) -> int | None:
    """The dataset's sample count (see the module's docstring), or None when a file that
    would be read is not in the local cache."""
    total = 0
    for relpath, md5 in md5s.items():
        suffix = os.path.splitext(relpath)[1].lower()
        if suffix not in LINE_SAMPLES and suffix not in TABLE_SAMPLES:
            total += 1
            continue
        cached = source.cache.path(md5)
        if not cached.is_file():
            return None
        with open(cached, "rb") as handle:
            lines = sum(1 for line in handle if line.strip())
        total += max(lines - 1, 0) if suffix in TABLE_SAMPLES else lines
    return total


def _remove_tree(path: Path) -> None:
    """Remove a folder cpv owns, including read-only entries."""

    def make_writable(function: Any, failed: str, _exc: Any) -> None:
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(failed), 0o755)
            os.chmod(failed, 0o644)
        function(failed)

    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path, onerror=make_writable)


def swap_into_place(built: Path, target: Path) -> None:
    """Replace ``target`` (whatever it is) by the folder ``built``, a sibling of it.

    Two renames in the same folder: a reader sees the old dataset or the new one (or, for an
    instant, none), never a mix; if the second rename fails the old one is put back.
    """
    if not os.path.lexists(target):
        os.rename(built, target)
        return
    old = target.parent / f".{target.name}.{uuid.uuid4().hex[:8]}.cpv-old"
    os.rename(target, old)
    try:
        os.rename(built, target)
    except BaseException:
        os.rename(old, target)
        raise
    _remove_tree(old)


def build_next_to(target: Path) -> Path:
    """A new, empty folder beside ``target`` to build its replacement in."""
    target.parent.mkdir(parents=True, exist_ok=True)
    built = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".cpv-tmpdir",
                                  dir=target.parent))
    os.chmod(built, 0o755)
    return built


def copy_dataset(files: list[DatasetFile], target: Path) -> None:
    """Replace the folder ``target`` by a copy of ``files`` (as scanned), all or nothing."""
    built = build_next_to(target)
    try:
        def copy(item: DatasetFile) -> None:
            destination = built / item.relpath
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(item.path, destination)

        run_parallel(copy, files)
        swap_into_place(built, target)
    except BaseException:
        _remove_tree(built)
        raise


class DirHandler:
    """A folder artifact such as ``data/``: one object per file plus a ``.dir`` listing."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._scanned: tuple[Path, list[DatasetFile]] | None = None

    def _key(self, relpath: str) -> str:
        return f"{self.path}/{relpath}"

    def scan(self, source: Path) -> list[DatasetFile]:
        """The files of ``source`` (validated); remembered for the ``stage`` that follows."""
        files = scan_dataset(source)
        self._scanned = (source, files)
        return files

    def check_source(self, repo: Repository, source: Path) -> Path:
        """The workspace folder to upload: the repository's ``data/``, a real folder with files.

        Raises:
            ArtifactNotFoundError, InvalidDatasetError: with what to do instead.
        """
        expected = repo.root / self.path
        source = source if source.is_absolute() else repo.root / source
        if os.path.abspath(source) != str(expected):
            raise ArtifactNotFoundError(
                f"{source} is not this repository's dataset folder",
                hint=f"Import it first (import_data_init, which copies it to {expected}).")
        if source.is_symlink():
            raise ArtifactNotFoundError(
                f"{source} is a symbolic link",
                hint=f"Make {expected} a real folder (import_data_init copies a dataset there).")
        self.scan(source)
        return source

    def _files(self, source: Path) -> list[DatasetFile]:
        if self._scanned is not None and self._scanned[0] == source:
            return self._scanned[1]
        return self.scan(source)

    def stage(self, repo: Repository, source: Path, *, progress: Progress | None) -> Pointer:
        """Hash the folder into the cache; unchanged files (by the stat record) are not read."""
        files = self._files(source)
        md5s: dict[str, str] = {}
        todo: list[tuple[DatasetFile, str | None]] = []
        for item in files:
            known = repo.state.lookup(self._key(item.relpath), item.stat)
            if known is not None and repo.cache.has(known):
                md5s[item.relpath] = known
            else:
                todo.append((item, known))
        total = sum(item.stat.size for item, _ in todo)
        done = 0

        def add(entry: tuple[DatasetFile, str | None]) -> str:
            item, known = entry
            return repo.cache.add_file(item.path, known_md5=known)

        def added(entry: tuple[DatasetFile, str | None], md5: str) -> None:
            nonlocal done
            item = entry[0]
            md5s[item.relpath] = md5
            repo.state.remember(self._key(item.relpath), item.stat, md5)
            done += item.stat.size
            if progress:
                progress(done, total)

        logger.info("Hashing %d new or changed files of %d in %s", len(todo), len(files),
                    self.path)
        run_parallel(add, todo, on_done=added)
        raw = listing_bytes(md5s)
        md5 = md5_bytes(raw)
        repo.cache.add_bytes(raw, f"{md5}.dir")
        return Pointer(path=Path(self.path).name, md5=md5,
                       size=sum(item.stat.size for item in files), nfiles=len(files))

    def objects(self, repo: Repository, pointer: Pointer) -> list[str]:
        """The listing and every file object it names."""
        return [*sorted(set(read_listing(repo, pointer).values())), pointer.oid]

    def workspace_oid(self, repo: Repository) -> str | None:
        """The ``.dir`` object id the workspace folder would have (None when it holds nothing;
        ``"invalid"`` when it holds something that cannot be uploaded)."""
        folder = repo.root / self.path
        if not folder.is_dir() or not any(folder.iterdir()):
            return None
        try:
            files = scan_dataset(folder)
        except (ArtifactNotFoundError, InvalidDatasetError):
            return "invalid"
        md5s: dict[str, str] = {}
        for item in files:
            key = self._key(item.relpath)
            known = repo.state.lookup(key, item.stat)
            if known is None:
                known = md5_file(item.path)
                repo.state.remember(key, item.stat, known)
            md5s[item.relpath] = known
        return f"{md5_bytes(listing_bytes(md5s))}.dir"

    def materialize(self, repo: ObjectSource, pointer: Pointer, target: Path, *,
                    progress: Progress | None) -> None:
        """Write the whole dataset to a new folder beside ``target``, every file's md5 checked,
        then rename it into place: ``target`` is never half a dataset."""
        md5s = read_listing(repo, pointer)
        built = build_next_to(target)
        try:
            fetch_tree(repo, md5s, built, total=pointer.size, progress=progress)
            swap_into_place(built, target)
        except BaseException:
            _remove_tree(built)
            raise

    def describe(self, repo: Repository, pointer: Pointer) -> dict[str, Any]:
        """``file_count``, ``splits`` (top-level folder → file count), ``sample_count``."""
        md5s = read_listing(repo, pointer)
        return {"file_count": len(md5s), "splits": _splits(md5s),
                "sample_count": count_samples(repo, md5s)}

    def remember_workspace(self, repo: Repository, pointer: Pointer) -> None:
        """Record that the workspace folder, just written by cpv, holds ``pointer``'s files."""
        folder = repo.root / self.path
        for relpath, md5 in read_listing(repo, pointer).items():
            with contextlib.suppress(FileNotFoundError):
                repo.state.remember(self._key(relpath), FileStat.of(folder / relpath), md5)

    def changes(self, source: ObjectSource, old: Pointer, new: Pointer) -> dict[str, list[str]]:
        """Which files ``new`` adds, removes and modifies relative to ``old``."""
        before, after = read_listing(source, old), read_listing(source, new)
        return {
            "added": sorted(after.keys() - before.keys()),
            "removed": sorted(before.keys() - after.keys()),
            "modified": sorted(r for r in before.keys() & after.keys() if before[r] != after[r]),
        }
