"""Everything the CLI shows: the only code in cpv that prints.

Rich is imported only when a table or a progress bar is drawn, so ``cpv --help`` stays quick.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import click

from cp_manage.fsutil import Progress


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


def info(message: str) -> None:
    click.echo(message)


def success(message: str) -> None:
    click.secho(message, fg="green")


def error(message: str) -> None:
    click.secho(f"error: {message}", fg="red", err=True)


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


def table(columns: Sequence[str], rows: Sequence[Sequence[str]], *, title: str | None = None
          ) -> None:
    from rich.console import Console
    from rich.table import Table

    view = Table(*columns, title=title, show_lines=False, header_style="bold")
    for row in rows:
        view.add_row(*row)
    Console().print(view)


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def format_metrics(metrics: dict[str, Any]) -> str:
    return ", ".join(f"{k}={_short(v)}" for k, v in metrics.items()) or "-"


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


@contextlib.contextmanager
def transfer_progress(description: str) -> Iterator[Progress | None]:
    """A progress bar on stderr while bytes move (only on a terminal)."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )
    from rich.progress import Progress as RichProgress

    bar = RichProgress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                       TransferSpeedColumn(), TimeRemainingColumn(),
                       console=Console(stderr=True), transient=True)
    lock = threading.Lock()
    task = bar.add_task(description, total=None)

    def update(done: int, total: int) -> None:
        with lock:
            bar.update(task, completed=done, total=total)

    with bar:
        yield update
