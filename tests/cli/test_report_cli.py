"""``cpv model report`` / ``data report`` / ``combined report`` and ``cpv model plot`` on real
repositories (git + DVC, local storage): the report opened in Debian's headless Chromium with
every request sent to a proxy that would see it, its screenshot kept and its pixels read;
the report without a clone; the plot as plain text, JSON and on a terminal; a folder model's
file changes; and 3 and 300 versions written straight into git.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from artifact_helpers import SHARDS, init_folder_repo, write_hf_folder
from data_helpers import SEED_DATASET, data_manager, write_dataset
from helpers import (
    MODEL,
    TEAM,
    ModelRepo,
    assert_one_error_line,
    init_repo,
    isolate_environment,
    run_cpv,
)
from report_helpers import (
    ARTIFACTS,
    CHROMIUM,
    NO_CHROMIUM,
    blobs,
    inked,
    open_in_chromium,
    read_page,
    read_png,
    regions,
    synthetic_versions,
    write_versions,
)
from test_output_manners import run_on_terminal

from cp_manage.formatting import human_size

ACCURACY = [0.61, 0.68, 0.72, 0.7, 0.79, 0.83]
LOSS = [0.92, 0.71, 0.6, 0.63, 0.44, 0.38]
NO_CLONE = ("--team", TEAM, "--model", MODEL)
PLOT_BACKGROUND = (0xFB, 0xFC, 0xFE)
SERIES_COLOURS = [(0x1F, 0x5F, 0xA8), (0xB4, 0x46, 0x0B)]  # accuracy, loss: see pictures.svg
SCREENSHOT = ARTIFACTS / "report-6-versions.png"


@dataclass
class Six:
    repo: ModelRepo
    cpv_home: Path


@pytest.fixture(scope="module")
def six(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Six]:
    """v0.1 ... v0.6 with accuracy and loss; v0.1-v0.3 trained on data/v0.1, v0.4-v0.6 on
    data/v0.2; production v0.3 then v0.6, staging v0.5."""
    root = tmp_path_factory.mktemp("six")
    with pytest.MonkeyPatch.context() as mp:
        env = isolate_environment(mp, root / "env")
        repo = init_repo(root / "work" / MODEL, env["cpv_home"])
        data = data_manager(repo)
        data.import_data_init(write_dataset(root / "dataset", SEED_DATASET))
        data.tag_data_checkpoint()
        for n, (accuracy, loss) in enumerate(zip(ACCURACY, LOSS, strict=True), start=1):
            if n == 4:
                write_dataset(repo.root / "data", {"train/part-1.jsonl": b'{"text": "h"}\n'})
                data.upload_data_checkpoint()
                data.tag_data_checkpoint()
            repo.write_model(1024 * n, seed=n)
            repo.manager.upload(metrics={"accuracy": accuracy, "loss": loss},
                                message=f"epoch {n}")
            repo.manager.tag()
        repo.manager.promote("v0.3", "production", message="first release")
        repo.manager.promote("v0.5", "staging")
        repo.manager.promote("v0.6", "production", message="A/B test won")
        yield Six(repo, env["cpv_home"])


@pytest.fixture
def elsewhere(six: Six, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty folder on a machine with the same configuration and no clone."""
    monkeypatch.setenv("CPV_HOME", str(six.cpv_home))
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    return folder


@pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM)
def test_the_report_of_six_versions_in_a_real_browser(six: Six, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    result = run_cpv("model", "report", "-o", out, cwd=six.repo.root)
    assert result.stdout == f"{out}\n"
    html = out.read_text(encoding="utf-8")
    page = read_page(html)
    charts = page.charts["model-charts"]
    assert [(c.series, c.points) for c in charts] == [("accuracy", 6), ("loss", 6)]
    assert [r[0] for r in page.tables["versions"]] == [f"v0.{n}" for n in range(1, 7)]
    assert [r[2] for r in page.tables["lineage"]] == ["data/v0.1"] * 3 + ["data/v0.2"] * 3
    assert re.findall(r"(?i)(?:https?:)?//", html) == []  # no address to fetch anything from

    SCREENSHOT.parent.mkdir(exist_ok=True)
    run = open_in_chromium(out, SCREENSHOT, scratch=tmp_path / "chromium")
    print(f"\nscreenshot of the 6-version report: {SCREENSHOT}")
    # The page asked for nothing: every connection the proxy saw is one of Chromium's own
    # background services (update checks, account list), which the net log names as such.
    assert run.page_requests == []
    own_hosts = {re.sub(r"^\w+://([^/:]+).*", r"\1", url) for url in run.own_requests}
    assert all(any(host in line for host in own_hosts) for line in run.proxied), run.proxied

    image = read_png(SCREENSHOT, max_rows=1100)
    plots = [box for box in regions(image, PLOT_BACKGROUND) if box[3] - box[1] > 100]
    assert len(plots) == 2, plots  # the two charts' plot areas, one above the other
    for box, colour in zip(plots, SERIES_COLOURS, strict=True):
        assert blobs(image, box, colour) == 6  # six markers drawn, each on its own
        assert inked(image, box, PLOT_BACKGROUND) > 2000  # lines, grid, labels: not blank


@pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM)
def test_the_browser_check_sees_a_page_that_fetches(tmp_path: Path) -> None:
    """The control: a page with one address is caught by both the net log and the proxy."""
    page = tmp_path / "fetches.html"
    page.write_text('<!DOCTYPE html><p>x</p><img src="http://example.invalid/pixel.png">')
    run = open_in_chromium(page, tmp_path / "fetches.png", scratch=tmp_path / "chromium",
                           size=(400, 300))
    assert run.page_requests == ["http://example.invalid/pixel.png"]
    assert any("example.invalid" in line for line in run.proxied), run.proxied


def test_reports_land_beside_the_repository_and_print_their_path(six: Six,
                                                                 tmp_path: Path) -> None:
    root = six.repo.root
    inside = run_cpv("model", "report", cwd=root / "data").stdout
    assert inside == f"{root.parent / 'faster-whisper-report.html'}\n"
    assert not list(root.glob("*.html"))  # never in the working tree unasked
    work = tmp_path / "work"
    work.mkdir()
    data = run_cpv("data", "report", "--repo", root, cwd=work).stdout.strip()
    assert data == str(work / "faster-whisper-data-report.html")
    page = read_page(Path(data).read_text(encoding="utf-8"))
    assert [(c.series, c.points) for c in page.charts["data-charts"]] == [
        ("files", 2), ("samples", 2), ("size", 2)]
    assert [r[0] for r in page.tables["files"]] == ["train/part-1.jsonl"]
    combined = run_cpv("combined", "report", "-o", "both.html", "--repo", root,
                       cwd=work).stdout.strip()
    page = read_page((work / "both.html").read_text(encoding="utf-8"))
    assert combined == str(work / "both.html")
    assert {"model-charts", "model-versions", "data-charts", "data-versions", "data-files",
            "lineage"} <= set(page.sections)
    assert len(page.tables["versions"]) == 6 + 2


def test_the_report_without_a_clone_is_the_clones(six: Six, elsewhere: Path,
                                                  tmp_path: Path) -> None:
    written = run_cpv("model", "report", *NO_CLONE, cwd=elsewhere).stdout.strip()
    assert written == str(elsewhere / "faster-whisper-report.html")
    assert sorted(p.name for p in elsewhere.iterdir()) == ["faster-whisper-report.html"]
    run_cpv("model", "report", "-o", tmp_path / "clone.html", cwd=six.repo.root)
    without = read_page(Path(written).read_text(encoding="utf-8"))
    clone = read_page((tmp_path / "clone.html").read_text(encoding="utf-8"))
    assert without.tables == clone.tables and without.charts == clone.charts
    nowhere = tmp_path / "nowhere"
    nowhere.mkdir()
    line = assert_one_error_line(run_cpv("model", "report", cwd=nowhere, expect=None))
    assert "--team T --model M" in line and not list(nowhere.iterdir())


def test_plot_prints_plain_numbers_when_not_on_a_terminal(six: Six) -> None:
    shown = run_cpv("model", "plot", "loss", "accuracy", cwd=six.repo.root).stdout
    stages = {5: "staging", 6: "production"}
    assert shown.splitlines() == ["version  loss  accuracy  stages"] + [
        f"v0.{n}     {loss:<4}  {acc:<8}  {stages.get(n, '-')}".rstrip()
        for n, (loss, acc) in enumerate(zip(LOSS, ACCURACY, strict=True), start=1)]
    data = run_cpv("data", "plot", "files", "size", cwd=six.repo.root).stdout
    size = sum(len(content) for content in SEED_DATASET.values())
    assert [line.split() for line in data.splitlines()[1:]] == [
        ["v0.1", "5", *human_size(size).split(), "-"],
        ["v0.2", "6", *human_size(size + 14).split(), "-"]]  # written as 'list' writes it


def test_plot_json_gives_the_series(six: Six, elsewhere: Path) -> None:
    shown = json.loads(run_cpv("model", "plot", "accuracy", "--json", *NO_CLONE,
                               cwd=elsewhere).stdout)
    assert shown == {"kind": "model", "versions": [f"v0.{n}" for n in range(1, 7)],
                     "series": {"accuracy": ACCURACY},
                     "stages": {"production": "v0.6", "staging": "v0.5"}}


def test_plot_of_an_unknown_metric_names_the_known_ones(six: Six) -> None:
    line = assert_one_error_line(run_cpv("model", "plot", "accuracy", "acuracy",
                                         cwd=six.repo.root, expect=None))
    assert line == ("error: No model version records the metric 'acuracy'. Known metrics: "
                    "accuracy, loss.")
    line = assert_one_error_line(run_cpv("data", "plot", "accuracy", cwd=six.repo.root,
                                         expect=None))
    assert line.endswith("Known metrics: files, samples, size.")


def test_plot_draws_on_a_terminal(six: Six) -> None:
    code, drawn, _ = run_on_terminal("model", "plot", "accuracy", "loss", cwd=six.repo.root,
                                     stream="stdout", env={"LINES": "50"})
    assert code == 0
    plain = re.sub(r"\x1b\[[0-9;]*m", "", drawn)
    assert "accuracy (6 of 6 versions)" in plain and "loss (6 of 6 versions)" in plain
    assert plain.count("\u25cf") >= 6 and plain.count("\u25a0") >= 6  # shapes, not colour
    assert "v0.1" in plain and "v0.6" in plain and "0.83" in plain and "0.38" in plain
    assert "\x1b[" in drawn  # coloured on a terminal ...
    _, uncoloured, _ = run_on_terminal("model", "plot", "accuracy", cwd=six.repo.root,
                                       stream="stdout", env={"NO_COLOR": "1"})
    assert "\x1b[" not in uncoloured and "\u25cf" in uncoloured  # ... unless NO_COLOR


def test_a_folder_models_report_lists_the_files_each_version_changed(
        tmp_path: Path, isolated_env: dict[str, Path]) -> None:
    repo = init_folder_repo(tmp_path / "bert-large", isolated_env["cpv_home"])
    source = write_hf_folder(tmp_path / "run" / "best")
    repo.manager.upload(source, metrics={"loss": 0.5})
    repo.manager.tag()
    (source / SHARDS[0]).write_bytes(b"w" * 3000)
    (source / "tokenizer.json").unlink()
    repo.manager.upload(source, metrics={"loss": 0.25})
    repo.manager.tag()
    run_cpv("model", "report", "-o", tmp_path / "r.html", cwd=repo.root)
    page = read_page((tmp_path / "r.html").read_text(encoding="utf-8"))
    assert page.tables["files"] == [[SHARDS[0], "modified", "64.0 KiB", "2.9 KiB"],
                                    ["tokenizer.json", "removed", "18 B", "-"]]


@pytest.mark.parametrize("count", [3, 300])
def test_many_versions_written_into_git(repo: ModelRepo, tmp_path: Path, count: int) -> None:
    """Versions tagged straight into git with cpv's metadata (not ``count`` uploads)."""
    _, commit = repo.upload({"accuracy": 0.5})
    write_versions(repo.root, synthetic_versions(count, team=TEAM, model=MODEL), commit=commit)
    run_cpv("model", "report", "-o", tmp_path / "r.html", cwd=repo.root)
    page = read_page((tmp_path / "r.html").read_text(encoding="utf-8"))
    assert len(page.tables["versions"]) == count
    for chart in page.charts["model-charts"]:
        assert chart.points == count
        assert chart.versions[0] == "v0.1" and chart.versions[-1] == f"v0.{count}"
        assert len(chart.values) == count if count == 3 else len(chart.values) <= 30
    plotted = run_cpv("model", "plot", "loss", cwd=repo.root).stdout.splitlines()
    assert len(plotted) == 1 + count and plotted[-1].startswith(f"v0.{count} ")
