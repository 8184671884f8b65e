"""The CLI as a new user drives it: paths given from another folder, a tag run twice, and
``show`` without a version on a HEAD that is a version."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from data_helpers import SEED_DATASET, write_dataset
from helpers import MODEL, ModelRepo, assert_one_error_line, files_under, git, md5_of, run_cpv


def _remote_tags(repo: ModelRepo) -> list[str]:
    listing = git("ls-remote", "--tags", "--refs", repo.remote, cwd=repo.root)
    return sorted(line.split("\t")[1].removeprefix("refs/tags/")
                  for line in listing.splitlines())


def _json(*args: str, cwd: Path) -> Any:
    return json.loads(run_cpv(*args, "--json", cwd=cwd).stdout)


def test_model_paths_from_another_folder_and_a_tag_run_twice(repo: ModelRepo) -> None:
    here = repo.root.parent  # the folder holding the repository
    weights = repo.write_model(seed=1)
    (here / "metrics.json").write_text(json.dumps({"accuracy": 0.81}))
    at = ("--repo", MODEL)
    run_cpv("model", "upload", f"{MODEL}/model.bin", "--metrics-file", "metrics.json",
            "-m", "evaluated on test set", *at, cwd=here)
    assert "Tagged v0.1" in run_cpv("model", "tag", *at, cwd=here).stdout
    refs = repo.remote_refs()

    again = run_cpv("model", "tag", *at, cwd=here)  # exit 0 (run_cpv checks it)
    assert "HEAD is already v0.1" in again.stdout and again.stderr == ""
    assert "already v0.1" in run_cpv("model", "tag", "v0.1", *at, cwd=here).stdout
    refused = assert_one_error_line(run_cpv("model", "tag", "v0.2", *at, cwd=here, expect=1))
    assert "HEAD is already v0.1, so it cannot also be v0.2" in refused
    assert repo.remote_refs() == refs and _remote_tags(repo) == ["v0.1"]

    # show without a version is show v0.1; the upload's -m is the version's message.
    shown = _json("model", "show", *at, cwd=here)
    assert shown == _json("model", "show", "v0.1", *at, cwd=here)
    assert shown["version"] == "v0.1"
    assert shown["message"] == "evaluated on test set"
    assert shown["metrics"] == {"accuracy": 0.81}
    listing = _json("model", "list", *at, cwd=here)
    assert listing[0]["message"] == "evaluated on test set"

    run_cpv("model", "download", "v0.1", "-o", "out", *at, cwd=here)
    assert md5_of(here / "out" / "model.bin") == weights


def test_data_and_combined_tags_run_twice(repo: ModelRepo) -> None:
    here = repo.root.parent
    write_dataset(here / "dataset", SEED_DATASET)
    at = ("--repo", MODEL)
    run_cpv("data", "upload", "dataset", "-m", "seed transcripts", *at, cwd=here)
    assert files_under(repo.root / "data") == files_under(here / "dataset")
    assert "Tagged data/v0.1" in run_cpv("data", "tag", *at, cwd=here).stdout
    again = run_cpv("data", "tag", *at, cwd=here)
    assert "HEAD's dataset is already data/v0.1" in again.stdout
    assert _json("data", "show", "v0.1", *at, cwd=here)["message"] == "seed transcripts"

    repo.write_model(seed=2)
    run_cpv("model", "upload", "-m", "retrained", cwd=repo.root)
    assert "Tagged v0.2 and data/v0.2" in run_cpv("combined", "tag", cwd=repo.root).stdout
    refs = repo.remote_refs()
    again = run_cpv("combined", "tag", cwd=repo.root)
    assert "HEAD is already v0.2 and data/v0.2" in again.stdout
    assert repo.remote_refs() == refs

    release = _json("combined", "show", cwd=repo.root)
    assert release == _json("combined", "show", "v0.2", cwd=repo.root)
    assert release["model"]["version"] == "v0.2" and release["data"]["tag"] == "data/v0.2"
    assert release["model"]["message"] == "retrained"
    assert release["data"]["message"] == "seed transcripts"
    run_cpv("data", "download", "v0.2", "-o", "out-data", *at, cwd=here)
    assert files_under(here / "out-data") == files_under(here / "dataset")
