"""Fixtures shared by the whole suite.

Every test runs with its own HOME, CPV_HOME, git configuration and DVC configuration under
``tmp_path`` (see ``helpers.isolate_environment``), so nothing reads or writes the developer's
files and tests cannot see each other's remotes. Real git, real DVC, real folders: no mocks.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import ModelRepo, init_repo, isolate_environment
from report_helpers import ARTIFACTS

_STARTED = time.time()


@pytest.fixture(scope="session", autouse=True)
def _session_isolation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A baseline for code that runs outside a test (module-scoped fixtures, collection)."""
    with pytest.MonkeyPatch.context() as mp:
        isolate_environment(mp, tmp_path_factory.mktemp("session-env"))
        yield


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """This test's own HOME, CPV_HOME and gitconfig (``{"home", "cpv_home", "gitconfig"}``)."""
    return isolate_environment(monkeypatch, tmp_path / "env")


@pytest.fixture
def repo(tmp_path: Path, isolated_env: dict[str, Path]) -> ModelRepo:
    """A freshly initialised model repository on the embedded default remotes."""
    return init_repo(tmp_path / "work" / "faster-whisper", isolated_env["cpv_home"])


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """An empty folder outside any repository."""
    path = tmp_path / "outside"
    path.mkdir()
    return path


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Name the files this run kept for people to look at (the report's screenshot)."""
    kept = sorted(p for p in ARTIFACTS.glob("*") if p.stat().st_mtime >= _STARTED) \
        if ARTIFACTS.is_dir() else []
    if kept:
        terminalreporter.write_sep("-", "test artifacts")
        for path in kept:
            terminalreporter.write_line(str(path))
