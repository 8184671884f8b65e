"""gc racing a teammate: an upload whose blobs are in storage but whose commit is not pushed
yet is kept by the grace period; what a teammate tags or pushes while gc is between its plan and
its deletion is kept by the re-check. Two real clones, real git remote, real storage folder; gc
runs as a real ``cpv`` process held between plan and deletion by a test-only pause point."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from gc_helpers import age_storage, fresh_clone, history, stock_dvc_pull
from helpers import CPV, MODEL, TEAM, TIMEOUT, ModelRepo, md5_of, run_cpv, storage_object

from cp_manage import ModelsCheckpointsManage


@pytest.fixture
def clones(tmp_path: Path, isolated_env: dict[str, Path]) -> tuple[ModelRepo, ModelRepo]:
    made = []
    for name in ("laptop-a", "laptop-b"):
        root = tmp_path / name / MODEL
        ModelsCheckpointsManage(team_name=TEAM, model_name=MODEL,
                                repo_path=root).import_model_init()
        made.append(ModelRepo(root, isolated_env["cpv_home"]))
    return made[0], made[1]


def upload_killed_after_blobs(clone: ModelRepo, *, seed: int) -> str:
    """A teammate's upload that stored its blobs and died before its commit (what storage
    holds while the commit is not pushed yet). Returns the blob's md5."""
    md5 = clone.write_model(512, seed=seed)
    result = subprocess.run([*CPV, "model", "upload"], cwd=clone.root, capture_output=True,
                            text=True, timeout=TIMEOUT, check=False,
                            env={**os.environ, "CPV_TEST_KILL_AT": "after_blobs"})
    assert result.returncode == -9, result.stderr
    assert storage_object(clone.storage, md5).exists()
    assert clone.git("ls-remote", "origin", "refs/heads/main").split()[0] != clone.head()
    return md5


@contextmanager
def gc_paused_before_recheck(repo: ModelRepo, tmp_path: Path, *args: str
                             ) -> Iterator[subprocess.Popen[str]]:
    """``cpv gc ARGS --json`` held after its plan, before its re-check and deletion, while the
    body runs; then let go (the caller reads the process's output)."""
    hold, paused = tmp_path / "hold-gc", tmp_path / "gc-paused"
    hold.touch()
    process = subprocess.Popen(
        [*CPV, "gc", *args, "--json"], cwd=repo.root, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
        env={**os.environ, "CPV_TEST_PAUSE_AT": "gc_before_recheck",
             "CPV_TEST_PAUSE_FILE": str(hold), "CPV_TEST_PAUSED_FILE": str(paused)})
    try:
        deadline = time.monotonic() + TIMEOUT
        while not paused.exists():
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "gc never reached its pause point"
            time.sleep(0.05)
        yield process
    finally:
        hold.unlink(missing_ok=True)
        process.wait(TIMEOUT)


def test_a_teammates_unpushed_upload_is_kept_by_the_grace_period(
        clones: tuple[ModelRepo, ModelRepo], tmp_path: Path) -> None:
    a, b = clones
    made = history(a)
    age_storage(a.storage)  # the team's history is days old; the teammate's blob is new
    blob = upload_killed_after_blobs(b, seed=42)

    # Even asked to remove what no commit refers to, gc keeps what is inside the grace period.
    report = json.loads(run_cpv("gc", "--include-unreferenced", "--json", cwd=a.root).stdout)
    assert report["record"] == "gc/000001"
    assert {u["oid"] for u in report["uploads"]} == {made["v0.1"], made["v0.2"], made["u1"]}
    assert report["unreferenced"] == []
    assert storage_object(a.storage, blob).exists()
    # Without the grace period that blob would have gone: the grace period is what kept it.
    would = json.loads(run_cpv("gc", "--include-unreferenced", "--grace", "0", "--dry-run",
                               "--json", cwd=a.root).stdout)
    assert would["unreferenced"] == [blob]
    # And without --include-unreferenced, what no commit refers to stays whatever its age.
    default = json.loads(run_cpv("gc", "--grace", "0", "--dry-run", "--json", cwd=a.root).stdout)
    assert default["unreferenced"] == [] and default["object_count"] == 0

    # The teammate finishes: nothing of the upload was lost.
    b.manager.upload_model_checkpoint(b.model_file)
    assert b.manager.tag_model_checkpoint() == "v0.6"
    other = fresh_clone(tmp_path, "fresh")
    artifact = other.manager.download_model_checkpoint("v0.6", output_dir=tmp_path / "v0.6")
    assert md5_of(artifact.model_path) == blob
    assert md5_of(stock_dvc_pull(a, tmp_path, "v0.6") / "model.bin") == blob


def test_an_upload_tagged_while_gc_runs_is_kept_by_the_recheck(
        clones: tuple[ModelRepo, ModelRepo], tmp_path: Path) -> None:
    a, b = clones
    made = history(a)
    age_storage(a.storage)
    u1 = a.git("log", "--format=%H", "-S", made["u1"], "--", "model.bin.dvc").split()[-1]

    with gc_paused_before_recheck(a, tmp_path, "--grace", "0") as gc:
        # gc has planned to remove u1 (not a version, not among the last 3); a teammate now
        # makes it a version.
        b.git("pull", "-q")
        assert b.manager.tag(commit=u1).tag == "v0.6"
    out, err = gc.communicate()
    assert gc.returncode == 0, err
    report = json.loads(out)
    assert report["rechecked"] == [made["u1"]]
    assert {u["oid"] for u in report["uploads"]} == {made["v0.1"], made["v0.2"]}
    assert storage_object(a.storage, made["u1"]).exists()
    assert not storage_object(a.storage, made["v0.1"]).exists()

    other = fresh_clone(tmp_path, "fresh")
    artifact = other.manager.download_model_checkpoint("v0.6", output_dir=tmp_path / "v0.6")
    assert md5_of(artifact.model_path) == made["u1"]
    assert md5_of(stock_dvc_pull(a, tmp_path, "v0.6") / "model.bin") == made["u1"]


def test_a_commit_pushed_while_gc_runs_keeps_its_blobs(
        clones: tuple[ModelRepo, ModelRepo], tmp_path: Path) -> None:
    a, b = clones
    history(a)
    blob = upload_killed_after_blobs(b, seed=42)
    age_storage(a.storage)  # everything old, the teammate's blob too: only the re-check saves it

    with gc_paused_before_recheck(a, tmp_path, "--grace", "0", "--include-unreferenced") as gc:
        # gc has planned to remove the blob no commit refers to; the teammate's upload, run
        # again, finds it in storage and pushes its commit.
        result = b.manager.upload(b.model_file)
        assert result.changed and result.uploaded_bytes == 0
    out, err = gc.communicate()
    assert gc.returncode == 0, err
    report = json.loads(out)
    assert blob in report["rechecked"]
    assert blob not in report["unreferenced"]
    assert storage_object(a.storage, blob).exists()

    assert b.manager.tag_model_checkpoint() == "v0.6"
    other = fresh_clone(tmp_path, "fresh")
    artifact = other.manager.download_model_checkpoint("v0.6", output_dir=tmp_path / "v0.6")
    assert md5_of(artifact.model_path) == blob
