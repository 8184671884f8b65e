"""The API as the seed's scripts and a new user call it: paths relative to the caller's
current directory, ``verbose=`` on every method, a training script run twice, and the
upload's message staying with its version."""

from __future__ import annotations

import inspect
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from data_helpers import SEED_DATASET, data_snapshot, upload_model, write_dataset
from helpers import MODEL, TEAM, TIMEOUT, ModelRepo, files_under, git, md5_of, write_random

from cp_manage import (
    CombinedCheckpointsManage,
    DataCheckpointsManage,
    ModelsCheckpointsManage,
    UnsavedChangesError,
)
from cp_manage.fsutil import md5_bytes

MANAGERS = (ModelsCheckpointsManage, DataCheckpointsManage, CombinedCheckpointsManage)


@pytest.fixture
def quiet_logger() -> Iterator[logging.Logger]:
    """The ``cp_manage`` logger as an application that configured nothing finds it."""
    logger = logging.getLogger("cp_manage")
    level = logger.level
    logger.setLevel(logging.NOTSET)
    yield logger
    logger.setLevel(level)


def _remote_tags(repo: ModelRepo) -> list[str]:
    listing = git("ls-remote", "--tags", "--refs", repo.remote, cwd=repo.root)
    return sorted(line.split("\t")[1].removeprefix("refs/tags/")
                  for line in listing.splitlines())


# -- paths are the caller's ----------------------------------------------------------------------


def test_data_path_is_relative_to_the_callers_directory(repo: ModelRepo,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The issue's example, from the folder that holds the repository."""
    write_dataset(repo.root / "data", SEED_DATASET)
    monkeypatch.chdir(repo.root.parent)
    manager = DataCheckpointsManage(team_name=TEAM, model_name=MODEL,
                                    repo_path=f"./{MODEL}")
    commit = manager.upload_data_checkpoint(data_path=f"./{MODEL}/data")
    assert commit == repo.head() == repo.remote_refs().split()[0]
    assert manager.tag_data_checkpoint() == "data/v0.1"
    # A folder beside the repository, named as the caller sees it, is copied in; the
    # repository's own data/ is not what "dataset" means.
    other = {"train/new.jsonl": b'{"text": "z"}\n'}
    write_dataset(repo.root.parent / "dataset", other)
    manager.upload_data_checkpoint(data_path="dataset")
    assert files_under(repo.root / "data") == {k: md5_bytes(v) for k, v in other.items()}
    manager.import_data_init("dataset")  # the same files again: nothing changes
    assert manager.tag_data_checkpoint() == "data/v0.2"


def test_model_path_is_relative_to_the_callers_directory(repo: ModelRepo,
                                                         monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    weights = repo.write_model(seed=1)
    monkeypatch.chdir(repo.root.parent)
    manager = ModelsCheckpointsManage(team_name=TEAM, model_name=MODEL,
                                      repo_path=f"./{MODEL}")
    manager.upload_model_checkpoint(model_path=f"./{MODEL}/model.bin", metrics={"step": 1})
    assert manager.get_model_metadata()["md5"] == weights
    # From a subfolder of the repository, through '..'.
    sub = repo.root / "notebooks"
    sub.mkdir()
    monkeypatch.chdir(sub)
    repo.write_model(seed=2)
    manager.upload_model_checkpoint(model_path="../model.bin", metrics={"step": 2})
    assert manager.get_model_metadata()["md5"] == md5_of(repo.model_file)


def test_a_relative_model_path_never_means_the_repositorys_file(repo: ModelRepo,
                                                                tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch
                                                                ) -> None:
    """'model.bin' typed in another folder is that folder's file, never silently the
    repository's: it is what gets uploaded (issue 12: upload from anywhere), and the
    repository's own unsaved model.bin is not replaced without force."""
    repo.write_model(seed=1)
    elsewhere = tmp_path / "elsewhere"
    wanted = write_random(elsewhere / "model.bin", seed=9)
    monkeypatch.chdir(elsewhere)
    before = repo.snapshot()
    with pytest.raises(UnsavedChangesError, match="never uploaded"):
        repo.manager.upload_model_checkpoint(model_path="model.bin")
    assert repo.snapshot() == before
    repo.manager.upload_model_checkpoint(model_path="model.bin", force=True)
    assert repo.manager.get_model_metadata()["md5"] == wanted == md5_of(repo.model_file)


def test_paths_through_a_symlinked_directory(repo: ModelRepo, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The caller's directory reached through a symbolic link still names the repository's
    own files."""
    link = tmp_path / "link"
    link.symlink_to(repo.root.parent, target_is_directory=True)
    weights = repo.write_model(seed=3)
    write_dataset(repo.root / "data", SEED_DATASET)
    monkeypatch.chdir(link)
    models = ModelsCheckpointsManage(repo_path=MODEL)
    models.upload_model_checkpoint(model_path=f"{MODEL}/model.bin")
    data = DataCheckpointsManage(repo_path=MODEL)
    before = files_under(repo.root / "data")
    data.upload_data_checkpoint(data_path=f"{MODEL}/data")
    assert files_under(repo.root / "data") == before
    assert models.get_model_metadata()["md5"] == weights


def test_output_dir_and_init_data_path_are_relative_to_the_caller(
        tmp_path: Path, isolated_env: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path / "work"
    write_dataset(work / "dataset", SEED_DATASET)
    monkeypatch.chdir(work)
    models = ModelsCheckpointsManage(team_name=TEAM, model_name=MODEL)
    models.import_model_init(data_path="dataset")
    data = DataCheckpointsManage(team_name=TEAM, model_name=MODEL)
    assert files_under(work / MODEL / "data") == files_under(work / "dataset")
    weights = write_random(work / MODEL / "model.bin", seed=4)
    models.upload_model_checkpoint(model_path=f"{MODEL}/model.bin")
    models.tag_model_checkpoint()
    data.tag_data_checkpoint()
    artifact = models.download_model_checkpoint(tag="v0.1", output_dir="out/model")
    assert artifact.model_path == work / "out" / "model" / "model.bin"
    assert md5_of(artifact.model_path) == weights
    dataset = data.download_data_checkpoint(tag="v0.1", output_dir="out/data")
    assert dataset.data_path == work / "out" / "data"
    assert files_under(dataset.data_path) == files_under(work / "dataset")


# -- verbose= on every method ---------------------------------------------------------------------


def _public_methods(cls: type) -> list[str]:
    return sorted(name for name, member in inspect.getmembers(cls, inspect.isfunction)
                  if not name.startswith("_"))


def test_every_public_method_accepts_verbose() -> None:
    missing = [f"{cls.__name__}.{name}" for cls in MANAGERS for name in _public_methods(cls)
               if "verbose" not in inspect.signature(getattr(cls, name)).parameters]
    assert missing == []
    # The seed's names are among them.
    for cls, names in ((ModelsCheckpointsManage, {"tag_model_checkpoint",
                                                  "revert_model_checkpoint", "get_metadata"}),
                       (DataCheckpointsManage, {"tag_data_checkpoint", "revert_data_checkpoint",
                                                "import_data_init"}),
                       (CombinedCheckpointsManage, {"tag_model_and_data",
                                                    "revert_model_and_data",
                                                    "get_combined_metadata"})):
        assert names <= set(_public_methods(cls))


def test_the_seeds_verbose_calls_log_and_never_print(
        repo: ModelRepo, tmp_path: Path, quiet_logger: logging.Logger,
        caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]) -> None:
    models = ModelsCheckpointsManage(team_name=TEAM, model_name=MODEL, repo_path=repo.root)
    data = DataCheckpointsManage(team_name=TEAM, model_name=MODEL, repo_path=repo.root)
    combined = CombinedCheckpointsManage(team_name=TEAM, model_name=MODEL, repo_path=repo.root)
    repo.write_model(seed=1)
    models.upload_model_checkpoint(model_path=repo.model_file, metrics={"accuracy": 0.5})
    assert not [r for r in caplog.records if r.name.startswith("cp_manage")], "quiet by default"

    assert models.tag_model_checkpoint(version_tag="v0.1", message="first",
                                       verbose=True) == "v0.1"
    assert quiet_logger.isEnabledFor(logging.INFO)
    assert any(r.levelno == logging.INFO and "v0.1" in r.getMessage() for r in caplog.records)
    repo.write_model(seed=2)
    models.upload_model_checkpoint(model_path=repo.model_file, verbose=True)
    assert models.revert_model_checkpoint(tag="v0.1", verbose=True) is not None
    assert models.read_model_checkpoint_tag(verbose=True) == ["v0.1"]
    assert models.get_model_metadata(tag="v0.1", verbose=True)["message"] == "first"

    data.import_data_init(write_dataset(tmp_path / "dataset", SEED_DATASET), verbose=True)
    assert data.tag_data_checkpoint(version_tag="v0.1", message="data", verbose=True
                                    ) == "data/v0.1"
    write_dataset(repo.root / "data", {"train/more.jsonl": b"{}\n"})
    data.upload_data_checkpoint(verbose=True)
    assert data.revert_data_checkpoint(tag="v0.1", verbose=True) is not None
    assert data.read_data_checkpoint_tag(verbose=True) == ["v0.1"]

    upload_model(repo, seed=3)
    assert combined.tag_model_and_data(version_tag="v0.5", model_message="release",
                                       verbose=True) == ("v0.5", "data/v0.5")
    upload_model(repo, seed=4)
    assert combined.revert_model_and_data(tag="v0.5", verbose=True) is not None
    assert combined.get_combined_metadata(tag="v0.5", verbose=True)["version"] == "v0.5"
    assert combined.get_combined_metadata(verbose=True)["model"]["md5"] == md5_of(
        repo.model_file)
    assert capfd.readouterr() == ("", ""), "the library never prints"


# -- a training script run twice ---------------------------------------------------------------


def test_the_generated_train_script_runs_twice(repo: ModelRepo) -> None:
    runs = [subprocess.run([sys.executable, "train.py"], cwd=repo.root, capture_output=True,
                           text=True, timeout=TIMEOUT, check=False, env=dict(os.environ))
            for _ in range(2)]
    for run in runs:
        assert run.returncode == 0, run.stderr
        assert "Traceback" not in run.stderr
        assert "tagged v0.1" in run.stdout
    assert _remote_tags(repo) == ["v0.1"]
    assert repo.git("tag") == "v0.1"
    assert repo.git("status", "--porcelain") == ""


def test_seed_scripts_run_twice_get_the_same_versions(repo: ModelRepo, tmp_path: Path) -> None:
    """Scripts that upload and tag data and model, or release both together: run again
    unchanged, every call answers with the versions already made; nothing new is pushed."""
    source = write_dataset(tmp_path / "dataset", SEED_DATASET)

    def upload_both(seed: int) -> None:
        DataCheckpointsManage(team_name=TEAM, model_name=MODEL, repo_path=repo.root,
                              verbose=True).upload_data_checkpoint(data_path=source)
        write_random(repo.model_file, seed=seed)
        repo.manager.upload_model_checkpoint(model_path=repo.model_file, metrics={"acc": 0.5})

    def tag_each() -> tuple[str, str]:
        upload_both(seed=5)
        return (DataCheckpointsManage(repo_path=repo.root).tag_data_checkpoint(verbose=True),
                repo.manager.tag_model_checkpoint(verbose=True))

    def release() -> tuple[str, str]:
        upload_both(seed=6)
        return CombinedCheckpointsManage(repo_path=repo.root).tag_model_and_data(verbose=True)

    for script, versions in ((tag_each, ("data/v0.1", "v0.1")),
                             (release, ("v0.2", "data/v0.2"))):
        assert script() == versions
        refs, snapshot = repo.remote_refs(), data_snapshot(repo)
        assert script() == versions
        assert repo.remote_refs() == refs and data_snapshot(repo) == snapshot
    assert _remote_tags(repo) == ["data/v0.1", "data/v0.2", "v0.1", "v0.2"]


# -- the upload's message stays with its version -----------------------------------------------


def test_a_version_carries_its_uploads_message(repo: ModelRepo, tmp_path: Path) -> None:
    models, data = repo.manager, DataCheckpointsManage(repo_path=repo.root)
    repo.write_model(seed=1)
    models.upload_model_checkpoint(model_path=repo.model_file, message="evaluated on test set")
    assert models.tag_model_checkpoint() == "v0.1"
    shown = models.get_model_metadata("v0.1")
    assert shown["message"] == "evaluated on test set"
    assert models.get_model_metadata() == shown, "HEAD is v0.1: shown exactly as v0.1"
    assert models.list_versions()[0].message == "evaluated on test set"
    repo.write_model(seed=2)
    models.upload_model_checkpoint(model_path=repo.model_file, message="epoch 2")
    models.tag_model_checkpoint(message="the tag's own message wins")
    assert models.get_model_metadata("v0.2")["message"] == "the tag's own message wins"
    # Data: the dataset's upload, even when a model upload came after it.
    data.import_data_init(write_dataset(tmp_path / "dataset", SEED_DATASET),
                          message="cleaned transcripts")
    repo.write_model(seed=3)
    models.upload_model_checkpoint(model_path=repo.model_file, message="trained on clean data")
    assert data.tag_data_checkpoint() == "data/v0.1"
    assert data.get_data_metadata("v0.1")["message"] == "cleaned transcripts"
    # A combined release without messages: each version keeps its own upload's message.
    write_dataset(repo.root / "data", {"train/more.jsonl": b"{}\n"})
    data.upload_data_checkpoint(message="more transcripts")
    repo.write_model(seed=4)
    models.upload_model_checkpoint(model_path=repo.model_file, message="retrained")
    combined = CombinedCheckpointsManage(repo_path=repo.root)
    assert combined.tag_model_and_data() == ("v0.3", "data/v0.3")
    release = combined.get_combined_metadata()
    assert release == combined.get_combined_metadata("v0.3")
    assert release["model"]["message"] == "retrained"
    assert release["data"]["message"] == "more transcripts"
