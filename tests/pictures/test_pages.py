"""The HTML report as a reader sees it, rendered from hand-made histories (no git): one marker
per value, thinned labels for many versions, stages on the charts and as a timeline, the
version table for 3 and 300 versions, file changes of a folder, escaping, and no address
anywhere that would make a browser reach a network. (Real repositories, the CLI and the
browser: ``tests/cli/test_report_cli.py``.)"""

from __future__ import annotations

import math
import re
from dataclasses import replace

import pytest
from report_helpers import read_page, synthetic_versions

from cp_manage.artifacts import VersionInfo
from cp_manage.manage.history import (
    LineageLink,
    Report,
    StageEvent,
    StageRecords,
    history_of,
)
from cp_manage.pictures.page import render_report
from cp_manage.pictures.svg import nice_ticks, thinned
from cp_manage.spec import DATA, ArtifactSpec

MODEL = ArtifactSpec.model()
EVENTS = [
    StageEvent("staging", "v0.1", "2024-03-01T10:00:00Z", "Ann <ann@example.com>", "try it"),
    StageEvent("production", "v0.1", "2024-03-02T10:00:00Z", "Ann <ann@example.com>"),
    StageEvent("staging", "v0.2", "2024-03-05T09:00:00Z", "Bob <bob@example.com>"),
    StageEvent("production", "v0.2", "2024-03-06T09:00:00Z", "Bob <bob@example.com>", "ship"),
    StageEvent("staging", None, "2024-03-07T09:00:00Z", "Bob <bob@example.com>", "done"),
    StageEvent("canary", "v0.3", "2024-03-08T09:00:00Z", "Cy <cy@example.com>"),
]
CURRENT = {"production": "v0.2", "canary": "v0.3"}


def model_report(versions: list[VersionInfo], *, stages: StageRecords | None = None
                 ) -> Report:
    return Report("AI-Convo", "faster-whisper", [history_of(MODEL, versions, stages=stages)],
                  [LineageLink(str(v.version), v.data_version, None) for v in versions])


def versions(count: int) -> list[VersionInfo]:
    return synthetic_versions(count, team="AI-Convo", model="faster-whisper")


def test_three_versions_show_every_point_label_and_name() -> None:
    infos = versions(3)
    page = read_page(render_report(model_report(infos)))
    charts = page.charts["model-charts"]
    assert [c.series for c in charts] == ["accuracy", "loss"]
    for chart in charts:
        assert chart.points == 3
        assert chart.versions == ["v0.1", "v0.2", "v0.3"]
        assert chart.values == [f"{v.metrics[chart.series]:.4g}" for v in infos]
    rows = page.tables["versions"]
    assert [row[:5] for row in rows] == [
        [f"v0.{n}", f"2024-01-01 00:00:0{n}", "Test Engineer", f"{1000 + n} B",
         f"{n:032x}"[:10]] for n in (1, 2, 3)]
    assert [row[-3:] for row in rows] == [
        [f"{v.metrics['accuracy']:.4g}", f"{v.metrics['loss']:.4g}", v.message] for v in infos]
    assert "model-stages" in page.sections and page.timelines == []


def test_three_hundred_versions_thin_their_labels_and_scroll_their_table() -> None:
    infos = versions(300)
    page = read_page(render_report(model_report(infos)))
    for chart in page.charts["model-charts"]:
        assert chart.points == 300  # every version keeps its marker
        assert 10 <= len(chart.values) <= 30, chart.values  # value labels: thinned
        assert f"{infos[-1].metrics[chart.series]:.4g}" in chart.values  # the latest kept
        assert 20 <= len(chart.versions) <= 60
        assert chart.versions[0] == "v0.1" and chart.versions[-1] == "v0.300"
    assert len(page.tables["versions"]) == 300
    assert page.scrolling >= 1  # the table scrolls inside its box


def test_stages_are_marked_on_the_charts_in_the_table_and_on_a_timeline() -> None:
    infos = versions(4)
    html = render_report(model_report(infos, stages=StageRecords(EVENTS, CURRENT)))
    page = read_page(html)
    chart = page.charts["model-charts"][0]
    # Held now: a star and the name; held once: "was" (marks in words, not colour alone).
    assert chart.stages == ["was production, staging", "\u2605 production", "\u2605 canary"]
    stages_column = [row[6] for row in page.tables["versions"]]
    assert stages_column == ["was production was staging",
                             "\u2605 production was staging", "\u2605 canary", "-"]
    assert page.timelines == [6]
    history = page.tables["stage-history"]
    assert [row[:5] for row in history] == [
        ["1", "2024-03-01 10:00:00", "staging", "promoted v0.1", "-"],
        ["2", "2024-03-02 10:00:00", "production", "promoted v0.1", "-"],
        ["3", "2024-03-05 09:00:00", "staging", "promoted v0.2", "v0.1"],
        ["4", "2024-03-06 09:00:00", "production", "promoted v0.2", "v0.1"],
        ["5", "2024-03-07 09:00:00", "staging", "demoted", "v0.2"],
        ["6", "2024-03-08 09:00:00", "canary", "promoted v0.3", "-"]]
    assert "Now: canary \u2192 v0.3, production \u2192 v0.2." in html
    # The timeline: three lanes, a bar per stretch a version held a stage, a cross per demotion.
    timeline = html[html.index('<svg class="timeline"'):]
    timeline = timeline[:timeline.index("</svg>")]
    assert [m.group(1) for m in re.finditer(r'class="lane">([^<]+)<', timeline)] == [
        "staging", "production", "canary"]
    assert timeline.count('class="held"') == 5 and timeline.count('class="demoted"') == 1


def test_a_value_that_is_no_number_leaves_a_gap_and_is_named() -> None:
    infos = versions(3)
    infos[1].metrics = {"accuracy": math.nan, "loss": "diverged", "note": "text only"}
    page = read_page(html := render_report(model_report(infos)))
    charts = {c.series: c for c in page.charts["model-charts"]}
    assert set(charts) == {"accuracy", "loss"}  # "note" holds no number: no chart
    assert charts["accuracy"].points == charts["loss"].points == 2
    assert "not a number: v0.2 (nan)" in html and "not a number: v0.2 (diverged)" in html
    assert page.tables["versions"][1][-4:] == ["nan", "diverged", "text only", "epoch 2"]


def test_text_from_tags_is_shown_as_text() -> None:
    infos = versions(2)
    infos[0] = replace(infos[0], message="<script>alert(1)</script> & more",
                       author="<b>Eve</b> <eve@example.com>")
    infos[0].metrics = {'a"b<c>': 1.5}
    html = render_report(model_report(infos))
    page = read_page(html)
    assert "<script" not in html and "<b>Eve" not in html
    assert page.tables["versions"][0][2] == "<b>Eve</b>"
    assert page.tables["versions"][0][-1] == "<script>alert(1)</script> & more"
    assert 'a"b<c>' in [c.series for c in page.charts["model-charts"]]


def test_nothing_in_the_page_can_reach_a_network() -> None:
    infos = versions(6)
    infos[2] = replace(infos[2], data_version="data/v0.1")
    html = render_report(model_report(infos, stages=StageRecords(EVENTS, CURRENT)))
    page = read_page(html)
    assert re.findall(r"(?i)(?:https?:|ftp:)?//|@import|url\(", html) == []
    assert not {"script", "link", "img", "iframe", "object", "embed", "use", "image"} \
        & page.tags
    references = [v for v in page.attributes if re.match(r"(?i)\s*(?:[a-z]+:|//)", v)]
    assert references == []
    assert all(v.startswith("#") for v in re.findall(r'href="([^"]*)"', html))
    assert "font-family" in html and "system-ui" in html  # the reader's own fonts


def test_a_dataset_charts_its_counts_and_sizes_in_binary_units() -> None:
    infos = [VersionInfo(kind="data", version=f"v0.{n}", tag=f"data/v0.{n}", path="data",
                         md5=f"{n:032x}", size_bytes=1024 * n * n, metrics={},
                         created_at="2024-01-01T00:00:00Z", author="A <a@example.com>",
                         message="", cpv_version="0.1.0", file_count=n + 1,
                         sample_count=None if n == 1 else 10 * n) for n in (1, 2, 3)]
    report = Report("AI-Convo", "faster-whisper", [history_of(DATA, infos)], [])
    page = read_page(render_report(report))
    charts = {c.series: c for c in page.charts["data-charts"]}
    assert list(charts) == ["files", "samples", "size"]
    assert (charts["files"].points, charts["samples"].points) == (3, 2)
    assert charts["size"].values == ["1.0 KiB", "4.0 KiB", "9.0 KiB"]
    assert [row[5:7] for row in page.tables["versions"]] == [["2", "-"], ["3", "20"],
                                                             ["4", "30"]]


def test_a_folder_shows_the_files_changed_between_consecutive_versions() -> None:
    spec = ArtifactSpec.model("checkpoint/")

    def version(n: int, files: dict[str, dict[str, object]] | None) -> VersionInfo:
        return VersionInfo(kind="model", version=f"v0.{n}", tag=f"v0.{n}", path="checkpoint",
                           md5=f"{n:032x}.dir", size_bytes=n * 100, metrics={"loss": 1 / n},
                           created_at="2024-01-01T00:00:00Z", author="A <a@example.com>",
                           message="", cpv_version="0.1.0", file_count=2, files=files)

    one = {"config.json": {"size": 10, "md5": "a" * 32},
           "shard-1.safetensors": {"size": 65536, "md5": "b" * 32}}
    two = {"config.json": {"size": 10, "md5": "a" * 32},
           "shard-1.safetensors": {"size": 3000, "md5": "c" * 32},
           "tokenizer.json": {"size": 2048, "md5": "d" * 32}}
    infos = [version(1, one), version(2, two), version(3, two), version(4, None)]
    html = render_report(Report("AI-Convo", "bert-large", [history_of(spec, infos)], []))
    page = read_page(html)
    assert page.tables["files"] == [["shard-1.safetensors", "modified", "64.0 KiB", "2.9 KiB"],
                                    ["tokenizer.json", "added", "-", "2.0 KiB"]]
    assert "v0.1 \u2192 v0.2</b> · 1 added, 0 removed, 1 modified · size +100 B" in html
    assert "v0.2 \u2192 v0.3</b> · no file changed" in html
    assert "v0.3 \u2192 v0.4</b> · size +100 B · files not listed in the tags" in html
    assert "cpv model diff v0.3 v0.4" in html


@pytest.mark.parametrize(("low", "high", "whole", "expected"), [
    (0.5, 0.84, False, [0.5, 0.6, 0.7, 0.8, 0.9]),
    (1, 2, True, [1, 2]),
    (8, 40, True, [0, 10, 20, 30, 40]),
    (5, 5, False, [4.6, 4.8, 5.0, 5.2, 5.4]),
    (-2, 7, False, [-2.5, 0, 2.5, 5, 7.5]),
])
def test_axis_ticks_are_round_numbers(low: float, high: float, whole: bool,
                                      expected: list[float]) -> None:
    assert nice_ticks(low, high, whole=whole) == expected


def test_label_thinning_keeps_what_matters() -> None:
    assert thinned(6, spacing=46, width=848) == set(range(6))
    shown = thinned(300, spacing=46, width=848, keep=[299, 137, 290])
    assert {0, 137, 299} <= shown and 290 not in shown and len(shown) <= 20
    assert all(abs(a - b) >= 17 for a in shown for b in shown if a != b)  # none overlap
