"""``cpv gc`` and ``cpv du`` (both artifacts), ``cpv model gc|du`` and ``cpv data gc|du`` (one):
presentation only; the library plans, records and removes (``cp_manage.manage.gc``)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from cp_manage.cli import output

if TYPE_CHECKING:
    from cp_manage.manage.gc import GCResult, UsageReport
    from cp_manage.manage.gc_record import RemovedUpload

ALL_KINDS = ("model", "data")


class Duration(click.ParamType[timedelta]):
    """A grace period: ``24h``, ``30m``, ``7d``, ``1h30m``, ``0``; anything else is a usage
    error (exit 2)."""

    name = "DURATION"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> timedelta:
        from cp_manage.errors import CPVError
        from cp_manage.manage.gc_plan import parse_duration

        try:
            return parse_duration(value)
        except CPVError as e:
            self.fail(str(e), param, ctx)


def _options(command: Callable[..., Any]) -> Callable[..., Any]:
    """What gc keeps, shared by gc and du (du says what gc with the same options frees)."""
    for option in reversed([
        click.option("--keep-last", type=click.IntRange(min=0), default=3, show_default=True,
                     metavar="N", help="Keep the last N uploads (of each artifact) on the "
                     "branch, versions or not."),
        click.option("--grace", type=Duration(), default="24h", show_default=True,
                     help="Keep every object storage wrote within this period (a teammate's "
                     "upload whose commit is not pushed yet): 30m, 24h, 7d, 0."),
        click.option("--include-unreferenced", is_flag=True, help="Also remove objects no "
                     "commit refers to (older than the grace period); by default they stay."),
        click.option("--json", "as_json", is_flag=True, help="Print a JSON object."),
        click.option("--repo", type=click.Path(file_okay=False), help="The repository "
                     "(default: the one holding the current directory)."),
    ]):
        command = option(command)
    return command


def _manager(kinds: tuple[str, ...], repo: str | None) -> Any:
    from cp_manage.config import CPVConfig
    from cp_manage.manage.combined import CombinedCheckpointsManage
    from cp_manage.manage.data import DataCheckpointsManage
    from cp_manage.manage.models import ModelsCheckpointsManage

    start = Path(repo) if repo else Path.cwd()
    if kinds == ALL_KINDS:
        return CombinedCheckpointsManage(repo_path=start, config=CPVConfig())
    manager = {"model": ModelsCheckpointsManage, "data": DataCheckpointsManage}[kinds[0]]
    return manager(repo_path=start, config=CPVConfig())


def _grace_text(seconds: float) -> str:
    """``24h``, ``7d``, ``30m``, ``90s``: as the option would be written."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size * (2 if unit == "d" else 1) and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _upload_rows(uploads: list[RemovedUpload], unreferenced: list[str]) -> list[list[str]]:
    rows = [[u.kind, u.label if u.versions else "-", u.commits[0][:10] if u.commits else "-",
             str(len(u.objects)), output.human_size(u.size_bytes)] for u in uploads]
    if unreferenced:
        rows.append(["-", "(no commit refers to them)", "-", str(len(unreferenced)), "-"])
    return rows


def show_gc(result: GCResult, command: str) -> None:
    """Say what a gc run removed, or would remove."""
    options = result.options
    settings = f"keep-last {options.keep_last}, grace {_grace_text(options.grace.total_seconds())}"
    for warning in result.warnings:
        output.warning(warning)
    if result.cache_only:
        verb = "Would remove" if result.dry_run else "Removed"
        output.info(f"{verb} {_plural(result.cache_objects, 'object')} "
                    f"({output.human_size(result.cache_bytes)}) from the local cache; kept what "
                    f"HEAD, the stages and the last {options.keep_last} uploads need "
                    "(storage is not touched).")
        return
    what = (f"{_plural(len(result.uploads), 'upload')}: "
            f"{_plural(result.object_count, 'object')}, {output.human_size(result.size_bytes)}")
    if result.unreferenced:
        what += f" (of which {len(result.unreferenced)} objects no commit refers to)"
    if not result.object_count:
        output.info(f"Nothing {'would be removed' if result.dry_run else 'to remove'} "
                    f"({settings})")
    elif result.dry_run:
        output.info(f"Would remove {what} ({settings})")
    else:
        output.success(f"Removed {what} freed ({settings}); recorded as {result.record}")
    if result.uploads or result.unreferenced:
        output.table(["kind", "version", "commit", "objects", "size"],
                     _upload_rows(result.uploads, result.unreferenced))
    held = (f"; held {_plural(result.held_objects, 'object')} "
            f"({output.human_size(result.held_bytes)}) nobody needs: storage wrote them within "
            "the grace period" if result.held_objects else "")
    kind = "" if len(options.kinds) > 1 else f"{options.kinds[0]} "
    output.info(f"Kept {_plural(result.kept_uploads, kind + 'upload')} (versions not retired, "
                f"stages, the last {options.keep_last}, branch tips){held}.")
    if result.rechecked:
        output.info(f"The re-check just before deleting kept {len(result.rechecked)} object(s) "
                    "referenced meanwhile.")
    if result.cache_objects:
        verb = "Would also remove" if result.dry_run else "Also removed"
        output.info(f"{verb} {_plural(result.cache_objects, 'object')} "
                    f"({output.human_size(result.cache_bytes)}) from the local cache.")
    if result.dry_run and (result.uploads or result.unreferenced):
        output.info(f"Dry run: nothing was changed. Run '{command}' without --dry-run to "
                    "remove them.")


def show_du(report: UsageReport) -> None:
    """Print ``cpv du``: one row per upload, then the totals."""
    for warning in report.warnings:
        output.warning(warning)
    rows = []
    for row in report.rows:
        if row.keep:
            fate = f"kept: {', '.join(row.keep[:2])}" + (
                f" +{len(row.keep) - 2}" if len(row.keep) > 2 else "")
        elif row.gc_bytes:
            fate = f"frees {output.human_size(row.gc_bytes)}"
        else:
            fate = "held (grace period)" if row.held_bytes else "- (shared or gone)"
        rows.append([row.kind, row.label, str(row.objects) + (
            f" ({row.missing} missing)" if row.missing else ""),
            output.human_size(row.total_bytes), output.human_size(row.unique_bytes),
            output.human_size(row.shared_bytes), fate])
    if rows:
        output.table(["kind", "upload", "objects", "total", "unique", "shared", "gc"], rows)
    output.info(f"Storage: {_plural(report.storage_objects, 'object')}, "
                f"{output.human_size(report.storage_bytes)}; no commit refers to "
                f"{report.unreferenced_objects} of them "
                f"({output.human_size(report.unreferenced_bytes)}).")
    options = report.options
    output.info(f"gc --keep-last {options.keep_last} --grace "
                f"{_grace_text(options.grace.total_seconds())} would free "
                f"{_plural(report.gc_objects, 'object')}, {output.human_size(report.gc_bytes)}.")


def make_gc(kinds: tuple[str, ...] = ALL_KINDS) -> click.Command:
    """``gc`` for ``kinds`` (top level: both artifacts)."""
    command = "cpv gc" if kinds == ALL_KINDS else f"cpv {kinds[0]} gc"
    whose = "the model's and the data's" if kinds == ALL_KINDS else f"the {kinds[0]}'s"

    @click.command(name="gc", help=f"Remove from storage and the local cache what only "
                   f"{whose} uploads nobody needs refer to. Kept: versions not retired, "
                   "stages, the last N uploads, branch tips, tags of your own, and whatever "
                   "storage wrote within the grace period. Each run is recorded as a gc/NNNNNN "
                   "tag.")
    @click.option("--dry-run", is_flag=True, help="Only say what would go; change nothing.")
    @click.option("--cache-only", is_flag=True, help="Only trim the local cache to what HEAD, "
                  "the stages and the last N uploads need; storage and git are untouched.")
    @_options
    def gc(dry_run: bool, cache_only: bool, keep_last: int, grace: timedelta,
           include_unreferenced: bool, as_json: bool, repo: str | None) -> None:
        if cache_only and include_unreferenced:
            raise click.UsageError("--include-unreferenced is about storage; --cache-only "
                                   "leaves storage alone.")
        result = _manager(kinds, repo).gc(keep_last=keep_last, grace=grace, dry_run=dry_run,
                                          include_unreferenced=include_unreferenced,
                                          cache_only=cache_only)
        if as_json:
            output.print_json(result.to_dict())
        else:
            show_gc(result, command)

    return gc


def make_du(kinds: tuple[str, ...] = ALL_KINDS) -> click.Command:
    """``du`` for ``kinds`` (top level: both artifacts)."""

    @click.command(name="du", help="Storage use per upload: its objects, total, unique (no "
                   "other upload refers to them) and shared bytes, why gc keeps it or what gc "
                   "with the same options would free of it.")
    @_options
    def du(keep_last: int, grace: timedelta, include_unreferenced: bool, as_json: bool,
           repo: str | None) -> None:
        report = _manager(kinds, repo).du(keep_last=keep_last, grace=grace,
                                          include_unreferenced=include_unreferenced)
        if as_json:
            output.print_json(report.to_dict())
        else:
            show_du(report)

    return du
