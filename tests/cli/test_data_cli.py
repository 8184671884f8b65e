"""``cpv data ...`` and ``cpv combined ...`` as real subprocesses: exit codes, JSON shapes, one
readable error line, and a failed atomic release that leaves no tag anywhere."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from data_helpers import SEED_DATASET, SEED_SAMPLES, SEED_SPLITS, data_snapshot, write_dataset
from helpers import ModelRepo, assert_one_error_line, files_under, md5_of, run_cpv

REFUSE_DATA_TAGS = """#!/bin/sh
case "$1" in
  refs/tags/data/*) echo "data tags are frozen by the release manager" >&2; exit 1 ;;
esac
exit 0
"""


@pytest.fixture
def seeded(repo: ModelRepo, tmp_path: Path) -> ModelRepo:
    source = write_dataset(tmp_path / "dataset", SEED_DATASET)
    result = run_cpv("data", "upload", source, cwd=repo.root)
    assert "Uploaded data" in result.stdout
    return repo


def test_data_commands_end_to_end(seeded: ModelRepo, tmp_path: Path) -> None:
    root = seeded.root
    assert files_under(root / "data") == files_under(tmp_path / "dataset")
    again = run_cpv("data", "upload", cwd=root)
    assert "unchanged" in again.stdout
    assert run_cpv("data", "tag", "-m", "seed data", cwd=root).stdout.strip() == \
        "Tagged data/v0.1"
    write_dataset(root / "data", {"train/part-1.jsonl": b'{"text": "h"}\n'})
    run_cpv("data", "upload", "-m", "more data", cwd=root)
    assert "data/v1.0" in run_cpv("data", "tag", "--major", "--repo", root, cwd=tmp_path).stdout

    listed = json.loads(run_cpv("data", "list", "--json", cwd=root).stdout)
    assert [v["version"] for v in listed] == ["v0.1", "v1.0"]
    assert listed[0]["file_count"] == len(SEED_DATASET)
    assert listed[0]["splits"] == SEED_SPLITS and listed[0]["sample_count"] == SEED_SAMPLES
    table = run_cpv("data", "list", cwd=root).stdout
    assert "files" in table and "samples" in table and "v1.0" in table

    shown = json.loads(run_cpv("data", "show", "data/v0.1", "--json", cwd=root).stdout)
    assert shown == listed[0]
    assert "splits" in run_cpv("data", "show", "v0.1", cwd=root).stdout

    diff = json.loads(run_cpv("data", "diff", "v0.1", "v1.0", "--json", cwd=root).stdout)
    assert diff["files"]["added"] == ["train/part-1.jsonl"]
    assert diff["stats"]["file_count"]["delta"] == 1
    assert "1 added" in run_cpv("data", "diff", "v0.1", "v1.0", cwd=root).stdout

    out = tmp_path / "fetched"
    run_cpv("data", "download", "v0.1", "-o", out, cwd=root)
    assert files_under(out) == files_under(tmp_path / "dataset")
    default = run_cpv("data", "download", "v1.0", "--repo", root, cwd=tmp_path)
    assert (tmp_path / f"{seeded.model}-data-v1.0" / "train" / "part-1.jsonl").is_file(), \
        default.stdout

    assert "Reverted data to v0.1" in run_cpv("data", "revert", "v0.1", cwd=root).stdout
    assert files_under(root / "data") == files_under(tmp_path / "dataset")
    assert "nothing changed" in run_cpv("data", "revert", "v0.1", cwd=root).stdout


def test_data_errors_are_one_line_and_change_nothing(seeded: ModelRepo, tmp_path: Path) -> None:
    root = seeded.root
    before = data_snapshot(seeded)
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [
        (["data", "upload", tmp_path / "missing"], "does not exist"),
        (["data", "upload", empty], "holds no files"),
        (["data", "upload", tmp_path / "dataset" / "train" / "labels.csv"], "not a folder"),
        (["data", "show", "v9.9"], "No data version v9.9"),
        (["data", "download", "v9.9", "-o", tmp_path / "x"], "No data version v9.9"),
    ]
    for args, expected in cases:
        line = assert_one_error_line(run_cpv(*args, cwd=root, expect=None))
        assert expected in line, line
    assert data_snapshot(seeded) == before
    # A version of the model sequence only is not a data version.
    seeded.write_model(seed=1)
    run_cpv("model", "upload", "--metric", "accuracy=0.5", cwd=root)
    run_cpv("model", "tag", "v3.0", cwd=root)
    before = data_snapshot(seeded)
    for verb in ("show", "revert"):
        line = assert_one_error_line(run_cpv("data", verb, "v3.0", cwd=root, expect=None))
        assert "No data version v3.0" in line
    assert data_snapshot(seeded) == before
    # Usage errors exit 2.
    usage = run_cpv("data", "upload", "--metric", "accuracy=1", cwd=root, expect=2)
    assert "no metrics" in usage.stderr
    run_cpv("data", "tag", "v1.0", "--major", cwd=root, expect=2)


def test_model_list_and_show_name_the_training_data(seeded: ModelRepo) -> None:
    root = seeded.root
    run_cpv("data", "tag", cwd=root)
    seeded.write_model(seed=2)
    run_cpv("model", "upload", "--metric", "accuracy=0.7", cwd=root)
    run_cpv("model", "tag", cwd=root)
    assert "data/v0.1" in run_cpv("model", "list", cwd=root).stdout
    assert "data/v0.1" in run_cpv("model", "show", "v0.1", cwd=root).stdout
    shown = json.loads(run_cpv("model", "show", "v0.1", "--json", cwd=root).stdout)
    assert shown["data_version"] == "data/v0.1"


def test_combined_commands(seeded: ModelRepo) -> None:
    root = seeded.root
    seeded.write_model(seed=3)
    run_cpv("model", "upload", "--metric", "accuracy=0.8", cwd=root)
    model_v1 = md5_of(seeded.model_file)
    assert "Tagged v0.1 and data/v0.1" in run_cpv("combined", "tag", "-m", "first",
                                                  cwd=root).stdout
    shown = json.loads(run_cpv("combined", "show", "v0.1", "--json", cwd=root).stdout)
    assert set(shown) == {"version", "model", "data", "lineage"}
    assert shown["lineage"]["data_version"] == "data/v0.1"
    assert "trained on: data/v0.1" in run_cpv("combined", "show", cwd=root).stdout
    seeded.write_model(seed=4)
    write_dataset(root / "data", {"test/more.jsonl": b"{}\n"})
    run_cpv("data", "upload", cwd=root)
    run_cpv("model", "upload", cwd=root)
    assert "v1.0" in run_cpv("combined", "tag", "--major", cwd=root).stdout
    assert "Reverted model and data to v0.1" in run_cpv("combined", "revert", "v0.1",
                                                        cwd=root).stdout
    assert md5_of(seeded.model_file) == model_v1
    assert not (root / "data" / "test" / "more.jsonl").exists()
    line = assert_one_error_line(run_cpv("combined", "tag", "v1.0", cwd=root, expect=None))
    assert "already" in line


def test_failed_atomic_release_via_cli(seeded: ModelRepo) -> None:
    root = seeded.root
    seeded.write_model(seed=5)
    run_cpv("model", "upload", cwd=root)
    hook = seeded.remote / "hooks" / "update"
    hook.write_text(REFUSE_DATA_TAGS)
    hook.chmod(0o755)
    result = run_cpv("combined", "tag", cwd=root, expect=None)
    print(f"stderr: {result.stderr!r}\nexit code: {result.returncode}")
    line = assert_one_error_line(result)
    assert "neither tag was created" in line and "hook declined" in line
    assert "data tags are frozen by the release manager" in line
    assert seeded.git("tag") == ""
    assert "refs/tags" not in seeded.remote_refs()
