"""``cpv model pending`` and ``cpv model flush``: the background queue."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from cp_manage.cli import output

if TYPE_CHECKING:
    from cp_manage.manage.models import ModelsCheckpointsManage
    from cp_manage.manage.queue import Completed, QueueEntry

_repo_option = click.option("--repo", type=click.Path(file_okay=False),
                            help="The repository (default: the one holding the current "
                            "directory).")


def _manager(repo: str | None) -> ModelsCheckpointsManage:
    from cp_manage.config import CPVConfig
    from cp_manage.manage.models import ModelsCheckpointsManage

    return ModelsCheckpointsManage(repo_path=Path(repo) if repo else Path.cwd(),
                                   config=CPVConfig())


def _tag_text(tag: bool | str) -> str:
    return "next" if tag is True else "none" if tag is False else str(tag)


def _entry_row(entry: QueueEntry) -> list[str]:
    return [f"#{entry.seq}", entry.id[:8], entry.submitted_at.replace("T", " ").rstrip("Z"),
            output.human_size(entry.size_bytes), _tag_text(entry.tag),
            output.format_metrics(entry.metrics or {}), entry.source]


@click.command(help="The uploads waiting in the background queue, oldest first: what "
               "'cpv model flush' (or the next background() or watch) completes.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@click.option("--drop", metavar="N", help="Take upload N (its #number or id) out of the "
              "queue without versioning it.")
@_repo_option
def pending(as_json: bool, drop: str | None, repo: str | None) -> None:
    manager = _manager(repo)
    if drop is not None:
        entry = manager.drop_upload(drop)
        output.success(f"Dropped upload {entry.describe()} of {entry.source}; it will not be "
                       "versioned.")
        return
    entries = manager.pending_uploads()
    if as_json:
        output.print_json([entry.to_dict() for entry in entries])
        return
    if not entries:
        output.info("Nothing waits in the upload queue.")
        return
    output.table(["#", "id", "submitted (UTC)", "size", "version", "metrics", "source"],
                 [_entry_row(entry) for entry in entries])


@click.command(help="Complete the uploads waiting in the background queue, oldest first, "
               "each exactly once, with the metrics and versions they were submitted with.")
@_repo_option
def flush(repo: str | None) -> None:
    manager = _manager(repo)

    def done(completed: Completed) -> None:
        entry = completed.entry
        result = completed.result[:10] if entry.tag is False else completed.result
        output.success(f"{result:<9} upload {entry.describe()} of {entry.source}")

    finished = manager.flush_uploads(on_done=done)
    if not finished:
        output.info("Nothing waits in the upload queue.")
    else:
        output.info(f"Completed {len(finished)} queued upload(s); nothing waits in the queue.")


def register(group: click.Group) -> None:
    """Add the queue's commands to the ``model`` group."""
    for command in (pending, flush):
        group.add_command(command)
