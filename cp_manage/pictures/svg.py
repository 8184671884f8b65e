"""What the SVG pictures share: series styles (a colour *and* a marker shape, so no chart relies
on colour alone), markers, axis ticks at round numbers, and the thinning of labels that would
overlap when there are many versions."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from html import escape

INK = "#1d2330"
MUTED = "#5b6472"
GRID = "#e3e7ee"
FRAME = "#b8c0cc"


@dataclass(frozen=True)
class Style:
    """How one series is drawn: its colour and the shape of its markers."""

    colour: str
    marker: str


STYLES = (
    Style("#1f5fa8", "circle"),
    Style("#b4460b", "square"),
    Style("#157a3b", "triangle"),
    Style("#7e22ce", "diamond"),
    Style("#b91c1c", "triangle-down"),
    Style("#0f6e6a", "plus"),
)


def style(index: int) -> Style:
    """The style of the ``index``-th series (cycling when there are more than six)."""
    return STYLES[index % len(STYLES)]


def text(value: object) -> str:
    """``value`` safe inside an element or a quoted attribute."""
    return escape(str(value), quote=True)


def num(value: float) -> str:
    """A coordinate, to a tenth of a pixel."""
    return f"{value:.1f}".rstrip("0").rstrip(".")


def marker(shape: str, x: float, y: float, r: float, *, title: str,
           css_class: str = "point") -> str:
    """A marker of ``shape`` centred on (x, y), ``r`` its half-width, with a hover title."""
    inner = f"<title>{text(title)}</title>"
    if shape == "circle":
        return (f'<circle class="{css_class}" cx="{num(x)}" cy="{num(y)}" r="{num(r)}">'
                f"{inner}</circle>")
    if shape == "square":
        side = r * 1.75
        return (f'<rect class="{css_class}" x="{num(x - side / 2)}" y="{num(y - side / 2)}" '
                f'width="{num(side)}" height="{num(side)}">{inner}</rect>')
    outline = _outline(shape, r)
    points = " ".join(f"{num(x + dx)},{num(y + dy)}" for dx, dy in outline)
    return f'<polygon class="{css_class}" points="{points}">{inner}</polygon>'


def _outline(shape: str, r: float) -> list[tuple[float, float]]:
    big = r * 1.3
    if shape == "triangle":
        return [(0, -big), (big * 0.9, big * 0.6), (-big * 0.9, big * 0.6)]
    if shape == "triangle-down":
        return [(0, big), (big * 0.9, -big * 0.6), (-big * 0.9, -big * 0.6)]
    if shape == "diamond":
        return [(0, -big), (big, 0), (0, big), (-big, 0)]
    arm = r * 0.45  # a plus
    return [(-arm, -big), (arm, -big), (arm, -arm), (big, -arm), (big, arm), (arm, arm),
            (arm, big), (-arm, big), (-arm, arm), (-big, arm), (-big, -arm), (-arm, -arm)]


def nice_ticks(low: float, high: float, count: int = 5, *, whole: bool = False
               ) -> list[float]:
    """About ``count`` round values (steps of 1, 2, 2.5 or 5 times a power of ten; whole
    numbers only with ``whole``, for counts) from at or below ``low`` to at or above ``high``."""
    if not high > low:
        pad = 1.0 if whole else abs(low) * 0.05 or 1.0
        low, high = low - pad, high + pad
    rough = (high - low) / max(count - 1, 1)
    power = 10.0 ** math.floor(math.log10(rough))
    steps = [m * power for m in (1, 2, 2.5, 5, 10)]
    if whole:
        steps = [max(1.0, step) for step in steps if step >= 1 and step == int(step)] or [1.0]
    step = next((m for m in steps if m >= rough), steps[-1])
    start = math.floor(low / step) * step
    stop = math.ceil(high / step) * step
    digits = max(0, 2 - math.floor(math.log10(step)))
    return [round(start + i * step, digits) for i in range(round((stop - start) / step) + 1)]


def thinned(count: int, *, spacing: float, width: float, keep: Iterable[int] = ()) -> set[int]:
    """Which of ``count`` evenly spread labels to show when each needs ``spacing`` pixels of
    ``width``: those in ``keep`` first (in its order: the last, the best, a stage's), then
    every k-th one, each only where it crowds none already chosen."""
    every = max(1, math.ceil(count * spacing / max(width, 1.0)))
    chosen: list[int] = []
    for i in [*keep, *range(0, count, every)]:
        if 0 <= i < count and all(abs(i - j) >= every for j in chosen):
            chosen.append(i)
    return set(chosen)
