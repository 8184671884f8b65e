"""Comparing two versions (``cpv model diff``), and picking files of a folder version
(``download --include/--exclude``). Pure functions over metadata and listings.

Matching: a pattern (``fnmatch`` syntax: ``*``, ``?``, ``[seq]``; case-sensitive) selects a
file when it matches the file's path relative to the folder (``*`` also matches ``/`` there),
its name, or any folder it is in: ``--include '*.safetensors'`` takes every shard in every
subfolder, ``--exclude optimizer`` drops ``optimizer/`` and everything below it. With
``--include`` only matching files are fetched; ``--exclude`` then drops files from that.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from fnmatch import fnmatchcase
from typing import Any

from cp_manage.artifacts import VersionInfo, metric_delta

TreeEntries = dict[str, tuple[str, int | None]]
"""A folder version's files: relative path → (md5, size in bytes or None when unknown)."""


def matches(relpath: str, pattern: str) -> bool:
    """Whether ``pattern`` picks the file ``relpath`` (see the module's docstring)."""
    pattern = pattern.strip("/")
    parts = relpath.split("/")
    return fnmatchcase(relpath, pattern) or any(
        fnmatchcase(part, pattern) or fnmatchcase("/".join(parts[: i + 1]), pattern)
        for i, part in enumerate(parts))


def file_selector(include: Sequence[str] | None, exclude: Sequence[str] | None
                  ) -> Callable[[str], bool] | None:
    """A predicate on relative paths for ``include``/``exclude``; None when both are empty."""
    includes, excludes = list(include or ()), list(exclude or ())
    if not includes and not excludes:
        return None

    def select(relpath: str) -> bool:
        if includes and not any(matches(relpath, p) for p in includes):
            return False
        return not any(matches(relpath, p) for p in excludes)

    return select


def metric_rows(old: VersionInfo, new: VersionInfo) -> dict[str, dict[str, Any]]:
    """``{metric: {old, new, delta}}``; delta is None unless both values are finite numbers
    (see ``cp_manage.artifacts.metric_delta``)."""
    rows: dict[str, dict[str, Any]] = {}
    for key in sorted(set(old.metrics) | set(new.metrics)):
        left, right = old.metrics.get(key), new.metrics.get(key)
        rows[key] = {"old": left, "new": right, "delta": metric_delta(left, right)}
    return rows


def delta_row(old: Any, new: Any) -> dict[str, Any]:
    """``{old, new, delta}`` for two counts (delta None unless both are integers)."""
    numbers = all(isinstance(v, int) and not isinstance(v, bool) for v in (old, new))
    return {"old": old, "new": new, "delta": new - old if numbers else None}


def entries_from_metadata(info: VersionInfo) -> TreeEntries | None:
    """A tagged folder version's files from its tag alone, when the tag lists them."""
    if not isinstance(info.files, dict):
        return None
    entries: TreeEntries = {}
    for relpath, entry in info.files.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("md5"), str):
            return None
        size = entry.get("size")
        entries[relpath] = (entry["md5"], size if isinstance(size, int) else None)
    return entries


def file_changes(before: TreeEntries, after: TreeEntries
                 ) -> tuple[dict[str, list[str]], list[dict[str, Any]]]:
    """Which files ``after`` adds, removes and modifies relative to ``before``.

    Returns:
        ``{"added", "removed", "modified"}`` (sorted paths), and one row per changed file,
        sorted by path: ``{"path", "change", "old_size", "new_size"}`` (bytes; None where the
        file is absent or its size unknown).
    """
    added = sorted(after.keys() - before.keys())
    removed = sorted(before.keys() - after.keys())
    modified = sorted(r for r in before.keys() & after.keys() if before[r][0] != after[r][0])
    rows = [{"path": path, "change": change,
             "old_size": before[path][1] if path in before else None,
             "new_size": after[path][1] if path in after else None}
            for change, paths in (("added", added), ("removed", removed),
                                  ("modified", modified)) for path in paths]
    rows.sort(key=lambda row: str(row["path"]))
    return {"added": added, "removed": removed, "modified": modified}, rows
