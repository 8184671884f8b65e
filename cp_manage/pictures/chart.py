"""One series across versions as an inline SVG line chart.

Versions sit in order on the x axis, evenly spaced; each version with a value gets a marker
(class ``point``, with a hover title) and, where there is room, its value as a label. With many
versions the labels are thinned, but the last value, the best and the worst, and every version
holding a stage keep theirs. Stage assignments are vertical rules named at the top.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cp_manage.pictures.svg import (
    FRAME,
    GRID,
    INK,
    MUTED,
    Style,
    marker,
    nice_ticks,
    num,
    text,
    thinned,
)

WIDTH = 960
LEFT, RIGHT, TOP = 84, 28, 46
PLOT_W, PLOT_H = WIDTH - LEFT - RIGHT, 220
LABEL_W = 56
"""Pixels a version's name needs to sit upright beside the next one's."""
HEADROOM = 18
"""Pixels kept free above the highest point for its label."""


@dataclass(frozen=True)
class StageMark:
    """A stage at the version of index ``index``: held now (``current``) or once."""

    index: int
    stages: tuple[str, ...]
    current: bool


def line_chart(name: str, versions: Sequence[str], values: Sequence[float | None], *,
               labels: Sequence[str], style: Style, fmt: Callable[[float], str],
               marks: Sequence[StageMark] = (), whole: bool = False) -> str:
    """The SVG of the series ``name``: ``values[i]`` (None: no point) at ``versions[i]``,
    labelled ``labels[i]``; ``fmt`` writes the y axis's ticks (whole numbers with ``whole``).
    """
    count = len(versions)
    finite = [v for v in values if v is not None]
    upright = count * LABEL_W <= PLOT_W  # else the versions' names are turned on their side
    height = TOP + PLOT_H + (36 if upright else 76)
    parts = [f'<svg class="chart" viewBox="0 0 {WIDTH} {height}" role="img" '
             f'data-series="{text(name)}" data-points="{len(finite)}">',
             f"<title>{text(name)} across {count} versions</title>",
             f'<rect class="plot" x="{LEFT}" y="{TOP}" width="{PLOT_W}" height="{PLOT_H}" '
             f'fill="#fbfcfe" stroke="{FRAME}"/>']

    def x_of(i: int) -> float:
        return LEFT + PLOT_W * (i + 0.5) / max(count, 1)

    ticks = nice_ticks(min(finite), max(finite), whole=whole) if finite else [0.0, 1.0]
    low, high = ticks[0], ticks[-1]

    def y_of(value: float) -> float:
        return TOP + HEADROOM + (PLOT_H - HEADROOM) * (1 - (value - low) / (high - low))

    for tick in ticks:
        y = y_of(tick)
        parts.append(f'<line x1="{LEFT}" x2="{LEFT + PLOT_W}" y1="{num(y)}" y2="{num(y)}" '
                     f'stroke="{GRID}"/><text x="{LEFT - 8}" y="{num(y + 4)}" '
                     f'text-anchor="end" class="tick">{text(fmt(tick))}</text>')
    parts += _stage_marks(marks, x_of)
    parts += _version_labels(versions, marks, x_of, upright=upright)
    if not finite:
        parts.append(f'<text x="{LEFT + PLOT_W / 2}" y="{TOP + PLOT_H / 2}" '
                     f'text-anchor="middle" class="empty">no numeric value to draw</text>')
        return "".join(parts) + "</svg>"

    parts += _lines(values, x_of, y_of, style)
    radius = 5.0 if count <= 60 else 3.5 if count <= 150 else 2.6
    parts.append(f'<g fill="{style.colour}" stroke="#fff" stroke-width="1.2">')
    for i, value in enumerate(values):
        if value is not None:
            parts.append(marker(style.marker, x_of(i), y_of(value), radius,
                                title=f"{versions[i]}  {name} = {labels[i]}"))
    parts.append("</g>")
    present = [i for i, v in enumerate(values) if v is not None]
    keep = [present[-1], max(present, key=lambda i: values[i] or 0.0),
            min(present, key=lambda i: values[i] or 0.0), *(m.index for m in marks)]
    shown = thinned(count, spacing=46, width=PLOT_W, keep=keep)
    parts.append('<g class="values">')
    for i in sorted(shown):
        value = values[i]
        if value is not None:
            parts.append(f'<text x="{num(x_of(i))}" y="{num(y_of(value) - radius - 6)}" '
                         f'text-anchor="middle" class="value">{text(labels[i])}</text>')
    parts.append("</g></svg>")
    return "".join(parts)


def _lines(values: Sequence[float | None], x_of: Callable[[int], float],
           y_of: Callable[[float], float], style: Style) -> list[str]:
    """The line through consecutive points; a version without a value breaks it."""
    runs: list[list[str]] = [[]]
    for i, value in enumerate(values):
        if value is None:
            runs.append([])
        else:
            runs[-1].append(f"{num(x_of(i))},{num(y_of(value))}")
    return [f'<polyline points="{" ".join(run)}" fill="none" stroke="{style.colour}" '
            f'stroke-opacity="0.45" stroke-width="2"/>' for run in runs if len(run) > 1]


def _stage_marks(marks: Sequence[StageMark], x_of: Callable[[int], float]) -> list[str]:
    parts = []
    for mark in marks:
        x = num(x_of(mark.index))
        names = ", ".join(mark.stages)
        if mark.current:
            parts.append(f'<line class="stage" x1="{x}" x2="{x}" y1="{TOP - 4}" '
                         f'y2="{TOP + PLOT_H}" stroke="{INK}" stroke-width="1.5" '
                         f'stroke-dasharray="5 3"/><text x="{x}" y="{TOP - 9}" '
                         f'text-anchor="middle" class="stage-now">\u2605 {text(names)}</text>')
        else:
            parts.append(f'<line class="stage" x1="{x}" x2="{x}" y1="{TOP}" '
                         f'y2="{TOP + PLOT_H}" stroke="{MUTED}" stroke-dasharray="2 3"/>'
                         f'<text x="{x}" y="{TOP - 9}" text-anchor="middle" '
                         f'class="stage-was">was {text(names)}</text>')
    return parts


def _version_labels(versions: Sequence[str], marks: Sequence[StageMark],
                    x_of: Callable[[int], float], *, upright: bool) -> list[str]:
    """The x axis: every version's name when they fit side by side, else a thinned set
    turned on their side (the first, the last and every staged one always)."""
    count = len(versions)
    base = TOP + PLOT_H
    if upright:
        return [f'<text x="{num(x_of(i))}" y="{base + 18}" text-anchor="middle" '
                f'class="version">{text(v)}</text>' for i, v in enumerate(versions)]
    shown = thinned(count, spacing=17, width=PLOT_W,
                    keep=[count - 1, 0, *(m.index for m in marks)])
    return [f'<text transform="translate({num(x_of(i))},{base + 14}) rotate(-40)" '
            f'text-anchor="end" class="version">{text(versions[i])}</text>'
            for i in sorted(shown)]
