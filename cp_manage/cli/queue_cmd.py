"""``cpv model pending``, ``cpv model flush`` and ``cpv model watch``: the background queue."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from cp_manage.cli import output

if TYPE_CHECKING:
    from cp_manage.manage.models import ModelsCheckpointsManage
    from cp_manage.manage.queue import Completed, QueueEntry
    from cp_manage.manage.watch import WatchEvent

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


def _metrics_text(metrics: dict[str, Any]) -> str:
    return output.format_metrics(metrics) if metrics else "no metrics"


def _print_event(event: WatchEvent) -> None:
    name = event.checkpoint.name
    if event.kind == "queued":
        output.info(f"queued    {name}  {_metrics_text(event.checkpoint.metrics)}")
    elif event.kind == "versioned":
        output.success(f"{event.detail[:10]:<9} {name}")
    elif event.kind == "failed":
        output.warning(f"{name} was not versioned: {event.detail}")
    else:
        output.info(f"{event.kind:<9} {name}: {event.detail}")


@click.command(help="Version each new checkpoint a training run writes under DIR, in step "
               "order, each once: Hugging Face Trainer checkpoint-N/ folders (once "
               "trainer_state.json is there; metrics: the latest eval_* values, step, epoch) "
               "and Lightning *.ckpt files (metrics from the name, e.g. "
               "epoch=2-step=300-val_loss=0.12.ckpt), or what --pattern matches. Runs until "
               "Ctrl-C or SIGTERM (the upload under way finishes first), or with --once until "
               "what is there now is versioned.")
@click.argument("directory", type=click.Path(exists=True, file_okay=False))
@click.option("--pattern", metavar="GLOB", help="Take the files or folders matching GLOB "
              "(relative to DIR, e.g. 'step_*' or '**/*.pt') instead.")
@click.option("--tag/--no-tag", default=True, show_default=True,
              help="Give each checkpoint the next version (else upload without one).")
@click.option("--once", is_flag=True, help="Version what is there now, then exit.")
@click.option("--settle", type=click.FloatRange(min=0), default=30.0, show_default=True,
              metavar="SECONDS", help="Take a checkpoint once nothing in it changed for this "
              "long.")
@click.option("--metrics-file", metavar="NAME", help="A JSON file inside each folder "
              "checkpoint holding its metrics.")
@_repo_option
@click.pass_context
def watch(ctx: click.Context, directory: str, pattern: str | None, tag: bool, once: bool,
          settle: float, metrics_file: str | None, repo: str | None) -> None:
    from cp_manage.interrupts import Interruption
    from cp_manage.manage.watch import Watcher

    manager = _manager(repo)
    folder = Path(os.path.abspath(directory))
    uploads = manager.background()
    watcher: Watcher | None = None
    try:
        watcher = Watcher(manager, uploads, folder, pattern=pattern, tag=tag, settle=settle,
                          metrics_file=metrics_file, on_event=_print_event)
        if not once:
            output.info(f"Watching {folder} (Ctrl-C to stop)")
        watcher.run(once=once)
    except Interruption as stop:
        left = uploads.stop()  # the upload under way finishes; the rest stays queued
        versioned = 0
        if watcher is not None:
            watcher.report()
            versioned = watcher.versioned
        waiting = (f"{len(left)} upload(s) wait in the queue ('cpv model flush' completes "
                   "them)" if left else "nothing waits in the queue")
        output.info(f"Stopped by {stop.signal_name}: {versioned} checkpoint(s) "
                    f"versioned; {waiting}.")
        ctx.exit(stop.exit_code)
    except BaseException:
        uploads.stop()
        raise
    left = uploads.pending()
    assert watcher is not None
    output.info(f"Versioned {watcher.versioned} checkpoint(s) of {folder}; " + (
        f"{len(left)} upload(s) wait in the queue." if left else "nothing waits in the queue."))


def register(group: click.Group) -> None:
    """Add the queue's commands to the ``model`` group."""
    for command in (pending, flush, watch):
        group.add_command(command)
