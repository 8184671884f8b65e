"""The report through the API: ``report()`` gives what the page shows, ``write_report(path)``
writes it where the caller means (a path relative to the caller's current directory), both
from git alone, with a clone or without one."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import MODEL, TEAM, ModelRepo
from report_helpers import read_page

from cp_manage import CombinedCheckpointsManage, ModelsCheckpointsManage, UnknownMetricError


def test_write_report_takes_a_path_from_the_callers_directory(
        repo: ModelRepo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for n, wer in enumerate((0.3, 0.2), start=1):
        repo.upload({"wer": wer, "tag": "best" if n == 2 else "first"}, seed=n)
        repo.manager.tag()
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    written = repo.manager.write_report("out/report.html")
    assert written == here / "out" / "report.html"
    page = read_page(written.read_text(encoding="utf-8"))
    assert [(c.series, c.points) for c in page.charts["model-charts"]] == [("wer", 2)]

    history = repo.manager.report().histories[0]
    assert [s.name for s in history.series] == ["wer"]  # text metrics are not charted
    assert history.metric_names == ["tag", "wer"]  # ... but the table shows them
    with pytest.raises(UnknownMetricError) as caught:
        history.series_named(["wer", "accuracy"])
    assert caught.value.known == ["wer"] and "Known metrics: wer." in str(caught.value)


def test_the_combined_report_without_a_clone(repo: ModelRepo, tmp_path: Path) -> None:
    repo.upload({"wer": 0.3}, seed=1)
    repo.manager.tag()
    nowhere = tmp_path / "no-clone-here"
    manager = CombinedCheckpointsManage(team_name=TEAM, model_name=MODEL, repo_path=nowhere)
    report = manager.report()
    assert [h.kind for h in report.histories] == ["model", "data"]
    assert [str(i.version) for i in report.histories[0].versions] == ["v0.1"]
    assert [link.model_version for link in report.lineage] == ["v0.1"]
    assert not nowhere.exists()  # read from the remote's tags, nothing written here
    alone = ModelsCheckpointsManage(team_name=TEAM, model_name=MODEL, repo_path=nowhere)
    assert alone.report().histories[0].versions == report.histories[0].versions
