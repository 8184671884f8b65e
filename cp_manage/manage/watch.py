"""Watching a training run's output folder and versioning each checkpoint it writes, once.

What counts as a checkpoint (``find_checkpoints``):

- **Hugging Face Trainer**: a ``checkpoint-N/`` folder, complete once ``trainer_state.json`` is
  in it; metrics: the ``eval_*`` values of the latest evaluation in its ``log_history``, plus
  ``step`` and ``epoch``.
- **Lightning**: a ``*.ckpt`` file (not ``last*.ckpt``, a copy of another one); metrics: the
  ``key=value`` parts of its name (``epoch=2-step=300-val_loss=0.12.ckpt``).
- **Anything else**, with a glob pattern: every file or folder matching it below the folder;
  metrics from the JSON file named by ``metrics_file`` inside a folder checkpoint (and from
  ``key=value`` parts of the name).

A checkpoint is taken once nothing in it has changed for ``settle`` seconds; checkpoints go in
step order through the durable queue (``background.py``). Each one's key (its path and the
size and modification time of its files) is recorded with its upload, so a restarted watcher
skips what was already submitted: it reads the keys from the queue and from the history.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import json
import logging
import math
import os
import re
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cp_manage.errors import ArtifactNotFoundError, CPVError, InvalidDatasetError
from cp_manage.manage.queue import SOURCE_TRAILER, UploadQueue

if TYPE_CHECKING:
    from cp_manage.manage.background import BackgroundUploads
    from cp_manage.manage.models import ModelsCheckpointsManage

logger = logging.getLogger(__name__)

HF_FOLDER = re.compile(r"checkpoint-(\d+)")
HF_STATE = "trainer_state.json"
DEFAULT_SETTLE = 30.0
_NAME_METRIC = re.compile(r"([A-Za-z_][A-Za-z0-9_.]*)=(.*?)(?=-[A-Za-z_][A-Za-z0-9_.]*=|$)")
_NUMBER = re.compile(r"\d+")


@dataclass
class Checkpoint:
    """A checkpoint found under the watched folder.

    ``status`` is ``"ready"``, ``"unsettled"`` (changed less than ``settle`` seconds ago),
    ``"incomplete"`` (a Trainer folder without ``trainer_state.json``) or ``"wrong kind"``
    (a folder for a file artifact, or a file for a folder artifact).
    """

    path: Path
    name: str
    step: int | None
    metrics: dict[str, Any]
    key: str
    changed_ns: int
    status: str = "ready"
    order: tuple[Any, ...] = field(default=(), repr=False)


@dataclass(frozen=True)
class WatchEvent:
    """What the watcher did: ``queued``, ``versioned``, ``failed``, ``skipped``, ``waiting``."""

    kind: str
    checkpoint: Checkpoint
    detail: str = ""


def name_metrics(stem: str) -> dict[str, Any]:
    """The ``key=value`` parts of a name: ``epoch=2-step=300-val_loss=0.12`` (a value may be
    negative: ``loss=-0.5``); numbers as numbers."""
    metrics: dict[str, Any] = {}
    stem = re.sub(r"-v\d+$", "", stem)  # Lightning's suffix for a name taken twice
    for key, raw in _NAME_METRIC.findall(stem):
        metrics[key] = _number(raw)
    return metrics


def _number(raw: str) -> Any:
    try:
        value = float(raw)
    except ValueError:
        return raw
    return int(value) if value.is_integer() and re.fullmatch(r"-?\d+", raw) else value


def trainer_metrics(folder: Path) -> dict[str, Any]:
    """The Trainer's metrics of a checkpoint folder: the latest ``eval_*`` entry of
    ``log_history`` plus ``step`` and ``epoch``."""
    state = json.loads((folder / HF_STATE).read_text(encoding="utf-8"))
    metrics: dict[str, Any] = {}
    for entry in reversed(state.get("log_history") or []):
        if isinstance(entry, dict) and any(str(k).startswith("eval_") for k in entry):
            metrics = {k: v for k, v in entry.items() if str(k).startswith("eval_")}
            break
    metrics["step"] = state.get("global_step")
    metrics["epoch"] = state.get("epoch")
    return {k: v for k, v in metrics.items() if v is not None}


def _natural(text: str) -> tuple[Any, ...]:
    return tuple(int(part) if part.isdigit() else part
                 for part in re.split(r"(\d+)", text) if part)


def _tree_state(path: Path) -> tuple[str, int]:
    """(signature, newest change in ns) of a file, or of a folder and everything in it."""
    entries: list[str] = []
    newest = 0
    if path.is_dir():
        for folder, dirs, files in os.walk(path, followlinks=True):
            dirs.sort()
            newest = max(newest, os.stat(folder).st_mtime_ns)
            for name in sorted(files):
                full = os.path.join(folder, name)
                with contextlib.suppress(OSError):
                    info = os.stat(full)
                    newest = max(newest, info.st_mtime_ns, info.st_ctime_ns)
                    entries.append(f"{os.path.relpath(full, path)}\0{info.st_size}\0"
                                   f"{info.st_mtime_ns}")
    else:
        info = path.stat()
        newest = max(info.st_mtime_ns, info.st_ctime_ns)
        entries.append(f"\0{info.st_size}\0{info.st_mtime_ns}")
    return "\n".join(entries), newest


def checkpoint_key(path: Path, signature: str) -> str:
    """What identifies a checkpoint across restarts: its path and its files' sizes and times."""
    return hashlib.sha256(f"{os.path.realpath(path)}\0{signature}".encode()).hexdigest()[:24]


def find_checkpoints(directory: Path, *, tree: bool, pattern: str | None = None,
                     metrics_file: str | None = None, settle: float = DEFAULT_SETTLE,
                     now_ns: int | None = None) -> list[Checkpoint]:
    """Every checkpoint below ``directory``, in step order, each with its status.

    Args:
        tree: the repository's artifact is a folder (else a file): the other kind is
            ``"wrong kind"``.
    """
    now_ns = time.time_ns() if now_ns is None else now_ns
    found: list[Checkpoint] = []
    for path in _candidates(directory, pattern):
        try:
            found.append(_inspect(path, directory, tree=tree, metrics_file=metrics_file,
                                  settle=settle, now_ns=now_ns, hf=pattern is None and
                                  path.is_dir()))
        except (OSError, ValueError) as e:  # vanished meanwhile, or unreadable metrics
            logger.info("Skipping %s for now: %s", path, e)
    return sorted(found, key=lambda c: c.order)


def _candidates(directory: Path, pattern: str | None) -> Iterator[Path]:
    if pattern is not None:
        for path in sorted(directory.glob(pattern)):
            if not any(part.startswith(".") for part in path.relative_to(directory).parts):
                yield path
        return
    for folder, dirs, files in os.walk(directory):
        base = Path(folder)
        for name in sorted(dirs):
            if HF_FOLDER.fullmatch(name):
                yield base / name
        dirs[:] = sorted(d for d in dirs if not HF_FOLDER.fullmatch(d) and not d.startswith("."))
        for name in sorted(files):
            if fnmatch.fnmatch(name, "*.ckpt") and not name.startswith(("last", ".")):
                yield base / name


def _inspect(path: Path, directory: Path, *, tree: bool, metrics_file: str | None,
             settle: float, now_ns: int, hf: bool) -> Checkpoint:
    signature, changed = _tree_state(path)
    name = path.relative_to(directory).as_posix() + ("/" if path.is_dir() else "")
    stem = path.name.removesuffix(path.suffix) if path.is_file() else path.name
    metrics = name_metrics(stem)
    status = "ready"
    step: int | None = None
    hf_match = HF_FOLDER.fullmatch(path.name) if hf else None
    if hf_match:
        step = int(hf_match[1])
        if (path / HF_STATE).is_file():
            metrics.update(trainer_metrics(path))
        else:
            status = "incomplete"
    if metrics_file and path.is_dir() and (path / metrics_file).is_file():
        loaded = json.loads((path / metrics_file).read_text(encoding="utf-8"))
        if not isinstance(loaded, dict):
            raise ValueError(f"{path / metrics_file} does not hold a JSON object")
        metrics.update(loaded)
    if step is None and isinstance(metrics.get("step"), int):
        step = metrics["step"]
    if step is None and pattern_step(stem) is not None:
        step = pattern_step(stem)
    if path.is_dir() != tree:
        status = "wrong kind"
    elif status == "ready" and now_ns - changed < settle * 1e9:
        status = "unsettled"
    order = (0, step, _natural(name)) if step is not None else (1, changed, _natural(name))
    return Checkpoint(path=path, name=name, step=step, metrics=metrics,
                      key=checkpoint_key(path, signature), changed_ns=changed, status=status,
                      order=order)


def pattern_step(stem: str) -> int | None:
    """The step a name states: ``step=300``, else its last number (``epoch_3``), else None."""
    explicit = name_metrics(stem).get("step")
    if isinstance(explicit, int):
        return explicit
    numbers = _NUMBER.findall(stem)
    return int(numbers[-1]) if numbers else None


def submitted_keys(manager: ModelsCheckpointsManage) -> set[str]:
    """The keys of every checkpoint already submitted: in the queue, or in HEAD's history
    (which holds every upload this clone made)."""
    repo = manager.repo
    keys = {entry.source_key for entry in UploadQueue(repo).entries() if entry.source_key}
    if repo.git.head() is not None:
        prefix = f"{SOURCE_TRAILER}: "
        for line in repo.git.out("log", "--format=%B", "-F", f"--grep={prefix}",
                                 "HEAD").splitlines():
            if line.startswith(prefix):
                keys.add(line[len(prefix):].strip())
    return keys


def _clean_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """Metrics as cpv stores them: numbers, text, booleans (a bad value becomes text)."""
    clean: dict[str, Any] = {}
    for key, value in metrics.items():
        if isinstance(value, float) and not math.isfinite(value):
            clean[key] = value
        elif isinstance(value, (int, float, str, bool)) or value is None:
            clean[key] = value
        else:
            clean[key] = json.dumps(value, sort_keys=True, default=str)
    return clean


class Watcher:
    """Versions each new checkpoint under ``directory`` through ``uploads``, in step order.

    Args:
        manager: the model manager (its artifact decides whether files or folders are taken).
        uploads: the background uploads the checkpoints are submitted to.
        directory: the training run's output folder.
        pattern: a glob (relative to ``directory``) instead of the Trainer and Lightning
            layouts.
        tag: give each checkpoint the next version (else upload without one).
        settle: seconds nothing in a checkpoint may have changed before it is taken.
        metrics_file: a JSON file inside a folder checkpoint holding its metrics.
        on_event: told of everything the watcher does (the CLI prints it).
    """

    def __init__(self, manager: ModelsCheckpointsManage, uploads: BackgroundUploads,
                 directory: Path, *, pattern: str | None = None, tag: bool = True,
                 settle: float = DEFAULT_SETTLE, metrics_file: str | None = None,
                 on_event: Callable[[WatchEvent], None] | None = None) -> None:
        if not directory.is_dir():
            raise CPVError(f"{directory} is not a folder",
                           hint="Pass the folder the training run writes its checkpoints to.")
        if settle < 0:
            raise CPVError(f"settle must be 0 or more seconds, not {settle}")
        # Resolved, so a checkpoint's key is the same whichever way a restart names the folder.
        directory = Path(os.path.realpath(directory))
        self.manager, self.uploads, self.directory = manager, uploads, directory
        self.pattern, self.tag, self.settle = pattern, tag, settle
        self.metrics_file = metrics_file
        self.on_event = on_event or (lambda event: None)
        self.done = submitted_keys(manager)
        self.tree = manager.spec.tree
        self._told: set[tuple[str, str]] = set()  # (key, status) already reported
        self._futures: list[tuple[Checkpoint, Future[str]]] = []
        self.versioned = 0

    def scan(self) -> list[Checkpoint]:
        """The checkpoints there now, in step order, with their status."""
        return find_checkpoints(self.directory, tree=self.tree, pattern=self.pattern,
                                metrics_file=self.metrics_file, settle=self.settle)

    def step(self) -> float | None:
        """Submit every new, settled checkpoint; returns the seconds until an unsettled one
        settles (None: nothing is settling)."""
        wait: float | None = None
        for checkpoint in self.scan():
            if checkpoint.key in self.done:
                continue
            if checkpoint.status == "unsettled":
                left = self.settle - (time.time_ns() - checkpoint.changed_ns) / 1e9
                wait = max(0.05, min(wait if wait is not None else left, left))
                self._tell("waiting", checkpoint, f"settling ({self.settle:g} s)")
                continue
            if checkpoint.status != "ready":
                self._tell("skipped", checkpoint, self._why(checkpoint))
                continue
            self._submit(checkpoint)
        self.report()
        return wait

    def _submit(self, checkpoint: Checkpoint) -> None:
        try:
            future = self.uploads.submit(checkpoint.path, metrics=_clean_metrics(
                checkpoint.metrics), message=f"Checkpoint {checkpoint.name.rstrip('/')}",
                tag=self.tag, source_key=checkpoint.key)
        except (ArtifactNotFoundError, InvalidDatasetError) as e:
            # Changed or removed while it was read (a Trainer's save_total_limit): tried again
            # at the next scan while it is there.
            self._tell("skipped", checkpoint, e.message)
            return
        self.done.add(checkpoint.key)
        self._futures.append((checkpoint, future))
        self.on_event(WatchEvent("queued", checkpoint))

    def report(self) -> None:
        """Tell of the uploads finished so far, in submit order."""
        while self._futures and self._futures[0][1].done():
            checkpoint, future = self._futures.pop(0)
            error = future.exception()
            if error is None:
                self.versioned += 1
                self.on_event(WatchEvent("versioned", checkpoint, future.result()))
            else:
                self.on_event(WatchEvent("failed", checkpoint, str(error)))

    def _why(self, checkpoint: Checkpoint) -> str:
        if checkpoint.status == "incomplete":
            return f"incomplete (no {HF_STATE} yet)"
        kind = "folder" if checkpoint.path.is_dir() else "file"
        return (f"a {kind}, but this repository's model is the "
                f"{'folder' if self.tree else 'file'} {self.manager.spec.name}")

    def _tell(self, kind: str, checkpoint: Checkpoint, detail: str) -> None:
        if (checkpoint.key, detail) not in self._told:
            self._told.add((checkpoint.key, detail))
            self.on_event(WatchEvent(kind, checkpoint, detail))

    def run(self, *, once: bool, poll: float | None = None) -> None:
        """Scan and submit until stopped (an interruption), or, with ``once``, until what is
        there now (including what is still settling) has been versioned.

        Raises:
            QueueError: an upload failed.
        """
        poll = poll if poll is not None else min(max(self.settle / 4, 0.5), 5.0)
        while True:
            wait = self.step()
            if once and wait is None:
                break
            time.sleep(min(wait, poll) if wait is not None else poll)
        try:
            self.uploads.close()
        finally:
            self.report()
