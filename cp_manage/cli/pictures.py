"""``report`` and ``plot`` for ``cpv model`` and ``cpv data``, and ``cpv combined report``.

``report`` writes the self-contained HTML file (``cp_manage.pictures``) and prints its path.
``plot`` draws the report's charts in the terminal with plotext, one panel per series with
the marker shape of the HTML chart; when stdout is not a terminal it prints the numbers as a
plain table instead, and ``--json`` prints the series.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from cp_manage.cli import output

if TYPE_CHECKING:
    from cp_manage.manage.base import CheckpointManager
    from cp_manage.manage.combined import CombinedCheckpointsManage
    from cp_manage.manage.history import History, Series

TERMINAL_MARKERS = {"circle": "\u25cf", "square": "\u25a0", "triangle": "\u25b2",
                    "diamond": "\u25c6", "triangle-down": "\u25bc", "plus": "+"}
"""The HTML chart's marker shapes, as characters."""
REPORT_SUFFIX = {"model": "report", "data": "data-report", "combined": "combined-report"}


def add_commands(group: click.Group, kind: str,
                 repo_option: Callable[[Callable[..., Any]], Callable[..., Any]]) -> None:
    """Add ``report`` and ``plot`` to the command group of ``kind`` ("model" or "data")."""
    from cp_manage.cli.checkpoints import without_clone

    series_help = ("METRIC: a metric the versions record (see 'cpv model list')."
                   if kind == "model" else "METRIC: files, samples or size.")

    @group.command(help=f"Write one self-contained HTML report of the {kind} versions: a "
                   "chart per " + ("metric" if kind == "model" else "count") + ", the version "
                   "table, stages, lineage and, for a folder, the files changed. Built from "
                   "git alone (nothing is downloaded); it opens offline. Prints its path.")
    @click.option("-o", "--output", "output_file", type=click.Path(dir_okay=False),
                  help=f"The HTML file (default: ./MODEL-{REPORT_SUFFIX[kind]}.html, or beside "
                  "the repository when run inside it).")
    @without_clone("report")
    @repo_option
    def report(output_file: str | None, team_name: str | None, model_name: str | None,
               repo: str | None) -> None:
        from cp_manage.cli.checkpoints import _manager

        manager = _manager(kind, repo, team=team_name, model=model_name)
        write_and_say(manager, output_file, kind, model_name)

    @group.command(help="Draw METRIC across versions in the terminal; when the output is not "
                   f"a terminal, print the values as plain text. {series_help}")
    @click.argument("metrics", nargs=-1, required=True, metavar="METRIC...")
    @click.option("--json", "as_json", is_flag=True, help="Print the series as JSON.")
    @without_clone("plot")
    @repo_option
    def plot(metrics: tuple[str, ...], as_json: bool, team_name: str | None,
             model_name: str | None, repo: str | None) -> None:
        from cp_manage.cli.checkpoints import _manager

        history = _manager(kind, repo, team=team_name, model=model_name).report().histories[0]
        if not history.versions and not as_json:
            output.info(f"No {kind} versions yet.")
            return
        series = history.series_named(list(dict.fromkeys(metrics)))
        if as_json:
            output.print_json(series_json(history, series))
        elif sys.stdout.isatty():
            output.info(terminal_chart(history, series, colour=output.colour() is not False))
        else:
            output.table(["version", *(s.name for s in series), "stages"],
                         series_rows(history, series))


def write_and_say(manager: CheckpointManager | CombinedCheckpointsManage,
                  output_file: str | None, kind: str, model_name: str | None) -> None:
    """Write the report to ``output_file`` (default: see ``default_place``); print its path."""
    from cp_manage.cli.checkpoints import default_place
    from cp_manage.pictures.page import write_report

    report = manager.report()  # first: without a clone or --team/--model, this says what to do
    if output_file is None:
        folder, name = default_place(manager, model_name)
        output_file = str(folder / f"{name}-{REPORT_SUFFIX[kind]}.html")
    path = Path(output_file).absolute()
    write_report(report, path)
    output.info(str(path))


def series_rows(history: History, series: list[Series]) -> list[list[str]]:
    """One row per version: its name, each series' value as ``list`` writes it, its stages."""
    return [[str(info.version), *(s.text(i) for s in series),
             ", ".join(history.current_stages(info.version)) or "-"]
            for i, info in enumerate(history.versions)]


def series_json(history: History, series: list[Series]) -> dict[str, Any]:
    """``{"versions", "series": {name: [value or null per version]}, "stages"}``."""
    def value(raw: Any) -> Any:
        return raw if isinstance(raw, (int, float)) and not isinstance(raw, bool) else None

    return {"kind": history.kind, "versions": [str(i.version) for i in history.versions],
            "series": {s.name: [value(raw) for raw in s.raw] for s in series},
            "stages": dict(sorted(history.stages.current.items()))}


def terminal_chart(history: History, series: list[Series], *, colour: bool) -> str:
    """The charts of ``series`` as terminal text, one panel each, as wide as the terminal."""
    import plotext

    from cp_manage.pictures.svg import style, thinned

    columns, lines = shutil.get_terminal_size((100, 30))
    width = max(40, min(columns - 1, 200))
    panel = max(12, min(22, (lines - 3) // len(series)))
    staged = {i for i, info in enumerate(history.versions) if history.current_stages(
        info.version)}
    names = [str(info.version) + ("\u2605" if i in staged else "")
             for i, info in enumerate(history.versions)]
    count = len(names)
    figure = plotext.figure
    figure.clear()
    figure.theme("simple")
    if len(series) > 1:
        figure.subplots(len(series), 1)
    for row, one in enumerate(series, start=1):
        look = style(history.series.index(one))
        chart = figure.subplot(row, 1) if len(series) > 1 else figure  # one: no grid
        xs = [i + 1 for i, v in enumerate(one.values) if v is not None]
        ys = [v for v in one.values if v is not None]
        chart.title(f"{one.name} ({len(xs)} of {count} versions)")
        chart.legend(active=False)
        chart.ruler("x").lim(0.5, count + 0.5)
        shown = sorted(thinned(count, spacing=8, width=width - 10,
                               keep=[count - 1, 0, *sorted(staged)]))
        chart.ruler("x").ticks([i + 1 for i in shown], [names[i] for i in shown])
        if not xs:
            continue
        line = chart.signal(xs, ys, marker="braille")
        line.lines(True)
        for k in range(1, len(xs)):
            if xs[k] != xs[k - 1] + 1:
                line.line(k, False)  # a version without a value breaks the line
        chart.draw(line)
        rgb = tuple(int(look.colour[i:i + 2], 16) for i in (1, 3, 5))
        chart.draw(chart.signal(xs, ys, marker=plotext.marker(
            TERMINAL_MARKERS[look.marker], rgb)))
        labelled = thinned(count, spacing=8, width=width - 10, keep=[xs[-1] - 1])
        step = 1.5 * count / max(width - 10, 1)  # a cell and a half right of the point
        for x, y in zip(xs, ys, strict=True):
            if x - 1 in labelled:
                chart.draw(chart.text(x + step, y, one.text(x - 1)))
    figure.plot_size(width, panel * len(series))
    text: str = figure.build().string(colorless=not colour)
    current = history.stages.current
    if current:
        text += "\n\u2605 " + ", ".join(f"{stage}: {version}" for stage, version
                                        in sorted(current.items()))
    return text
