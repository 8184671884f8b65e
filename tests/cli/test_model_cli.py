"""The model lifecycle through the ``cpv`` command, run as a real subprocess."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from helpers import (
    MODEL,
    TEAM,
    ModelRepo,
    isolate_environment,
    md5_of,
    run_cpv,
    storage_object,
    write_random,
)

REQUIRED_KEYS = {"version", "created_at", "metrics", "size_bytes", "md5", "commit"}


@dataclass
class CliHistory:
    repo: ModelRepo
    md5: dict[str, str] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)


@pytest.fixture(scope="module")
def cli_history(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CliHistory]:
    """init, then v0.1 (auto), v1.0 (--major), v1.5 (explicit): all through the CLI."""
    root = tmp_path_factory.mktemp("cli")
    with pytest.MonkeyPatch.context() as mp:
        env = isolate_environment(mp, root / "env")
        path = root / "repos" / MODEL
        init = run_cpv("init", "--team", TEAM, "--model", MODEL, "--path", path, cwd=root)
        repo = ModelRepo(path, env["cpv_home"])
        made = CliHistory(repo, outputs={"init": init.stdout})
        again = run_cpv("init", "--team", TEAM, "--model", MODEL, "--path", path, cwd=root)
        made.outputs["init-again"] = again.stdout

        made.md5["v0.1"] = repo.write_model(3000, seed=1)
        run_cpv("model", "upload", "--metric", "accuracy=0.5", "--metric", "loss=0.9",
                "--metric", "note=first", "-m", "epoch 1", cwd=path)
        made.outputs["unchanged"] = run_cpv("model", "upload", "--metric", "accuracy=0.5",
                                            "--metric", "loss=0.9", "--metric", "note=first",
                                            cwd=path).stdout
        made.outputs["tag-0.1"] = run_cpv("model", "tag", cwd=path).stdout

        made.md5["v1.0"] = repo.write_model(3001, seed=2)
        metrics_file = root / "metrics.json"
        metrics_file.write_text(json.dumps({"accuracy": 0.75, "loss": 0.5}))
        sub = path / "notebooks"
        sub.mkdir()
        run_cpv("model", "upload", "../model.bin", "--metrics-file", metrics_file, cwd=sub)
        run_cpv("model", "tag", "--major", cwd=sub)  # from a subfolder of the repository

        made.md5["v1.5"] = repo.write_model(3002, seed=3)
        elsewhere = root / "elsewhere"
        elsewhere.mkdir()
        run_cpv("model", "upload", "--repo", path, "--metric", "accuracy=0.8", cwd=elsewhere)
        run_cpv("model", "tag", "v1.5", "-m", "best so far", "--repo", path, cwd=elsewhere)
        yield made


def test_init_reports_what_it_did(cli_history: CliHistory) -> None:
    assert f"Initialised {TEAM}/{MODEL}" in cli_history.outputs["init"]
    assert "already initialised" in cli_history.outputs["init-again"]
    assert "no new commit" in cli_history.outputs["unchanged"]
    assert "Tagged v0.1" in cli_history.outputs["tag-0.1"]


def test_list_json_is_oldest_first(cli_history: CliHistory) -> None:
    repo = cli_history.repo
    listing = json.loads(run_cpv("model", "list", "--json", cwd=repo.root).stdout)
    assert isinstance(listing, list)
    assert [v["version"] for v in listing] == ["v0.1", "v1.0", "v1.5"]
    for entry in listing:
        assert REQUIRED_KEYS <= entry.keys()
        assert entry["md5"] == cli_history.md5[entry["version"]]
        assert entry["commit"] == repo.git("rev-parse", f"{entry['version']}^{{commit}}")
    assert listing[0]["metrics"] == {"accuracy": 0.5, "loss": 0.9, "note": "first"}
    assert listing[1]["metrics"] == {"accuracy": 0.75, "loss": 0.5}
    assert [v["size_bytes"] for v in listing] == [3000, 3001, 3002]
    assert listing[2]["message"] == "best so far"


def test_list_table(cli_history: CliHistory) -> None:
    out = run_cpv("model", "list", cwd=cli_history.repo.root).stdout
    assert out.index("v0.1") < out.index("v1.0") < out.index("v1.5")
    assert "accuracy=0.5" in out


def test_show(cli_history: CliHistory) -> None:
    root = cli_history.repo.root
    shown = json.loads(run_cpv("model", "show", "v1.0", "--json", cwd=root).stdout)
    assert isinstance(shown, dict) and REQUIRED_KEYS <= shown.keys()
    assert shown["version"] == "v1.0" and shown["md5"] == cli_history.md5["v1.0"]
    head = json.loads(run_cpv("model", "show", "--json", cwd=root).stdout)
    # HEAD is v1.5: shown exactly as by its name.
    assert head == json.loads(run_cpv("model", "show", "v1.5", "--json", cwd=root).stdout)
    assert head["commit"] == cli_history.repo.head() and head["version"] == "v1.5"
    text = run_cpv("model", "show", "v1.5", cwd=root).stdout
    assert cli_history.md5["v1.5"] in text and "accuracy=0.8" in text


def test_diff(cli_history: CliHistory) -> None:
    root = cli_history.repo.root
    out = run_cpv("model", "diff", "v0.1", "v1.0", cwd=root).stdout
    assert "accuracy" in out and "+0.25" in out and "-0.4" in out
    result = json.loads(run_cpv("model", "diff", "v0.1", "v1.0", "--json", cwd=root).stdout)
    assert result["metrics"]["accuracy"]["delta"] == pytest.approx(0.25)
    assert result["metrics"]["note"] == {"old": "first", "new": None, "delta": None}


def test_download_leaves_the_repository_alone(cli_history: CliHistory, tmp_path: Path) -> None:
    repo = cli_history.repo
    before = repo.snapshot()
    out = run_cpv("model", "download", "v1.0", "-o", tmp_path / "v1", cwd=repo.root)
    assert cli_history.md5["v1.0"] in out.stdout  # says the md5 was verified
    assert md5_of(tmp_path / "v1" / "model.bin") == cli_history.md5["v1.0"]
    # Default folder: ./MODEL-VERSION in the current directory.
    run_cpv("model", "download", "v0.1", "--repo", repo.root, cwd=tmp_path)
    assert md5_of(tmp_path / f"{MODEL}-v0.1" / "model.bin") == cli_history.md5["v0.1"]
    run_cpv("model", "download", "-o", tmp_path / "head", cwd=repo.root)
    assert md5_of(tmp_path / "head" / "model.bin") == cli_history.md5["v1.5"]
    assert repo.snapshot() == before


def test_storage_has_each_version(cli_history: CliHistory) -> None:
    for md5 in cli_history.md5.values():
        assert md5_of(storage_object(cli_history.repo.storage, md5)) == md5


def test_revert_through_the_cli(repo: ModelRepo) -> None:
    first = repo.write_model(seed=1)
    run_cpv("model", "upload", "--metric", "accuracy=0.1", cwd=repo.root)
    run_cpv("model", "tag", cwd=repo.root)
    repo.write_model(seed=2)
    run_cpv("model", "upload", "--metric", "accuracy=0.2", cwd=repo.root)
    run_cpv("model", "tag", cwd=repo.root)
    head = repo.head()

    out = run_cpv("model", "revert", "v0.1", cwd=repo.root).stdout
    assert "Reverted" in out and repo.head() != head
    assert repo.git("rev-parse", "HEAD~1") == head
    assert md5_of(repo.model_file) == first
    assert repo.git("ls-remote", "origin", "refs/heads/main").split()[0] == repo.head()
    assert "nothing changed" in run_cpv("model", "revert", "v0.1", cwd=repo.root).stdout

    repo.write_model(seed=3)  # training wrote new weights, never uploaded
    before = repo.snapshot()
    refused = run_cpv("model", "revert", "v0.2", cwd=repo.root, expect=1)
    assert "never uploaded" in refused.stderr and "--force" in refused.stderr
    assert repo.snapshot() == before
    run_cpv("model", "revert", "v0.2", "--force", cwd=repo.root)
    assert repo.manager.get_model_metadata()["metrics"] == {"accuracy": 0.2}


@pytest.mark.parametrize("args", [
    ["model", "tag", "v1.0", "--major"],
    ["model", "upload", "--metric", "no-equals-sign"],
    ["model", "revert"],
    ["model", "diff", "v0.1"],
    ["model", "frobnicate"],
    ["model", "list", "--bogus"],
    ["init", "--team", TEAM],
    ["model", "download", "--team", TEAM],
])
def test_usage_errors_exit_2(cli_history: CliHistory, args: list[str]) -> None:
    repo = cli_history.repo
    before = repo.snapshot()
    result = run_cpv(*args, cwd=repo.root, expect=2)
    assert "Traceback" not in result.stderr
    assert repo.snapshot() == before


def test_version_and_help(tmp_path: Path) -> None:
    assert "0." in run_cpv("--version", cwd=tmp_path).stdout
    for group in ([], ["model"], ["config"]):
        assert "Usage" in run_cpv(*group, "--help", cwd=tmp_path).stdout


def test_upload_of_a_missing_metrics_file_fails_cleanly(repo: ModelRepo, tmp_path: Path
                                                         ) -> None:
    write_random(repo.model_file)
    before = repo.snapshot()
    result = run_cpv("model", "upload", "--metrics-file", tmp_path / "nope.json",
                     cwd=repo.root, expect=None)
    assert result.returncode in (1, 2) and "Traceback" not in result.stderr
    assert repo.snapshot() == before
