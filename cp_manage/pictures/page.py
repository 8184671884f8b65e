"""The report as one self-contained HTML file: inline CSS and SVG, no script, no font, image or
link that would reach a network, so it opens the same offline, attached to a mail, years later.

Sections per artifact: a chart per series, the version table (scrolls, with its header kept
in view, for hundreds of versions), the stage history, and for a folder the files changed
between consecutive versions; then the lineage. Numbers are written as ``cpv model list`` writes
them (``cp_manage.formatting``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from cp_manage.artifacts import VersionInfo
from cp_manage.formatting import human_size, human_size_delta, metric_text
from cp_manage.fsutil import atomic_write_bytes
from cp_manage.manage.history import FileStep, History, Report, Series
from cp_manage.pictures.chart import StageMark, line_chart
from cp_manage.pictures.svg import marker, style, text
from cp_manage.pictures.timeline import stage_timeline

logger = logging.getLogger(__name__)

OPEN_FILE_STEPS = 3
"""How many of the latest file changes are shown unfolded."""

CSS = """
:root { color-scheme: light; --ink: #1d2330; --muted: #5b6472; --line: #d9dee7;
  --head: #f2f4f8; --accent: #1f5fa8; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--ink); background: #fff;
  font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
  "Noto Sans", "Liberation Sans", sans-serif; }
main { max-width: 1120px; margin: 0 auto; padding: 1.25rem 1.75rem 3rem; }
h1 { font-size: 1.6rem; margin: 0 0 .2rem; }
h2 { font-size: 1.25rem; margin: 2.2rem 0 .6rem; padding-bottom: .25rem;
  border-bottom: 2px solid var(--line); }
h3 { font-size: 1.05rem; margin: 1.4rem 0 .4rem; }
p { margin: .3rem 0 .6rem; }
.meta, .note, .muted { color: var(--muted); }
nav { margin: .6rem 0 0; }
nav a { color: var(--accent); margin-right: 1rem; text-decoration: none; }
nav a:hover { text-decoration: underline; }
code, .mono { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, "Liberation Mono",
  monospace; font-size: .9em; }
figure { margin: 0 0 1.4rem; }
figcaption { font-weight: 600; margin-bottom: .2rem; }
figcaption .muted { font-weight: 400; }
figcaption svg { vertical-align: -2px; margin-right: .3rem; }
svg.chart, svg.timeline { width: 100%; max-width: 960px; height: auto; display: block; }
svg text { font-size: 12px; fill: var(--ink); }
svg .tick, svg .version, svg .when { fill: var(--muted); font-size: 11.5px; }
svg .value { font-size: 11.5px; paint-order: stroke; stroke: #fff; stroke-width: 3px; }
svg .stage-now { font-weight: 700; }
svg .stage-was { fill: var(--muted); font-style: italic; }
svg .lane { font-weight: 600; }
svg .held-version { font-size: 12px; font-weight: 600; }
svg .demoted { font-size: 15px; font-weight: 700; }
svg .empty { fill: var(--muted); font-style: italic; }
.scroll { max-height: 34rem; overflow: auto; border: 1px solid var(--line); }
table { border-collapse: collapse; width: 100%; font-size: .9rem; }
th, td { padding: .3rem .55rem; border-bottom: 1px solid var(--line); text-align: left;
  vertical-align: top; }
thead th { position: sticky; top: 0; background: var(--head); z-index: 1; white-space: nowrap; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.nowrap { white-space: nowrap; }
td.message { min-width: 14rem; }
tbody tr:nth-child(even) { background: #fafbfd; }
.stage { display: inline-block; padding: 0 .45em; border: 1px solid var(--ink);
  border-radius: .7em; font-size: .85em; font-weight: 600; white-space: nowrap; }
.stage.was { border-style: dashed; border-color: var(--muted); color: var(--muted);
  font-weight: 400; }
.added { color: #157a3b; } .removed { color: #b91c1c; } .modified { color: #7a5a00; }
details { border: 1px solid var(--line); border-radius: 4px; margin: .4rem 0;
  padding: .3rem .6rem; }
details table { margin: .4rem 0; }
summary { cursor: pointer; }
footer { margin-top: 3rem; color: var(--muted); font-size: .85rem; }
"""


def write_report(report: Report, path: Path) -> Path:
    """Write ``report`` to ``path`` as one HTML file (through a temporary file and a rename);
    returns ``path``.

    Raises:
        LocalFileError: the folder cannot be written (full, read-only, not permitted).
    """
    atomic_write_bytes(path, render_report(report).encode("utf-8"))
    logger.info("Wrote the report of %s/%s to %s", report.team, report.model, path)
    return path


def render_report(report: Report) -> str:
    """The whole HTML document."""
    kinds = " and ".join(h.kind for h in report.histories)
    title = f"{report.team}/{report.model}: {kinds} report"
    body = [f"<header><h1>{text(report.team)} / {text(report.model)}</h1>",
            f'<p class="meta">{text(kinds.capitalize())} versions, built from git alone at '
            f"{text(report.generated_at)} by cpv {text(report.cpv_version)}.</p>",
            "<nav>" + " ".join(_nav(h) for h in report.histories if h.versions)
            + ' <a href="#lineage">Lineage</a></nav></header>']
    for history in report.histories:
        body += _history_sections(history)
    body += _lineage(report)
    body.append("<footer>One self-contained file: no script, and nothing here reaches a "
                "network. Hover a point for its version and value.</footer>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{text(title)}</title><style>{CSS}</style></head>\n<body><main>\n"
            + "\n".join(body) + "\n</main></body></html>\n")


def _nav(history: History) -> str:
    kind = history.kind
    links = [("charts", "Charts"), ("versions", "Versions"), ("stages", "Stages")]
    if history.tree:
        links.append(("files", "Files changed"))
    prefix = f"{kind.capitalize()}: " if kind == "data" else ""
    return " ".join(f'<a href="#{kind}-{anchor}">{prefix}{name}</a>' for anchor, name in links)


def _history_sections(history: History) -> list[str]:
    kind, count = history.kind, len(history.versions)
    heading = "Metrics" if kind == "model" else "Data"
    parts = [f'<section id="{kind}-charts" class="kind-{kind}"><h2>{heading} across '
             f"{count} {kind} version{'s' if count != 1 else ''} of "
             f"<code>{text(history.artifact)}</code></h2>"]
    if not history.versions:
        parts.append(f'<p class="note">No {kind} versions yet.</p></section>')
        return parts
    if not history.series:
        parts.append('<p class="note">No version records a numeric metric, so there is '
                     "nothing to chart.</p>")
    names = [str(info.version) for info in history.versions]
    marks = _stage_marks(history)
    for index, series in enumerate(history.series):
        parts.append(_figure(history, series, index, names, marks))
    parts.append("</section>")
    parts += _version_table(history)
    parts += _stages(history)
    if history.tree:
        parts += _files(history)
    return parts


def _fmt(series: Series) -> Callable[[float], str]:
    if series.unit == "bytes":
        return lambda value: human_size(int(value))
    return metric_text


def _stage_marks(history: History) -> list[StageMark]:
    marks = []
    for i, info in enumerate(history.versions):
        now, before = history.current_stages(info.version), history.former_stages(info.version)
        if now or before:
            marks.append(StageMark(i, tuple(now or before), current=bool(now)))
    return marks


def _figure(history: History, series: Series, index: int, names: list[str],
            marks: list[StageMark]) -> str:
    look = style(index)
    labels = [series.text(i) for i in range(len(series.raw))]
    legend = marker(look.marker, 7, 7, 5, title=series.name, css_class="legend")
    key = (f'<svg width="14" height="14" viewBox="0 0 14 14" aria-hidden="true">'
           f'<g fill="{look.colour}">{legend}</g></svg>')
    present = [i for i, v in enumerate(series.values) if v is not None]
    facts = [f"{len(present)} of {len(names)} versions"]
    if present:
        last = present[-1]
        facts.append(f"latest {labels[last]} ({names[last]})")
        high = max(present, key=lambda i: series.values[i] or 0.0)
        low = min(present, key=lambda i: series.values[i] or 0.0)
        facts.append(f"highest {labels[high]} ({names[high]}), lowest {labels[low]} "
                     f"({names[low]})")
    gaps = [f"{names[i]} ({labels[i]})" for i, v in enumerate(series.values)
            if v is None and series.raw[i] is not None]
    if gaps:
        facts.append("not a number: " + ", ".join(gaps[:10])
                     + (f" and {len(gaps) - 10} more" if len(gaps) > 10 else ""))
    whole = all(isinstance(raw, int) for raw in series.raw if raw is not None)
    chart = line_chart(series.name, names, series.values, labels=labels, style=look,
                       fmt=_fmt(series), marks=marks, whole=whole)
    anchor = f"{history.kind}-chart-{index}"
    return (f'<figure id="{anchor}"><figcaption>{key}{text(series.name)} '
            f'<span class="muted">— {text("; ".join(facts))}</span></figcaption>{chart}'
            "</figure>")


def _version_table(history: History) -> list[str]:
    kind = history.kind
    metric_names = history.metric_names if kind == "model" else []
    extra = ["data"] if kind == "model" else ["files", "samples"]
    columns = ["version", "created (UTC)", "author", "size", "md5", *extra, "stages",
               *metric_names, "message"]
    head = "".join(f"<th>{text(c)}</th>" for c in columns)
    rows = []
    for info in history.versions:
        cells = [f"<td class=\"nowrap\"><b>{text(info.version)}</b></td>",
                 f'<td class="nowrap">{text((info.created_at or "")[:19].replace("T", " "))}'
                 "</td>", _author(info.author),
                 f'<td class="num">{text(human_size(info.size_bytes))}</td>',
                 f'<td class="mono" title="{text(info.md5)}">{text(info.md5[:10])}</td>']
        if kind == "model":
            cells.append(f'<td class="nowrap">{text(info.data_version or "-")}</td>')
        else:
            cells += [_number_cell(info.file_count), _number_cell(info.sample_count)]
        cells.append(f"<td>{_stage_badges(history, info)}</td>")
        cells += [_number_cell(info.metrics.get(name)) for name in metric_names]
        cells.append(f'<td class="message">{text(info.message)}</td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    count = len(history.versions)
    scroll = "; the table scrolls, its header stays in view" if count > 15 else ""
    return [f'<section id="{kind}-versions"><h2>{kind.capitalize()} versions</h2>'
            f'<p class="note">{count} versions, oldest first{scroll}. Sizes in binary units, '
            "md5 shortened (hover for the whole).</p>"
            f'<div class="scroll"><table class="versions"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table></div></section>"]


def _author(author: str) -> str:
    name = author.split(" <", 1)[0] or author
    return f'<td class="nowrap" title="{text(author)}">{text(name)}</td>'


def _number_cell(value: object) -> str:
    return f'<td class="num">{text("-" if value is None else metric_text(value))}</td>'


def _stage_badges(history: History, info: VersionInfo) -> str:
    now = [f'<span class="stage">\u2605 {text(s)}</span>'
           for s in history.current_stages(info.version)]
    was = [f'<span class="stage was">was {text(s)}</span>'
           for s in history.former_stages(info.version)]
    return " ".join(now + was) or '<span class="muted">-</span>'


def _stages(history: History) -> list[str]:
    kind, records = history.kind, history.stages
    head = f'<section id="{kind}-stages"><h2>{kind.capitalize()} stages</h2>'
    if not records.events:
        return [head + f'<p class="note">No stage has been assigned to a {kind} version.</p>'
                "</section>"]
    current = ", ".join(f"{stage} \u2192 {version}" for stage, version
                        in sorted(records.current.items())) or "none"
    rows = []
    held: dict[str, str | None] = {}
    for number, event in enumerate(records.events, start=1):
        change = (f"promoted {text(event.version)}" if event.version is not None
                  else "demoted")
        before = held.get(event.stage)
        held[event.stage] = event.version
        rows.append(f'<tr><td class="num">{number}</td><td class="nowrap">'
                    f'{text(event.when[:19].replace("T", " "))}</td><td><b>{text(event.stage)}'
                    f"</b></td><td>{change}</td><td>{text(before or '-')}</td>"
                    f"<td>{text(event.who)}</td><td>{text(event.message)}</td></tr>")
    return [head + f'<p class="note">Now: {text(current)}. Each promotion and demotion is '
            "an append-only git tag, oldest first.</p>" + stage_timeline(records.events)
            + '<div class="scroll"><table class="stage-history"><thead><tr><th>#</th>'
            "<th>when (UTC)</th><th>stage</th><th>change</th><th>replaced</th><th>who</th>"
            f"<th>message</th></tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
            "</section>"]


def _files(history: History) -> list[str]:
    kind = history.kind
    parts = [f'<section id="{kind}-files"><h2>Files changed between {kind} versions</h2>']
    if not history.file_steps:
        parts.append('<p class="note">One version so far: nothing to compare.</p>')
    first_open = len(history.file_steps) - OPEN_FILE_STEPS
    for number, step in enumerate(history.file_steps):
        parts.append(_file_step(kind, step, open_=number >= first_open))
    parts.append("</section>")
    return parts


def _file_step(kind: str, step: FileStep, *, open_: bool) -> str:
    title = f"{text(step.old)} \u2192 {text(step.new)}"
    size = f"size {human_size_delta(step.size_delta)}"
    if step.rows is None:
        return (f"<details><summary><b>{title}</b> · {size} · files not listed in the tags"
                f"</summary><p class=\"note\">A folder of more than 1,000 files is compared "
                f"through its listings: run <code>cpv {kind} diff {text(step.old)} "
                f"{text(step.new)}</code>.</p></details>")
    counts = {change: sum(row["change"] == change for row in step.rows)
              for change in ("added", "removed", "modified")}
    summary = ", ".join(f"{n} {change}" for change, n in counts.items())
    if not step.rows:
        return (f"<details><summary><b>{title}</b> · no file changed · {size}</summary>"
                '<p class="note">Same files; only the metadata differs.</p></details>')
    rows = "".join(
        f'<tr><td class="mono">{text(row["path"])}</td><td class="{row["change"]}">'
        f'{row["change"]}</td><td class="num">{_size(row["old_size"])}</td>'
        f'<td class="num">{_size(row["new_size"])}</td></tr>' for row in step.rows)
    return (f"<details{' open' if open_ else ''}><summary><b>{title}</b> · {summary} · "
            f"{size}</summary><table class=\"files\"><thead><tr><th>file</th><th>change</th>"
            f"<th>old size</th><th>new size</th></tr></thead><tbody>{rows}</tbody></table>"
            "</details>")


def _size(value: object) -> str:
    return text(human_size(value)) if isinstance(value, int) else "-"


def _lineage(report: Report) -> list[str]:
    head = '<section id="lineage"><h2>Lineage: the data each model version was trained on</h2>'
    links = report.lineage
    if not links:
        return [head + '<p class="note">No model version yet.</p></section>']
    if not any(link.data_version for link in links):
        return [head + '<p class="note">No model version records its training data (upload '
                "the data with <code>cpv data upload</code> before the model).</p></section>"]
    rows = []
    for link in links:
        data = link.data
        rows.append(
            f"<tr><td><b>{text(link.model_version)}</b></td><td>\u2192</td>"
            f"<td class=\"nowrap\">{text(link.data_version or '-')}</td>"
            + (f'<td class="nowrap">{text(data.created_at[:19].replace("T", " "))}</td>'
               f"{_number_cell(data.file_count)}{_number_cell(data.sample_count)}"
               f'<td class="num">{text(human_size(data.size_bytes))}</td>'
               if data is not None else '<td colspan="4" class="muted">'
               + ("not a tagged data version" if link.data_version else "not recorded")
               + "</td>") + "</tr>")
    return [head + '<p class="note">Recorded in each model version\'s tag; an untagged '
            "dataset is named by its md5.</p><div class=\"scroll\"><table class=\"lineage\">"
            "<thead><tr><th>model version</th><th></th><th>data version</th>"
            "<th>data created (UTC)</th><th>files</th><th>samples</th><th>size</th></tr>"
            f"</thead><tbody>{''.join(rows)}</tbody></table></div></section>"]
