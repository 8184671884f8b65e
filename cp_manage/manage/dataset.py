"""Folder artifacts (``data/``, a model folder such as ``checkpoint/``), stored exactly as DVC 3
stores a directory.

Each file is one md5 object; the folder is one more object, its listing: ``json.dumps`` of
``[{"md5": ..., "relpath": ...}, ...]`` sorted by relpath, whose md5 plus ``.dir`` is what
``data.dvc`` names. So a second upload of a dataset in which a few files changed stores and sends
just those files and the new listing, and stock ``dvc pull`` reads what cpv wrote.

Walking a folder follows symbolic links (to files and to folders; a loop is an error) and
refuses what cannot be versioned faithfully: a ``.git`` inside, device files, names that are not
valid UTF-8. Empty folders are not recorded, as in DVC.

``sample_count`` is a documented estimate: every non-empty line of a ``.jsonl``/``.ndjson`` file,
every non-empty line but the header of a ``.csv``/``.tsv`` file, and one sample per other file.
It is only known when the files are in the local cache (it is computed when a version is tagged).
"""

from __future__ import annotations

import contextlib
import errno
import glob
import json
import logging
import os
import re
import stat
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cp_manage.backends.cache import FileStat
from cp_manage.backends.objects import ObjectId
from cp_manage.backends.partial import hold, in_use
from cp_manage.backends.pointer import Pointer, check_relative_path
from cp_manage.errors import ArtifactNotFoundError, InvalidDatasetError, PointerError
from cp_manage.fsutil import Progress, md5_bytes, md5_file, progress_phase
from cp_manage.manage.handlers import (
    ObjectSource,
    Offset,
    Reuse,
    Select,
    check_outside_workspace,
    fetch_object,
    fetch_tree,
    run_parallel,
    state_key,
)
from cp_manage.spec import ArtifactSpec, wrong_kind_message
from cp_manage.swap import remove, swap_in

if TYPE_CHECKING:
    from cp_manage.manage.repository import Repository
    from cp_manage.manage.workspace import WorkspaceCopies

logger = logging.getLogger(__name__)

_MD5_RE = re.compile(r"[0-9a-f]{32}")
LINE_SAMPLES = {".jsonl", ".ndjson"}
TABLE_SAMPLES = {".csv", ".tsv"}
TOP_LEVEL_SPLIT = "."
"""The ``splits`` key for files directly in the dataset folder, not in a split folder."""
FILES_IN_METADATA = 1000
"""A folder of at most this many files lists them (path → size, md5) in its version's tag, so
``diff`` names the changed files and their sizes from git alone; a larger one is compared
through its ``.dir`` listing (from the local cache or storage)."""


@dataclass(frozen=True)
class DatasetFile:
    """A file found in a dataset folder: its relative path (``/``-separated) and its stat."""

    relpath: str
    path: Path
    stat: FileStat


def scan_dataset(root: Path, *, noun: str = "Dataset") -> list[DatasetFile]:
    """Every file below ``root``, sorted by relative path, following symbolic links.

    Raises:
        ArtifactNotFoundError: ``root`` is missing, a file, or holds no file at all; a link
            inside points nowhere.
        InvalidDatasetError: a symbolic-link loop, a ``.git`` inside, a device file or socket,
            a name that is not valid UTF-8.
    """
    if not root.exists():
        raise ArtifactNotFoundError(f"{noun} folder {root} does not exist", hint=(
            "Pass the folder holding the dataset (e.g. with train/, validation/, test/)."
            if noun == "Dataset" else "Save the checkpoint there first (e.g. "
            "model.save_pretrained(path)), or pass the folder to upload."))
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
        raise ArtifactNotFoundError(f"{noun} folder {root} holds no files",
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


def cached_sizes(source: ObjectSource, md5s: dict[str, str]) -> dict[str, int | None]:
    """The size of each file (relpath → md5) whose object is in the local cache, else None."""
    sizes: dict[str, int | None] = {}
    for relpath, md5 in md5s.items():
        try:
            sizes[relpath] = source.cache.path(md5).stat().st_size
        except OSError:
            sizes[relpath] = None
    return sizes


def left_by_an_interrupted_upload(repo: Repository, spec: ArtifactSpec, pointer: Pointer,
                                  missing: set[str]) -> int:
    """Bytes of the files of folder version ``pointer`` that storage holds already although
    HEAD's version has none of them: what an interrupted upload of this version left there,
    which a rerun does not send again. 0 for a file, for a folder whose listing is in storage
    (its upload completed: the listing goes last), and when HEAD's listing is not cached
    (its files could not be told apart from those left by the interruption).
    """
    if not ObjectId(pointer.oid).is_listing or pointer.oid not in missing:
        return 0
    head = repo.git.head()
    old = repo.pointer_at(head, spec.path) if head else None
    known: set[str] = set()
    if old is not None and ObjectId(old.oid).is_listing:
        if not repo.cache.has(old.oid):
            return 0
        known = set(parse_listing(repo.cache.path(old.oid).read_bytes(), oid=old.oid).values())
    elif old is not None:
        known = {old.oid}
    files = set(parse_listing(repo.cache.path(pointer.oid).read_bytes(),
                              oid=pointer.oid).values())
    return sum(repo.cache.path(md5).stat().st_size for md5 in files - missing - known)


def splits_of(relpaths: Iterable[str]) -> dict[str, int]:
    """Files per top-level folder (``TOP_LEVEL_SPLIT`` for files directly in the folder)."""
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


def swap_into_place(built: Path, target: Path) -> None:
    """Replace ``target`` (whatever it is) by the folder ``built``, a sibling of it, then
    remove the old one: ``target`` names the old dataset or the new one at every instant,
    never a mix nor nothing (``cp_manage.swap``)."""
    old = swap_in(built, target)
    if old is not None:
        remove(old)


def build_next_to(target: Path) -> Path:
    """A new folder beside ``target`` to build its replacement in. Of the folders earlier
    builds of ``target`` left there when they were killed (no live process holds them, see
    ``partial.hold``), the newest is taken over, so that a rerun keeps the files it finished
    (``keep_verified`` checks them); the others are removed."""
    target.parent.mkdir(parents=True, exist_ok=True)
    stale = []
    for path in target.parent.glob(f".{glob.escape(target.name)}.*.cpv-tmpdir"):
        with contextlib.suppress(OSError):
            if not in_use(path):
                stale.append((os.lstat(path).st_mtime_ns, path))
    built = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".cpv-tmpdir",
                                  dir=target.parent))
    os.chmod(built, 0o755)
    for index, (_, path) in enumerate(sorted(stale, reverse=True)):
        if index == 0 and path.is_dir() and not path.is_symlink():
            with contextlib.suppress(OSError):
                os.rename(path, built)  # onto the new, empty folder
                continue
        remove(path)
    return built


def keep_verified(built: Path, md5s: dict[str, str]) -> dict[str, int]:
    """The files a killed build left in ``built`` (see ``build_next_to``) that hold the bytes
    ``md5s`` wants, each hashed again, with their sizes; everything else in it is removed."""
    kept: dict[str, int] = {}
    for path in sorted(built.rglob("*"), reverse=True):  # a folder's files before the folder
        relpath = path.relative_to(built).as_posix()
        try:
            info = os.lstat(path)
            if stat.S_ISDIR(info.st_mode):
                with contextlib.suppress(OSError):
                    os.rmdir(path)  # when empty
                continue
            if (stat.S_ISREG(info.st_mode) and info.st_nlink == 1 and relpath in md5s
                    and md5_file(path) == md5s[relpath]):
                kept[relpath] = info.st_size
                continue
            path.unlink()
        except FileNotFoundError:
            continue
    return kept


class DirHandler:
    """A folder artifact (``data/``, ``checkpoint/``): one object per file plus a ``.dir``
    listing, as DVC stores a directory."""

    def __init__(self, spec: ArtifactSpec) -> None:
        self.spec = spec
        self.path = spec.path
        self._scanned: tuple[Path, list[DatasetFile]] | None = None
        self._noun = "Model" if spec.chosen_at_init else "Dataset"

    def _key(self, relpath: str) -> str:
        return f"{self.path}/{relpath}"

    def scan(self, source: Path) -> list[DatasetFile]:
        """The files of ``source`` (validated); remembered for the ``stage`` that follows."""
        files = scan_dataset(source, noun=self._noun)
        self._scanned = (source, files)
        return files

    def check_source(self, repo: Repository, source: Path) -> Path:
        """Any folder holding at least one file: the workspace's own, or one elsewhere.

        Args:
            source: an absolute path (the caller's relative path is resolved before).

        Raises:
            ArtifactNotFoundError, InvalidDatasetError: with what to do instead.
        """
        if source.exists() and not source.is_dir():
            message, hint = wrong_kind_message(self.spec, source)
            raise ArtifactNotFoundError(message, hint=hint)
        check_outside_workspace(repo, self.spec, source)
        self.scan(source)
        return source

    def _files(self, source: Path) -> list[DatasetFile]:
        if self._scanned is not None and self._scanned[0] == source:
            return self._scanned[1]
        return self.scan(source)

    def stage(self, repo: Repository, source: Path, *, progress: Progress | None,
              copies: WorkspaceCopies | None = None,
              cached: Callable[[str, int], None] | None = None) -> Pointer:
        """Hash the folder into the cache; unchanged files (by the stat record) are not read.
        Each file copied in is also copied to ``copies``, when given, and told to ``cached``
        (with its size) as soon as it is in the cache."""
        files = self._files(source)
        md5s: dict[str, str] = {}
        todo: list[tuple[DatasetFile, str | None]] = []
        for item in files:
            known = repo.state.lookup(state_key(repo, item.path), item.stat)
            if known is not None and repo.cache.has(known):
                md5s[item.relpath] = known
            else:
                todo.append((item, known))
        total = sum(item.stat.size for item, _ in todo)
        done = 0

        def add(entry: tuple[DatasetFile, str | None]) -> str:
            item, known = entry
            return repo.cache.add_file(
                item.path, known_md5=known,
                copy_to=copies.path_for(item.relpath) if copies else None)

        def added(entry: tuple[DatasetFile, str | None], md5: str) -> None:
            nonlocal done
            item = entry[0]
            md5s[item.relpath] = md5
            if copies is not None:
                copies.written(item.relpath, md5)
            if cached is not None:
                cached(md5, item.stat.size)
            repo.state.remember(state_key(repo, item.path), item.stat, md5)
            done += item.stat.size
            if progress:
                progress(done, total)

        logger.info("Hashing %d new or changed files of %d in %s", len(todo), len(files),
                    source)
        if todo:
            repo.warm_up_storage()  # connect while hashing: new files are about to be uploaded
            progress_phase(progress, "hashing")
        run_parallel(add, todo, on_done=added)
        raw = listing_bytes(md5s)
        md5 = md5_bytes(raw)
        repo.cache.add_bytes(raw, ObjectId.listing(md5))
        return Pointer(path=self.path, md5=md5,
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
        return ObjectId.listing(md5_bytes(listing_bytes(md5s)))

    def materialize(self, repo: ObjectSource, pointer: Pointer, target: Path, *,
                    progress: Progress | None, select: Select | None = None,
                    reuse: Reuse | None = None) -> None:
        """Write the folder (or the files ``select`` picks) to a new folder beside ``target``,
        every file's md5 checked, then rename it into place: ``target`` is never half a folder,
        and holds exactly the version's files afterwards.

        ``reuse(relpath, md5)`` may name a private file (one link) already holding those bytes,
        such as the workspace's own unchanged file: it is linked into the new folder instead
        of copied, and is again the only link once the old folder is gone.

        Raises:
            ArtifactNotFoundError: ``select`` picks no file.
        """
        md5s = read_listing(repo, pointer)
        if select is not None:
            md5s = {relpath: md5 for relpath, md5 in md5s.items() if select(relpath)}
            if not md5s:
                raise ArtifactNotFoundError(
                    f"No file of the {self.spec.kind} {self.spec.name} matches the include and "
                    "exclude patterns", hint="Check the patterns against 'cpv "
                    f"{self.spec.kind} show --json' (its files).")
        built = build_next_to(target)
        holding = hold(built)  # a killed build is told from a running one by this
        linked = 0

        try:
            kept = keep_verified(built, md5s)  # what a killed run of this build finished
            remaining = {relpath: md5 for relpath, md5 in md5s.items() if relpath not in kept}
            linked = sum(kept.values())
            if reuse is not None:
                # Files the workspace already holds (unchanged since the last upload) are linked
                # into the new folder instead of copied again; the rest come from cache or storage.
                for relpath, md5 in list(remaining.items()):
                    existing = reuse(relpath, md5)
                    if existing is None:
                        continue
                    try:
                        (built / relpath).parent.mkdir(parents=True, exist_ok=True)
                        os.link(existing, built / relpath)
                    except OSError:
                        continue  # links refused here: fetch it instead
                    linked += (built / relpath).stat().st_size
                    del remaining[relpath]

            fetch_tree(repo, remaining, built, total=pointer.size,
                       progress=Offset(progress, linked))
            swap_into_place(built, target)
        except BaseException:
            remove(built)
            raise
        finally:
            os.close(holding)

    def holds(self, repo: ObjectSource, pointer: Pointer, target: Path) -> bool:
        """Whether the folder ``target`` already holds exactly ``pointer``'s dataset: the same
        files with the same bytes, and nothing else."""
        try:
            files = scan_dataset(target)
        except (ArtifactNotFoundError, InvalidDatasetError):
            return False
        md5s = read_listing(repo, pointer)
        return {item.relpath for item in files} == set(md5s) and all(
            md5_file(item.path) == md5s[item.relpath] for item in files)

    def describe(self, repo: Repository, pointer: Pointer) -> dict[str, Any]:
        """``file_count`` and, for at most ``FILES_IN_METADATA`` files all in the local cache,
        ``files`` (relative path → ``{"size", "md5"}``)."""
        md5s = read_listing(repo, pointer)
        described: dict[str, Any] = {"file_count": len(md5s)}
        if len(md5s) <= FILES_IN_METADATA:
            sizes = cached_sizes(repo, md5s)
            if all(size is not None for size in sizes.values()):
                described["files"] = {relpath: {"size": sizes[relpath], "md5": md5}
                                      for relpath, md5 in sorted(md5s.items())}
        return described

    def remember_workspace(self, repo: Repository, pointer: Pointer) -> None:
        """Record that the workspace folder, just written by cpv, holds ``pointer``'s files."""
        folder = repo.root / self.path
        for relpath, md5 in read_listing(repo, pointer).items():
            with contextlib.suppress(FileNotFoundError):
                repo.state.remember(self._key(relpath), FileStat.of(folder / relpath), md5)
