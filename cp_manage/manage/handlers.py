"""How an artifact is hashed, cached, stored and brought back.

``FileHandler`` handles a single file (``model.bin``, ``model.safetensors``); ``DirHandler``
(``dataset.py``) a folder (``data/``, ``checkpoint/``). Each handler turns a source file or
folder, anywhere on disk, into a DVC pointer plus the cache objects behind it, and turns a
pointer back into verified files, so the managers above never care whether an artifact is a file
or a folder. A source is only ever read: the cache gets a copy, hashed as it is copied.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import queue
import stat
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from cp_manage.backends.cache import FileStat
from cp_manage.backends.objects import ObjectId
from cp_manage.backends.partial import PartialMismatch, claimed, discard_state, state_of
from cp_manage.backends.pointer import Pointer
from cp_manage.errors import ArtifactNotFoundError, IntegrityError
from cp_manage.faults import part_size
from cp_manage.fsutil import (
    Progress,
    atomic_output,
    copy_file_md5,
    explained,
    md5_file,
    progress_phase,
    progress_resumed,
)
from cp_manage.interrupts import critical, record_resumable
from cp_manage.spec import ArtifactSpec, wrong_kind_message

if TYPE_CHECKING:
    from cp_manage.backends.cache import LocalCache
    from cp_manage.backends.storage import Storage
    from cp_manage.manage.repository import Repository
    from cp_manage.manage.sending import EarlyUploads
    from cp_manage.manage.workspace import WorkspaceCopies


class ObjectSource(Protocol):
    """Where objects come from on download: a repository, or a detached mirror (no clone)."""

    @property
    def cache(self) -> LocalCache: ...

    @property
    def storage(self) -> Storage: ...


Select = Callable[[str], bool]
"""Which files of a folder to fetch, by their ``/``-separated path relative to the folder."""
Reuse = Callable[[str, str], Path | None]
"""``(relpath, md5)`` → a private file already holding those bytes, or None."""


class Handler(Protocol):
    """What the lifecycle needs of an artifact, whether a file or a folder."""

    spec: ArtifactSpec
    path: str

    def check_source(self, repo: Repository, source: Path) -> Path:
        """Validate ``source`` (absolute; anywhere) before anything is written.

        Raises:
            ArtifactNotFoundError: missing, unreadable, or of the wrong kind (a folder for a
                file artifact or the other way round).
            InvalidDatasetError: a folder holding what cannot be versioned.
        """

    def stage(self, repo: Repository, source: Path, *, progress: Progress | None,
              copies: WorkspaceCopies | None = None,
              cached: Callable[[str, int], None] | None = None) -> Pointer:
        """Hash ``source`` into the local cache (reading it, never changing it); each file
        copied in is also copied to ``copies``, when given, from the same buffers. A folder
        tells ``cached`` each object (id, size) as it lands in the cache, so storage can start
        on it while the rest is hashed."""

    def objects(self, repo: Repository, pointer: Pointer) -> list[str]:
        """Every storage object ``pointer`` needs."""

    def workspace_oid(self, repo: Repository) -> str | None:
        """The object id the workspace artifact would have now (None when it is absent)."""

    def materialize(self, repo: ObjectSource, pointer: Pointer, target: Path, *,
                    progress: Progress | None, select: Select | None = None,
                    reuse: Reuse | None = None) -> None:
        """Write ``pointer``'s artifact at ``target`` as private writable files, md5-checked
        (a folder may take files ``reuse`` names instead of copies)."""

    def holds(self, repo: ObjectSource, pointer: Pointer, target: Path) -> bool:
        """Whether ``target`` already holds exactly ``pointer``'s artifact."""

    def describe(self, repo: Repository, pointer: Pointer) -> dict[str, Any]:
        """Extra metadata a version's tag records."""

    def remember_workspace(self, repo: Repository, pointer: Pointer) -> None:
        """Record that the workspace artifact, just written by cpv, holds ``pointer``."""


def state_key(repo: Repository, path: Path) -> str:
    """The stat record's key of a file: its path in the repository, else its absolute path."""
    absolute = os.path.abspath(path)
    relative = os.path.relpath(absolute, repo.root)
    if relative == os.pardir or relative.startswith(os.pardir + os.sep):
        return absolute
    return Path(relative).as_posix()


def check_outside_workspace(repo: Repository, spec: ArtifactSpec, source: Path) -> None:
    """A source is the workspace artifact itself or lies outside it: the workspace is then
    replaced by the upload, which must never touch the source.

    Raises:
        ArtifactNotFoundError.
    """
    workspace = os.path.realpath(repo.root / spec.path)
    real = os.path.realpath(source)
    if not same_path(source, repo.root / spec.path) and real.startswith(workspace + os.sep):
        raise ArtifactNotFoundError(
            f"{source} is inside the workspace {spec.kind} {workspace}",
            hint=f"Upload the whole {spec.name}, or a file or folder outside it.")


RESUMABLE_AVERAGE = 2 * part_size(8 * 1024 * 1024)
"""A folder whose files are this large on average (those storage sends in parallel parts) is
downloaded file by file through partial files a rerun continues (see ``fetch_tree``); for
smaller ones it is not worth it."""

T = TypeVar("T")
R = TypeVar("R")
WORKERS = 16
"""Concurrent transfers for many small files (storage backends are thread-safe)."""
MiB = 1024 * 1024


def run_parallel(work: Callable[[T], R], items: Sequence[T], *,
                 on_done: Callable[[T, R], None] | None = None) -> list[R]:
    """``work(item)`` for every item on up to ``WORKERS`` threads; ``on_done`` runs in the
    calling thread as each finishes.

    Each thread takes the next item when it is done with one: no future or waiter per item,
    which for 10,000 small files cost the calling thread more than the transfers did. The first
    failure stops the threads from taking more items, and is raised once the ones under way
    have finished.
    """
    if len(items) <= 1:
        results = []
        for item in items:
            results.append(work(item))
            if on_done:
                on_done(item, results[-1])
        return results
    outcomes: queue.SimpleQueue[tuple[int, bool, Any]] = queue.SimpleQueue()
    taken = itertools.count()  # next() is atomic: each index goes to exactly one thread
    stop = threading.Event()

    def worker() -> None:
        while not stop.is_set() and (index := next(taken)) < len(items):
            try:
                outcomes.put((index, True, work(items[index])))
            except BaseException as e:  # handed to the calling thread, which raises it
                stop.set()
                outcomes.put((index, False, e))
                return

    threads = [threading.Thread(target=worker, name="cpv-transfer", daemon=True)
               for _ in range(min(WORKERS, len(items)))]
    results_by_index: dict[int, R] = {}
    try:
        with critical():  # a signal waits until all are started, so that all are joined
            for thread in threads:
                thread.start()
        while len(results_by_index) < len(items):
            index, ok, value = outcomes.get()
            if not ok:
                raise value
            results_by_index[index] = value
            if on_done:
                on_done(items[index], value)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    return [results_by_index[index] for index in range(len(items))]


class Offset:
    """``progress`` counting ``offset`` bytes more than it is told (those already in place);
    what a transfer resumes is passed on as it is."""

    def __init__(self, progress: Progress | None, offset: int) -> None:
        self.progress, self.offset = progress, offset

    def __call__(self, done: int, total: int) -> None:
        if self.progress:
            self.progress(self.offset + done, total)

    def resumed(self, done: int, total: int) -> None:
        progress_resumed(self.progress, done, total)


class ResumedTally:
    """What many transfers run together resume, added up (with ``already``, bytes found whole
    beforehand) against their ``total``, and told to ``progress`` once: when the first
    ``wave`` transfers (those that start together, among which are the ones an interrupted
    run left unfinished, since both runs take the files in the same order) have each begun to
    move bytes or finished. A transfer found resuming after that is told as it comes."""

    def __init__(self, progress: Progress | None, total: int, *, wave: int,
                 already: int = 0) -> None:
        self.progress, self.total, self.wave = progress, total, wave
        self.found = already
        self.begun: set[str] = set()
        self.told = False
        self.lock = threading.Lock()

    def of(self, key: str) -> _TallyView:
        """The progress callback of the transfer ``key``."""
        return _TallyView(self, key)

    def resumed(self, key: str, kept: int) -> None:
        with self.lock:
            self.found += kept
            tell = self.told
        if tell:
            progress_resumed(self.progress, self.found, self.total)
        self.started(key)

    def started(self, key: str) -> None:
        """Transfer ``key`` moves bytes now, or is done."""
        with self.lock:
            if self.told or key in self.begun:
                return
            self.begun.add(key)
            self.told = len(self.begun) >= self.wave
            tell, found = self.told, self.found
        if tell and found:
            progress_resumed(self.progress, found, self.total)


class _TallyView:
    def __init__(self, tally: ResumedTally, key: str) -> None:
        self.tally, self.key = tally, key

    def __call__(self, done: int, total: int) -> None:
        self.tally.started(self.key)

    def resumed(self, done: int, total: int) -> None:
        self.tally.resumed(self.key, done)


@dataclass(frozen=True)
class Sent:
    """What ``upload_objects`` moved: ``total`` bytes of the objects storage lacked, of which
    ``resumed`` were already there from an interrupted upload (and were not sent again)."""

    total: int
    resumed: int

    @property
    def sent(self) -> int:
        return self.total - self.resumed


def upload_objects(repo: Repository, oids: Iterable[str], *, progress: Progress | None,
                   already: int = 0, early: EarlyUploads | None = None) -> Sent:
    """Copy objects from the local cache to storage.

    File objects go first, many at a time, alongside those ``early`` is already sending (which
    are skipped here); directory listings go last, once ``early`` is done too, so a listing in
    storage always means every file it names is there too (DVC relies on that when it pulls). An
    object an interrupted upload began is continued (see ``Storage.upload``); for several
    objects, ``progress`` hears of what they resumed, added up, against their total, counting
    ``already`` too: the bytes of the files an interrupted upload of the same folder stored
    whole (they are not among ``oids``).
    """
    ordered = sorted(set(oids))
    offered = dict(early.offered) if early is not None else {}
    files = [oid for oid in ordered if not ObjectId(oid).is_listing and oid not in offered]
    listings = [oid for oid in ordered if ObjectId(oid).is_listing]
    sizes = {oid: repo.cache.path(oid).stat().st_size for oid in [*files, *listings]}
    total = sum(sizes[oid] for oid in files) + sum(offered.values())
    stored: list[int] = []  # the sizes of the files in storage so far, from any thread
    lock = threading.Lock()

    begun: dict[str, int] = {}  # bytes in storage (parts, a partial file) of files under way

    def store(oid: str, progress: Progress | None = None) -> int:
        kept = repo.storage.upload(oid, repo.cache.path(oid),
                                   progress=_Begun(progress, begun, oid, lock))
        with lock:
            stored.append(sizes[oid])
            begun.pop(oid, None)
        return kept

    def kept_text() -> str | None:
        early_done = early.stored() if early is not None else []
        early_begun = early.begun() if early is not None else 0
        with lock:
            count, done, partial = len(stored), sum(stored), sum(begun.values())
        count, done, partial = count + len(early_done), done + sum(early_done), \
            partial + early_begun
        return stored_text(count, len(files) + len(offered), done, total, partial) \
            if done or partial else None

    # An interruption says how much a rerun will not send again (counted once it stopped).
    record_resumable(kept_text)
    resumed = early_total = 0
    if files or offered:
        progress_phase(progress, "sending")
    if len(files) == 1 and not offered and not already:
        resumed = store(files[0], progress)
    elif not files and not offered and already:
        progress_resumed(progress, already, already)
    elif files or offered:
        done = 0
        tally = ResumedTally(progress, total + already,
                             wave=min(WORKERS, len(files)) + (1 if offered else 0),
                             already=already)
        if early is not None and offered:
            early.attach(tally)  # what the early uploads resume counts too

        def send(oid: str) -> int:
            try:
                return store(oid, tally.of(oid))
            finally:
                tally.started(oid)

        def report(early_sent: int) -> None:  # early uploads report from their own thread
            if progress:
                with lock:
                    progress(done + early_sent, total)

        def sent(oid: str, kept: int) -> None:
            nonlocal done, resumed
            done += sizes[oid]
            resumed += kept
            report(early.sent() if early is not None else 0)

        run_parallel(send, files, on_done=sent)
        if early is not None:
            early_total, early_resumed = early.wait(report)
            resumed += early_resumed
    for oid in listings:
        repo.storage.upload(oid, repo.cache.path(oid))
    return Sent(sum(sizes.values()) + early_total, resumed)


def stored_text(count: int, of: int, done: int, total: int, partial: int = 0) -> str:
    """How much of what an upload sends is in storage: "3 of the 12 files to send (0.8 of 3.1
    MiB) are in storage", then ", and 0.5 MiB of the files begun" for the parts (or partial
    files) of files not complete; for one file, "12.0 of the 20.0 MiB to send are in storage"."""
    if count == of:
        things = "the file" if of == 1 else f"the {of} files"
        return f"{things} to send ({total / MiB:.1f} MiB) {'is' if of == 1 else 'are'} in storage"
    if of == 1:
        return f"{partial / MiB:.1f} of the {total / MiB:.1f} MiB to send are in storage"
    return (f"{count} of the {of} files to send ({done / MiB:.1f} of {total / MiB:.1f} MiB) "
            "are in storage" + (f", and {partial / MiB:.1f} MiB of the files begun"
                                if partial else ""))


class _Begun:
    """``progress`` of one file's upload, noting in ``begun`` how many of its bytes storage
    holds so far (every call says so: parts stored, or a partial file's bytes written)."""

    def __init__(self, progress: Progress | None, begun: dict[str, int], oid: str,
                 lock: threading.Lock) -> None:
        self.progress, self.begun, self.oid, self.lock = progress, begun, oid, lock

    def __call__(self, done: int, total: int) -> None:
        with self.lock:
            self.begun[self.oid] = done
        if self.progress:
            self.progress(done, total)

    def resumed(self, done: int, total: int) -> None:
        with self.lock:
            self.begun[self.oid] = done
        progress_resumed(self.progress, done, total)


def fetch_object(repo: ObjectSource, oid: str, target: Path, *, size: int,
                 progress: Progress | None) -> None:
    """Write object ``oid`` to ``target`` from the local cache, else from storage; verified.

    The file appears at ``target`` only once its md5 matched. From storage, the bytes first
    go to the object's partial file in the cache (``LocalCache.partial_path``), never beside
    ``target``: a download that is interrupted leaves them there, and the next one continues
    from them. ``size`` is the pointer's: a file's own size, which tells storage how to fetch
    it; for a listing it is the folder's total, so it is not passed on.
    """
    object_id = ObjectId(oid)
    expected = object_id.md5
    if repo.cache.has(oid):
        try:
            repo.cache.checkout(oid, target, expected_md5=expected, progress=progress)
            return
        except IntegrityError:
            pass  # the corrupt cache entry is gone; fetch a good copy from storage
    # A full, read-only or refused disk names the file being written, with the free space
    # measured once the partial file is gone.
    with explained(target, needed=size or None):
        target.parent.mkdir(parents=True, exist_ok=True)
        with claimed(repo.cache.partial_path(oid)) as (partial, _held):
            for attempt in (1, 2):
                # A partial file with a record of its progress is continued; if what it then
                # hashes to is wrong, its bytes (not storage's) may be to blame: once more
                # from byte 0 decides.
                continued = attempt == 1 and state_of(partial).exists()
                try:
                    md5 = repo.storage.download(oid, partial, progress=progress, resume=True,
                                                size=None if ObjectId(oid).is_listing else size)
                except PartialMismatch:
                    md5 = "the partial file's bytes changed"
                if md5 == expected:
                    break
                discard_state(partial)
                os.truncate(partial, 0)
                if not continued:
                    raise IntegrityError(
                        f"The stored object {oid} is corrupt (its bytes hash to {md5})",
                        hint="Run 'cpv doctor --repair' from a machine that has a good copy "
                        "cached.")
            discard_state(partial)
            os.chmod(partial, 0o644)
            move_into_place(partial, target, expected_md5=expected)


def move_into_place(source: Path, target: Path, *, expected_md5: str) -> None:
    """Rename the checked file ``source`` to ``target``; across file systems, copy it to a
    temporary file beside ``target`` (its md5 checked again) and rename that."""
    try:
        os.replace(source, target)
        return
    except OSError as e:
        if e.errno != errno.EXDEV:
            raise
    size = source.stat().st_size
    with open(source, "rb") as reader, atomic_output(target, size=size) as writer:
        md5, _ = copy_file_md5(reader, writer, total=size)
        if md5 != expected_md5:
            raise IntegrityError(f"{source} changed while it was copied to {target}",
                                 hint="Run the command again.")
    os.unlink(source)


def _link_into_place(existing: Path, target: Path) -> bool:
    """Link ``existing`` at ``target`` (replacing it); False where links are refused."""
    temporary = target.with_name(f".{target.name}.{os.getpid()}.cpv-tmp")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(existing, temporary)
    except OSError:
        return False
    try:
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        raise
    return True


def same_path(path: Path, other: Path) -> bool:
    """Whether two absolute paths name the same entry: their folders may be reached through
    symbolic links or ``..``, the entry itself is compared by name (it is never followed)."""
    def canonical(p: Path) -> Path:
        p = Path(os.path.normpath(p))
        return Path(os.path.realpath(p.parent)) / p.name

    return canonical(path) == canonical(other)


def fetch_tree(repo: ObjectSource, md5s: dict[str, str], root: Path, *, total: int,
               progress: Progress | None) -> None:
    """Write every file of a folder's listing (relative path → md5) below ``root``, from the
    local cache, else from storage, each file's md5 checked as it is written.

    ``root`` is a new folder nobody uses yet, renamed into place only once every file in it has
    been checked (``dataset.swap_into_place``); so each file is written straight at its path in
    it, without the temporary file, rename and permission change per file of ``fetch_object``,
    and every folder is made once, before the transfers. Files of a folder of large files
    (``RESUMABLE_AVERAGE`` or more on average: a sharded checkpoint) go through
    ``fetch_object`` instead, so an interrupted download of the folder continues each of them.

    Raises:
        IntegrityError: a stored object does not match its md5.
        StorageError, OSError.
    """
    for folder in sorted({os.path.dirname(relpath) for relpath in md5s} - {""}):
        (root / folder).mkdir(parents=True, exist_ok=True)
    done = 0
    tally = (ResumedTally(progress, total, wave=min(WORKERS, len(md5s)))
             if total >= RESUMABLE_AVERAGE * len(md5s) else None)

    def fetch(relpath: str) -> int:
        try:
            return fetch_one(relpath)
        finally:
            if tally is not None:
                tally.started(relpath)

    def fetch_one(relpath: str) -> int:
        oid, target = md5s[relpath], root / relpath
        if not repo.cache.export(oid, target):
            if tally is not None:
                fetch_object(repo, oid, target, size=0, progress=tally.of(relpath))
                return os.stat(target).st_size
            md5 = repo.storage.download(oid, target)
            if md5 != oid:
                raise IntegrityError(
                    f"The stored object {oid} is corrupt (its bytes hash to {md5})",
                    hint="Run 'cpv doctor --repair' from a machine that has a good copy cached.")
        return os.stat(target).st_size

    def fetched(_relpath: str, size: int) -> None:
        nonlocal done
        done += size
        if progress:
            progress(done, total)

    run_parallel(fetch, sorted(md5s), on_done=fetched)


class FileHandler:
    """A single-file artifact such as ``model.bin`` or ``model.safetensors``."""

    def __init__(self, spec: ArtifactSpec) -> None:
        self.spec = spec
        self.path = spec.path

    def check_source(self, repo: Repository, source: Path) -> Path:
        """Any regular file (a symbolic link is followed: its target is read).

        Args:
            source: an absolute path (the caller's relative path is resolved before).

        Raises:
            ArtifactNotFoundError: with what to do instead.
        """
        try:
            info = os.stat(source)
        except FileNotFoundError as e:
            if source.is_symlink():
                raise ArtifactNotFoundError(
                    f"{source} is a symbolic link to {os.readlink(source)!r}, which does not "
                    "exist", hint="Upload the checkpoint itself, or restore the link's target."
                ) from e
            raise ArtifactNotFoundError(
                f"Model file {source} does not exist",
                hint="Save the checkpoint there first (e.g. torch.save(model, path)), or pass "
                "the path of the checkpoint to upload.") from e
        except OSError as e:
            raise ArtifactNotFoundError(f"Cannot read {source}: {e.strerror or e}",
                                        hint="Check its permissions.") from e
        if stat.S_ISDIR(info.st_mode):
            message, hint = wrong_kind_message(self.spec, source)
            raise ArtifactNotFoundError(message, hint=hint)
        if not stat.S_ISREG(info.st_mode):
            raise ArtifactNotFoundError(f"{source} is not a regular file",
                                        hint="Upload a single checkpoint file.")
        return source

    def stage(self, repo: Repository, source: Path, *, progress: Progress | None,
              copies: WorkspaceCopies | None = None,
              cached: Callable[[str, int], None] | None = None) -> Pointer:
        """Copy ``source`` into the cache, hashing the copy (skipped when the stat record
        knows the file and the cache holds it), and into ``copies`` when given.

        ``cached`` is not told: a single file has nothing to overlap its sending with, and is
        sent by ``upload_objects`` in the calling thread, where Ctrl-C aborts it at once."""
        found = FileStat.of(source)
        key = state_key(repo, source)
        known = repo.state.lookup(key, found)
        if known is None:
            repo.warm_up_storage()  # connect while hashing: a new file is about to be uploaded
        if known is None or not repo.cache.has(known):
            progress_phase(progress, "hashing")
        name = os.path.basename(self.path)
        md5 = repo.cache.add_file(source, known_md5=known, progress=progress,
                                  copy_to=copies.path_for(name) if copies else None)
        if copies is not None:
            copies.written(name, md5)
        repo.state.remember(key, found, md5)
        return Pointer(path=self.path, md5=md5, size=found.size)

    def objects(self, repo: Repository, pointer: Pointer) -> list[str]:
        return [pointer.oid]

    def workspace_oid(self, repo: Repository) -> str | None:
        """The md5 of the workspace file (from the stat record when unchanged), or None."""
        source = repo.root / self.path
        if not source.is_file():
            return None
        found = FileStat.of(source)
        known = repo.state.lookup(self.path, found)
        if known is None:
            known = md5_file(source)
            repo.state.remember(self.path, found, known)
        return known

    def materialize(self, repo: ObjectSource, pointer: Pointer, target: Path, *,
                    progress: Progress | None, select: Select | None = None,
                    reuse: Reuse | None = None) -> None:
        """Write the file at ``target``: a link to the private copy ``reuse`` names for it
        (the upload's own copy of a file uploaded from elsewhere), else a checked copy from
        the cache or storage."""
        existing = reuse(os.path.basename(self.path), pointer.md5) if reuse else None
        if existing is not None and _link_into_place(existing, target):
            if progress:
                progress(pointer.size, pointer.size)
            return
        fetch_object(repo, pointer.oid, target, size=pointer.size, progress=progress)

    def holds(self, repo: ObjectSource, pointer: Pointer, target: Path) -> bool:
        """Whether ``target`` is already a file with exactly ``pointer``'s bytes."""
        return (target.is_file() and not target.is_symlink()
                and target.stat().st_size == pointer.size and md5_file(target) == pointer.md5)

    def describe(self, repo: Repository, pointer: Pointer) -> dict[str, Any]:
        return {}

    def remember_workspace(self, repo: Repository, pointer: Pointer) -> None:
        """Record that the workspace file, just written by cpv, holds ``pointer``'s bytes."""
        repo.state.remember(self.path, FileStat.of(repo.root / self.path), pointer.md5)
