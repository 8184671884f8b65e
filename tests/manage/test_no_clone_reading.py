"""Reading without a clone: ``list``, ``show``, ``diff`` (models, data, combined) on a machine
that has only the configuration, through the CLI and the API, answer exactly as a clone does.

The history is made once, on the embedded default remotes; each test reads it from an empty
folder with the same ``CPV_HOME``, so ``git_url_template``'s default points at the bare remote.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from data_helpers import (
    SEED_DATASET,
    combined_manager,
    data_manager,
    upload_model,
    write_dataset,
)
from helpers import (
    MODEL,
    TEAM,
    ModelRepo,
    assert_one_error_line,
    git,
    init_repo,
    isolate_environment,
    run_cpv,
)

from cp_manage import (
    CombinedCheckpointsManage,
    DataCheckpointsManage,
    ModelsCheckpointsManage,
    RemoteError,
    VersionNotFoundError,
)

NO_CLONE = ("--team", TEAM, "--model", MODEL)
# Commands a machine without a clone cannot run: no hint there may send the user to them.
NEEDS_A_CLONE = ("cpv init", "doctor", "upload", "revert", "cpv model tag", "cpv data tag",
                 "'git ", "--repo")


@dataclass
class Released:
    repo: ModelRepo
    cpv_home: Path


@pytest.fixture(scope="module")
def released(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Released]:
    """v0.1, v0.2 (models with metrics); data/v0.1; v0.3 + data/v0.3 (a combined release);
    v0.4, a plain annotated tag cpv did not write, on a commit holding a model and metrics."""
    root = tmp_path_factory.mktemp("released")
    with pytest.MonkeyPatch.context() as mp:
        env = isolate_environment(mp, root / "env")
        repo = init_repo(root / "work" / MODEL, env["cpv_home"])
        models, data = repo.manager, data_manager(repo)
        upload_model(repo, {"accuracy": 0.5, "loss": 0.9}, seed=1)
        models.tag_model_checkpoint(message="first")
        upload_model(repo, {"accuracy": 0.7, "loss": 0.4}, seed=2)
        models.tag_model_checkpoint()
        data.import_data_init(write_dataset(root / "dataset", SEED_DATASET))
        data.tag_data_checkpoint(message="seed data")
        write_dataset(repo.root / "data", {"train/part-1.jsonl": b'{"text": "h"}\n'})
        data.upload_data_checkpoint()
        upload_model(repo, {"accuracy": 0.8, "loss": 0.3}, seed=3)
        combined_manager(repo).tag_model_and_data(model_message="release")
        upload_model(repo, {"accuracy": 0.9, "loss": 0.2}, seed=4)
        repo.git("tag", "-a", "v0.4", "-m", "tagged by hand")
        repo.git("push", "--quiet", "origin", "v0.4")
        yield Released(repo, env["cpv_home"])


@pytest.fixture
def elsewhere(released: Released, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty folder on a machine with the same configuration (``CPV_HOME``) and no clone."""
    monkeypatch.setenv("CPV_HOME", str(released.cpv_home))
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    return folder


def _both(released: Released, elsewhere: Path, *args: str, latest: str | None = None
          ) -> tuple[str, str]:
    """stdout of ``cpv ARGS`` in the clone and without one (``latest`` in the clone stands for
    no version without one)."""
    in_clone = run_cpv(*args, *([latest] if latest else []), cwd=released.repo.root).stdout
    without = run_cpv(*args, *NO_CLONE, cwd=elsewhere).stdout
    return in_clone, without


@pytest.mark.parametrize("args", [
    ("model", "list"), ("model", "list", "--json"),
    ("model", "show", "v0.1"), ("model", "show", "v0.1", "--json"),
    ("model", "show", "v0.4", "--json"),  # not cpv's tag: read from its commit
    ("model", "diff", "v0.1", "v0.3"), ("model", "diff", "v0.2", "v0.4", "--json"),
    ("data", "list"), ("data", "list", "--json"),
    ("data", "show", "data/v0.1", "--json"), ("data", "show", "v0.3"),
    ("data", "diff", "v0.1", "v0.3"), ("data", "diff", "v0.1", "data/v0.3", "--json"),
    ("combined", "show", "v0.3"), ("combined", "show", "v0.3", "--json"),
    ("combined", "show", "v0.2", "--json"),
])
def test_the_cli_reads_without_a_clone_as_in_a_clone(released: Released, elsewhere: Path,
                                                     args: tuple[str, ...]) -> None:
    in_clone, without = _both(released, elsewhere, *args)
    assert without == in_clone
    assert without.strip()
    if "--json" in args:
        json.loads(without)
    assert list(elsewhere.iterdir()) == []  # nothing is made in the current directory


def test_no_version_without_a_clone_means_the_latest(released: Released,
                                                     elsewhere: Path) -> None:
    for args, latest in ((("model", "show", "--json"), "v0.4"),
                         (("data", "show", "--json"), "v0.3"),
                         (("combined", "show", "--json"), "v0.4")):
        in_clone, without = _both(released, elsewhere, *args, latest=latest)
        assert without == in_clone, args
    assert json.loads(without)["model"]["version"] == "v0.4"
    assert list(elsewhere.iterdir()) == []


def test_what_the_cli_lists_without_a_clone(released: Released, elsewhere: Path) -> None:
    models = json.loads(run_cpv("model", "list", "--json", *NO_CLONE, cwd=elsewhere).stdout)
    assert [m["version"] for m in models] == ["v0.1", "v0.2", "v0.3", "v0.4"]
    assert [m["metrics"]["accuracy"] for m in models] == [0.5, 0.7, 0.8, 0.9]
    assert models[0]["message"] == "first"
    assert models[2]["data_version"] == "data/v0.3"
    data = json.loads(run_cpv("data", "list", "--json", *NO_CLONE, cwd=elsewhere).stdout)
    assert [d["version"] for d in data] == ["v0.1", "v0.3"]
    assert [d["file_count"] for d in data] == [len(SEED_DATASET), len(SEED_DATASET) + 1]
    diff = json.loads(run_cpv("data", "diff", "v0.1", "v0.3", "--json", *NO_CLONE,
                              cwd=elsewhere).stdout)
    assert diff["files"]["added"] == ["train/part-1.jsonl"]


def test_the_mirror_holds_every_tag_and_nothing_else(released: Released,
                                                            elsewhere: Path) -> None:
    run_cpv("model", "list", *NO_CLONE, cwd=elsewhere)
    mirror = released.cpv_home / "mirrors" / TEAM / f"{MODEL}.git"
    refs = git("for-each-ref", "--format=%(refname)", cwd=mirror).splitlines()
    assert refs == [f"refs/tags/{t}" for t in ("data/v0.1", "data/v0.3", "v0.1", "v0.2",
                                               "v0.3", "v0.4")]
    # The history behind the tags (it dates an untagged artifact by its upload), no branch.
    assert not (mirror / "shallow").exists()


def test_the_api_reads_without_a_clone_as_in_a_clone(released: Released, elsewhere: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    folder = elsewhere / "not-a-clone"
    folder.mkdir()
    clone = released.repo.root
    models = ModelsCheckpointsManage(team_name=TEAM, model_name=MODEL, repo_path=folder)
    in_clone = ModelsCheckpointsManage(repo_path=clone)
    assert models.read_checkpoint_tag() == in_clone.read_checkpoint_tag() == [
        "v0.1", "v0.2", "v0.3", "v0.4"]
    assert models.list_versions() == in_clone.list_versions()
    for version in ("v0.1", "v0.4"):
        assert models.get_model_metadata(version) == in_clone.get_model_metadata(version)
    assert models.get_model_metadata() == in_clone.get_model_metadata("v0.4")
    assert models.get_model_metadata("v0.1")["metrics"] == {"accuracy": 0.5, "loss": 0.9}
    assert models.diff("v0.1", "v0.4") == in_clone.diff("v0.1", "v0.4")

    data = DataCheckpointsManage(team_name=TEAM, model_name=MODEL, repo_path=folder)
    data_in_clone = DataCheckpointsManage(repo_path=clone)
    assert data.read_data_checkpoint_tag() == data_in_clone.read_data_checkpoint_tag() == [
        "v0.1", "v0.3"]
    assert data.get_data_metadata("data/v0.1") == data_in_clone.get_data_metadata("v0.1")
    assert data.get_data_metadata() == data_in_clone.get_data_metadata("v0.3")
    assert data.diff("v0.1", "v0.3") == data_in_clone.diff("v0.1", "v0.3")

    combined = CombinedCheckpointsManage(team_name=TEAM, model_name=MODEL, repo_path=folder)
    for version in ("v0.2", "v0.3"):
        assert combined.get_combined_metadata(version) == CombinedCheckpointsManage(
            repo_path=clone).get_combined_metadata(version)
    assert combined.get_combined_metadata("v0.3")["lineage"]["same_commit"]
    assert list(folder.iterdir()) == []

    # Without repo_path (./MODEL, which does not exist here).
    monkeypatch.chdir(elsewhere)
    assert ModelsCheckpointsManage(team_name=TEAM, model_name=MODEL).read_checkpoint_tag() == [
        "v0.1", "v0.2", "v0.3", "v0.4"]
    assert [p.name for p in elsewhere.iterdir()] == ["not-a-clone"]


@pytest.mark.parametrize("args", [
    ("model", "show", "v9.9"), ("model", "diff", "v0.1", "v9.9"), ("data", "show", "v0.2"),
    ("data", "diff", "data/v7.0", "v0.1"), ("combined", "show", "v8.1"),
])
def test_an_unknown_version_says_how_to_list_them_here(released: Released, elsewhere: Path,
                                                      args: tuple[str, ...]) -> None:
    line = assert_one_error_line(run_cpv(*args, *NO_CLONE, cwd=elsewhere, expect=None))
    kind = "model" if args[0] == "combined" else args[0]
    assert f"No {kind} version" in line
    assert f"'cpv {kind} list --team {TEAM} --model {MODEL}'" in line
    for command in NEEDS_A_CLONE:
        assert command not in line, line
    assert list(elsewhere.iterdir()) == []


def test_the_api_error_for_an_unknown_version_names_no_clone_command(
        released: Released, elsewhere: Path) -> None:
    models = ModelsCheckpointsManage(team_name=TEAM, model_name=MODEL, repo_path=elsewhere)
    with pytest.raises(VersionNotFoundError) as caught:
        models.get_model_metadata("v9.9")
    assert "v0.4" in str(caught.value)  # the known versions are named
    assert f"--team {TEAM} --model {MODEL}" in str(caught.value)
    for command in NEEDS_A_CLONE:
        assert command not in str(caught.value)


def test_reading_with_neither_a_clone_nor_a_model_says_to_name_one(workdir: Path) -> None:
    for args in (("model", "list"), ("data", "show", "v0.1"), ("model", "diff", "v0.1", "v0.2"),
                 ("combined", "show")):
        line = assert_one_error_line(run_cpv(*args, cwd=workdir, expect=None))
        assert "--team" in line and "--model" in line, line
        assert "cpv init" not in line and "doctor" not in line
    assert list(workdir.iterdir()) == []


def test_a_model_that_does_not_exist_is_an_error_and_leaves_no_mirror(
        released: Released, elsewhere: Path) -> None:
    line = assert_one_error_line(run_cpv("model", "list", "--team", TEAM, "--model", "nope",
                                         cwd=elsewhere, expect=None))
    assert f"{TEAM}/nope" in line
    for command in NEEDS_A_CLONE:
        assert command not in line, line
    assert not (released.cpv_home / "mirrors" / TEAM / "nope.git").exists()
    with pytest.raises(RemoteError):
        ModelsCheckpointsManage(team_name=TEAM, model_name="nope",
                                repo_path=elsewhere).read_checkpoint_tag()
    assert list(elsewhere.iterdir()) == []


# -- the mirror follows the remote -------------------------------------------------------------


def test_new_versions_appear_and_an_unreachable_remote_falls_back_to_the_mirror(
        repo: ModelRepo, workdir: Path) -> None:
    def listed() -> list[str]:
        return ModelsCheckpointsManage(team_name=TEAM, model_name=MODEL,
                                       repo_path=workdir).read_checkpoint_tag()

    empty = run_cpv("model", "list", *NO_CLONE, cwd=workdir)
    assert empty.stdout.strip() == f"No model versions of {TEAM}/{MODEL} yet."
    assert listed() == []
    upload_model(repo, {"accuracy": 0.1}, seed=1)
    repo.manager.tag_model_checkpoint()
    assert listed() == ["v0.1"]
    upload_model(repo, {"accuracy": 0.2}, seed=2)
    repo.manager.tag_model_checkpoint()
    assert listed() == ["v0.1", "v0.2"]

    # The git host is down: what was fetched before is shown, with a warning.
    moved = repo.remote.with_name("away.git")
    repo.remote.rename(moved)
    try:
        offline = run_cpv("model", "list", "--json", *NO_CLONE, cwd=workdir)
        assert [v["version"] for v in json.loads(offline.stdout)] == ["v0.1", "v0.2"]
        assert "Could not fetch versions" in offline.stderr
    finally:
        moved.rename(repo.remote)
    assert list(workdir.iterdir()) == []


def test_a_clone_at_model_is_read_as_a_clone(repo: ModelRepo) -> None:
    """With --team/--model and a clone at ./MODEL, the clone is used (its HEAD included)."""
    upload_model(repo, {"accuracy": 0.3}, seed=1)
    shown = run_cpv("model", "show", "--json", *NO_CLONE, cwd=repo.root.parent).stdout
    assert json.loads(shown)["version"] is None  # HEAD, not tagged yet
    assert not (repo.cpv_home / "mirrors").exists()
