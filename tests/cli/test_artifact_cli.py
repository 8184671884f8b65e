"""Model artifacts other than ``model.bin`` through the ``cpv`` command: ``init --artifact``,
``model upload SOURCE`` from anywhere, ``download --include/--exclude`` and ``diff`` of a folder.
"""

from __future__ import annotations

import json
from pathlib import Path

from artifact_helpers import SHARDS, file_bytes, fingerprint, write_hf_folder
from helpers import ModelRepo, assert_one_error_line, files_under, run_cpv


def test_folder_checkpoint_end_to_end(tmp_path: Path, isolated_env: dict[str, Path]) -> None:
    work = tmp_path / "work"
    work.mkdir()
    run_cpv("init", "--team", "AI-Convo", "--model", "bert-large", "--artifact", "checkpoint/",
            cwd=work)
    root = work / "bert-large"
    repo = ModelRepo(root, isolated_env["cpv_home"], model="bert-large")
    scratch = tmp_path / "scratch"
    source = write_hf_folder(scratch / "run42" / "best")
    before = fingerprint(source)

    # SOURCE is relative to the caller's current directory, outside the repository.
    run_cpv("model", "upload", "run42/best", "--metric", "loss=0.5", "--repo", root, cwd=scratch)
    assert fingerprint(source) == before
    assert file_bytes(root / "checkpoint") == file_bytes(source)
    run_cpv("model", "tag", cwd=root)
    (source / SHARDS[0]).write_bytes(b"w" * 3000)
    run_cpv("model", "upload", source, "--metric", "loss=0.25", cwd=root)
    run_cpv("model", "tag", cwd=root)

    shown = json.loads(run_cpv("model", "show", "v0.2", "--json", cwd=root).stdout)
    assert (shown["path"], shown["file_count"]) == ("checkpoint", 11)
    diff = run_cpv("model", "diff", "v0.1", "v0.2", cwd=root).stdout
    assert SHARDS[0] in diff and "modified" in diff and "64.0 KiB" in diff and "2.9 KiB" in diff
    as_json = json.loads(run_cpv("model", "diff", "v0.1", "v0.2", "--json", cwd=root).stdout)
    assert as_json["file_changes"] == [{"path": SHARDS[0], "change": "modified",
                                        "old_size": 64 * 1024 + 4, "new_size": 3000}]

    out = tmp_path / "weights"
    run_cpv("model", "download", "v0.2", "-o", out, "--include", "*.safetensors",
            "--include", "config.json", "--exclude", "model-00002*", cwd=root)
    assert sorted(files_under(out)) == sorted(["config.json", SHARDS[0], *SHARDS[2:]])
    run_cpv("model", "download", "v0.1", "-o", tmp_path / "all", cwd=root)
    assert (tmp_path / "all" / "config.json").is_file()
    assert not (tmp_path / "all" / "checkpoint").exists(), "the tree lies directly in DIR"

    # Wrong kind: one error line naming --artifact, and nothing changed.
    single = tmp_path / "best.ckpt"
    single.write_bytes(b"weights")
    snapshot = repo.snapshot()
    line = assert_one_error_line(run_cpv("model", "upload", single, cwd=root, expect=None))
    assert "--artifact" in line and "is a file" in line
    assert repo.snapshot() == snapshot


def test_file_artifact_refuses_a_folder(tmp_path: Path, isolated_env: dict[str, Path]) -> None:
    work = tmp_path / "work"
    work.mkdir()
    run_cpv("init", "--team", "AI-Convo", "--model", "yolov8", "--artifact",
            "model.safetensors", cwd=work)
    root = work / "yolov8"
    repo = ModelRepo(root, isolated_env["cpv_home"], model="yolov8")
    folder = write_hf_folder(tmp_path / "ckpt")
    snapshot = repo.snapshot()
    line = assert_one_error_line(run_cpv("model", "upload", folder, cwd=root, expect=None))
    assert "--artifact" in line and "model.safetensors" in line
    assert repo.snapshot() == snapshot
    assert not (root / "model.safetensors").exists()
    bad = run_cpv("init", "--team", "AI-Convo", "--model", "other", "--artifact", "data/",
                  cwd=work, expect=None)
    assert "artifact" in assert_one_error_line(bad) and not (work / "other").exists()
