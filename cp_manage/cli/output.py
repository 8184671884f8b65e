"""Everything the CLI shows: the only code in cpv that prints.

Rich is imported only when a table or a progress bar is drawn on a terminal, so ``cpv --help``
stays quick. Output that is not a terminal gets plain text: aligned columns, no colour, no
progress bars. ``NO_COLOR`` (https://no-color.org) turns colour off everywhere.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import threading
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import click

from cp_manage import formatting

if TYPE_CHECKING:
    from rich.progress import Progress as RichProgress
    from rich.progress import TaskID


def setup_logging(verbose: bool) -> None:
    """Warnings always reach stderr; with --verbose, everything the library logs does."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(
        "%(levelname)s %(name)s: %(message)s" if verbose else "warning: %(message)s"))
    root = logging.getLogger("cp_manage")
    root.handlers = [h for h in root.handlers if isinstance(h, logging.NullHandler)]
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.WARNING)
    if verbose:
        logging.getLogger("filelock").setLevel(logging.WARNING)


def colour() -> bool | None:
    """click's ``color=``: False under ``NO_COLOR``, else None (colour on a terminal only)."""
    return False if os.environ.get("NO_COLOR") else None


def info(message: str) -> None:
    click.echo(message)


def success(message: str) -> None:
    click.secho(message, fg="green", color=colour())


def step(message: str) -> None:
    """A heading, such as the command a walkthrough runs next."""
    click.secho(message, fg="cyan", bold=True, color=colour())


def warning(message: str) -> None:
    click.secho(f"warning: {message}", fg="yellow", err=True, color=colour())


def error(message: str) -> None:
    click.secho(f"error: {message}", fg="red", err=True, color=colour())


def print_json(data: Any) -> None:
    """Valid JSON: NaN and ±inf (in metrics) as the strings "nan", "inf", "-inf"."""
    from cp_manage.artifacts import encode_metrics

    click.echo(json.dumps(encode_metrics(data), indent=2, sort_keys=True, default=str,
                          allow_nan=False))


def table(columns: Sequence[str], rows: Sequence[Sequence[str]], *, title: str | None = None
          ) -> None:
    """A table: drawn with rich on a terminal; plain aligned columns, one line per row and
    never wrapped, when stdout is a pipe or a file."""
    if not sys.stdout.isatty():
        _plain_table(columns, rows, title=title)
        return
    from rich.console import Console
    from rich.table import Table

    view = Table(*columns, title=title, show_lines=False, header_style="bold")
    for row in rows:
        view.add_row(*row)
    Console().print(view)


def _plain_table(columns: Sequence[str], rows: Sequence[Sequence[str]], *,
                 title: str | None) -> None:
    lines = [list(columns), *[list(row) for row in rows]]
    widths = [max(len(line[i]) for line in lines) for i in range(len(columns))]
    if title:
        click.echo(title)
    for line in lines:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True))
                   .rstrip())


# One formatting for the CLI's tables and the HTML report (``cp_manage.formatting``).
human_size = formatting.human_size
human_size_delta = formatting.human_size_delta
format_metrics = formatting.format_metrics


def resumed_line(done: int, total: int, where: str) -> str:
    """``resuming: 612.0 MiB of 1.0 GiB already in storage``."""
    return f"resuming: {human_size(done)} of {human_size(total)} already {where}"


class QuietTransfer:
    """The progress callback where no bar is drawn (stderr is not a terminal): it only says,
    in one line on stderr, how much of a resumed transfer was already there."""

    def __init__(self, where: str) -> None:
        self._where = where

    def __call__(self, done: int, total: int) -> None:
        pass

    def phase(self, name: str) -> None:
        pass

    def resumed(self, done: int, total: int) -> None:
        click.echo(resumed_line(done, total, self._where), err=True)


class TransferBar:
    """The progress callback behind one bar: each phase of a transfer (``hashing``, then
    ``sending``) names itself in the bar's text and fills the same bar again."""

    def __init__(self, bar: RichProgress, task: TaskID, label: str, where: str) -> None:
        self._bar, self._task, self._label, self._where = bar, task, label, where
        self._lock = threading.Lock()

    def __call__(self, done: int, total: int) -> None:
        with self._lock:
            self._bar.update(self._task, completed=done, total=total)

    def phase(self, name: str) -> None:
        with self._lock:
            self._bar.reset(self._task, description=f"{self._label}: {name}", total=None)

    def resumed(self, done: int, total: int) -> None:
        with self._lock:
            self._bar.console.print(resumed_line(done, total, self._where), markup=False,
                                    highlight=False)


@contextlib.contextmanager
def transfer_progress(description: str, *, resumed_where: str = "in storage"
                      ) -> Iterator[TransferBar | QuietTransfer]:
    """One progress bar on stderr while bytes move (only on a terminal), counted in the
    binary units of the summary line (KiB, MiB, GiB). A transfer that resumes an interrupted
    one says how much was already there (``resumed_where``: "in storage", "received")."""
    if not sys.stderr.isatty():
        yield QuietTransfer(resumed_where)
        return
    from rich.console import Console
    from rich.progress import BarColumn, ProgressColumn, TextColumn, TimeRemainingColumn
    from rich.progress import Progress as RichProgress
    from rich.text import Text

    class BytesColumn(ProgressColumn):
        def render(self, task: Any) -> Text:
            done = human_size(int(task.completed))
            moved = f"{done} / {human_size(int(task.total))}" if task.total else done
            speed = task.finished_speed or task.speed
            return Text(f"{moved}  {human_size(int(speed))}/s" if speed else moved)

    bar = RichProgress(TextColumn("{task.description}"), BarColumn(), BytesColumn(),
                       TimeRemainingColumn(), console=Console(stderr=True), transient=True)
    task = bar.add_task(description, total=None)
    with bar:
        yield TransferBar(bar, task, description, resumed_where)
