"""The stage history as an inline SVG timeline: one lane per stage, time running right, a bar
for each stretch a version held the stage (named inside the bar), a marker at each promotion
and a cross at each demotion. The bar of a stage's current version runs to the right edge."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timezone

from cp_manage.manage.history import StageEvent
from cp_manage.pictures.svg import FRAME, GRID, MUTED, marker, num, style, text

WIDTH = 960
LEFT, RIGHT, TOP, BOTTOM = 120, 28, 16, 40
LANE, BAR = 40, 24


def stage_timeline(events: Sequence[StageEvent]) -> str:
    """The SVG of ``events`` (oldest first); empty when there are none."""
    if not events:
        return ""
    lanes = list(dict.fromkeys(event.stage for event in events))
    height = TOP + LANE * len(lanes) + BOTTOM
    span_w = WIDTH - LEFT - RIGHT
    positions = _positions(events)
    end = 1.0  # the right edge: "now" for a stage still held
    parts = [f'<svg class="timeline" viewBox="0 0 {WIDTH} {height}" role="img" '
             f'data-events="{len(events)}"><title>Stage history: {len(events)} changes of '
             f'{len(lanes)} stages</title>']

    def x_of(position: float) -> float:
        return LEFT + span_w * position

    for row, stage in enumerate(lanes):
        y = TOP + LANE * row
        parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y + LANE / 2}" '
                     f'y2="{y + LANE / 2}" stroke="{GRID}"/><text x="{LEFT - 10}" '
                     f'y="{y + LANE / 2 + 4}" text-anchor="end" class="lane">{text(stage)}'
                     "</text>")
        own = [(positions[i], e) for i, e in enumerate(events) if e.stage == stage]
        lane_style = style(row)
        for k, (start, event) in enumerate(own):
            if event.version is None:
                continue
            stop = own[k + 1][0] if k + 1 < len(own) else end
            x1, x2 = x_of(start), x_of(stop)
            held = "until " + own[k + 1][1].when if k + 1 < len(own) else "now"
            parts.append(f'<rect class="held" x="{num(x1)}" y="{y + (LANE - BAR) / 2}" '
                         f'width="{num(max(x2 - x1, 2))}" height="{BAR}" rx="3" '
                         f'fill="{lane_style.colour}" fill-opacity="0.16" '
                         f'stroke="{lane_style.colour}"><title>{text(stage)}: '
                         f'{text(event.version)} from {text(event.when)} {held}</title></rect>')
            if x2 - x1 >= 9 * len(event.version) + 22:
                parts.append(f'<text x="{num(x1 + 14)}" y="{y + LANE / 2 + 4}" '
                             f'class="held-version">{text(event.version)}</text>')
        for position, event in own:
            x, mid = x_of(position), y + LANE / 2
            if event.version is None:
                parts.append(f'<text x="{num(x)}" y="{num(mid + 5)}" text-anchor="middle" '
                             f'class="demoted">\u2715<title>{text(stage)} demoted '
                             f'{text(event.when)} by {text(event.who)}</title></text>')
            else:
                parts.append(f'<g fill="{lane_style.colour}" stroke="#fff">' + marker(
                    lane_style.marker, x, mid, 4.5, css_class="event",
                    title=f"{stage} \u2190 {event.version}, {event.when} by {event.who}")
                    + "</g>")
    parts += _time_axis(events, positions, x_of, TOP + LANE * len(lanes))
    return "".join(parts) + "</svg>"


def _positions(events: Sequence[StageEvent]) -> list[float]:
    """Where each event sits between 0 and 0.92 (the rest is the stretch up to now): by time,
    or evenly by order when the times cannot be read or are all the same."""
    times = [_parse(event.when) for event in events]
    known = [t for t in times if t is not None]
    if len(known) == len(times) and max(known) > min(known):
        first, span = min(known), max(known) - min(known)
        return [0.92 * (t - first) / span for t in known]
    return [0.92 * i / max(len(events) - 1, 1) for i in range(len(events))]


def _parse(when: str) -> float | None:
    try:
        moment = datetime.fromisoformat(when.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def _time_axis(events: Sequence[StageEvent], positions: Sequence[float],
               x_of: Callable[[float], float], base: float) -> list[str]:
    """The time of the first change, and of later ones where there is room."""
    parts = [f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{base}" y2="{base}" '
             f'stroke="{FRAME}"/>']
    last_x = -1000.0
    for position, event in zip(positions, events, strict=True):
        x = x_of(position)
        if x - last_x < 150:
            continue
        parts.append(f'<text x="{num(x)}" y="{base + 18}" text-anchor="middle" '
                     f'class="when">{text(event.when[:16].replace("T", " "))}</text>'
                     f'<line x1="{num(x)}" x2="{num(x)}" y1="{base}" y2="{base + 5}" '
                     f'stroke="{MUTED}"/>')
        last_x = x
    parts.append(f'<text x="{WIDTH - RIGHT}" y="{base + 34}" text-anchor="end" '
                 f'class="when">\u2192 now</text>')
    return parts
