"""The queue survives the training process: a real Python process submits three checkpoints and
is SIGKILLed with them pending (or at a crash point inside the worker, cp_manage/faults.py); then
``cpv model flush``, or the next ``background()``, versions each exactly once, in order."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import TIMEOUT, ModelRepo, run_cpv

TRAINING = """
import os, sys
from cp_manage import ModelsCheckpointsManage

manager = ModelsCheckpointsManage(repo_path=sys.argv[1])
uploads = manager.background(max_pending_bytes=10**9)
path = os.path.join(sys.argv[1], "model.bin")
for epoch in (1, 2, 3):
    with open(path, "wb") as handle:
        handle.write(bytes([epoch]) * 3000)
    uploads.submit(path, metrics={"epoch": epoch}, message=f"epoch {epoch}")
print("submitted", flush=True)
if sys.argv[2] == "release":
    os.unlink(os.environ["CPV_TEST_PAUSE_FILE"])
uploads.close()
print("closed", flush=True)
"""

EPOCH_MD5 = {epoch: hashlib.md5(bytes([epoch]) * 3000).hexdigest() for epoch in (1, 2, 3)}


def start_training(repo: ModelRepo, tmp_path: Path, *, release: bool,
                   kill_at: str | None = None) -> subprocess.Popen[str]:
    hold = tmp_path / "hold"
    hold.touch()
    env = {**os.environ, "CPV_TEST_PAUSE_AT": "queue_entry", "CPV_TEST_PAUSE_FILE": str(hold)}
    if kill_at:
        env["CPV_TEST_KILL_AT"] = kill_at
    return subprocess.Popen([sys.executable, "-c", TRAINING, str(repo.root),
                             "release" if release else "hold"], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def killed_with_three_pending(repo: ModelRepo, tmp_path: Path) -> None:
    process = start_training(repo, tmp_path, release=False)
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "submitted", process.stderr
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=TIMEOUT) == -signal.SIGKILL


def assert_three_versions_once(repo: ModelRepo) -> None:
    manager = repo.manager
    assert manager.read_checkpoint_tag() == ["v0.1", "v0.2", "v0.3"]
    for epoch in (1, 2, 3):
        meta = manager.get_model_metadata(f"v0.{epoch}")
        assert (meta["md5"], meta["metrics"]) == (EPOCH_MD5[epoch], {"epoch": epoch})
        assert meta["message"] == f"epoch {epoch}"
    log = repo.git("log", "--format=%H %s", "origin/main")
    assert [line.split(" ", 1)[1] for line in log.splitlines()[:3]] == [
        "epoch 3", "epoch 2", "epoch 1"], "each upload committed once, in order"
    assert len(log.splitlines()) == 4  # and the init commit
    assert repo.git("ls-remote", "--tags", "origin").count("refs/tags/v") == 3 * 2  # + peeled
    assert manager.pending_uploads() == []


def test_killed_with_three_pending_then_flush(repo: ModelRepo, tmp_path: Path) -> None:
    killed_with_three_pending(repo, tmp_path)
    listed = json.loads(run_cpv("model", "pending", "--json", cwd=repo.root).stdout)
    assert [(e["seq"], e["metrics"], e["md5"], e["tag"]) for e in listed] == [
        (n, {"epoch": n}, EPOCH_MD5[n], True) for n in (1, 2, 3)]
    table = run_cpv("model", "pending", cwd=repo.root).stdout
    assert "#3" in table and "epoch=2" in table and str(repo.model_file) in table
    assert repo.manager.read_checkpoint_tag() == []

    flushed = run_cpv("model", "flush", cwd=repo.root).stdout
    assert flushed.splitlines()[0].startswith("v0.1") and "#1" in flushed
    assert "Completed 3 queued upload(s)" in flushed
    assert_three_versions_once(repo)
    assert "Nothing waits" in run_cpv("model", "flush", cwd=repo.root).stdout


def test_the_next_background_in_a_new_process_completes_them(repo: ModelRepo,
                                                              tmp_path: Path) -> None:
    killed_with_three_pending(repo, tmp_path)
    script = ("import sys\nfrom cp_manage import ModelsCheckpointsManage\n"
              "with ModelsCheckpointsManage(repo_path=sys.argv[1]).background():\n    pass\n")
    subprocess.run([sys.executable, "-c", script, str(repo.root)], check=True, timeout=TIMEOUT)
    assert_three_versions_once(repo)


@pytest.mark.parametrize("point", ["after_commit", "after_push", "after_tag_pushed",
                                   "queue_done"])
def test_killed_inside_an_upload_then_flush_makes_no_duplicate(
        point: str, repo: ModelRepo, tmp_path: Path) -> None:
    process = start_training(repo, tmp_path, release=True, kill_at=point)
    _out, err = process.communicate(timeout=TIMEOUT)
    assert process.returncode == -signal.SIGKILL, err
    assert len(repo.manager.pending_uploads()) == 3, "the first entry stays until pushed"
    run_cpv("model", "flush", cwd=repo.root)
    assert_three_versions_once(repo)


def test_two_flushers_at_once_version_each_entry_once(repo: ModelRepo, tmp_path: Path
                                                      ) -> None:
    killed_with_three_pending(repo, tmp_path)
    flushers = [subprocess.Popen([sys.executable, "-m", "cp_manage.cli.app", "model", "flush"],
                                 cwd=repo.root, text=True, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE) for _ in range(2)]
    outputs = [f.communicate(timeout=TIMEOUT) for f in flushers]
    assert [f.returncode for f in flushers] == [0, 0], outputs
    assert_three_versions_once(repo)


def test_an_upload_pushed_before_the_kill_is_not_made_again_after_a_teammate_pushed(
        repo: ModelRepo, tmp_path: Path) -> None:
    process = start_training(repo, tmp_path, release=True, kill_at="after_push")
    process.communicate(timeout=TIMEOUT)
    assert process.returncode == -signal.SIGKILL
    teammate = tmp_path / "teammate"
    subprocess.run(["git", "clone", "-q", str(repo.remote), str(teammate)], check=True,
                   timeout=TIMEOUT)
    (tmp_path / "theirs.bin").write_bytes(b"a teammate's weights")
    run_cpv("model", "upload", tmp_path / "theirs.bin", "-m", "theirs", cwd=teammate)

    run_cpv("model", "flush", cwd=repo.root)
    log = repo.git("log", "--format=%s", "origin/main").splitlines()
    assert log[:4] == ["epoch 3", "epoch 2", "theirs", "epoch 1"], log
    assert_versions = repo.manager.list_versions()
    assert [(i.version, i.metrics) for i in assert_versions] == [
        ("v0.1", {"epoch": 1}), ("v0.2", {"epoch": 2}), ("v0.3", {"epoch": 3})]
    assert assert_versions[0].md5 == EPOCH_MD5[1]


def test_a_program_that_never_closes_still_finishes_its_uploads(repo: ModelRepo) -> None:
    script = ("import sys\nfrom cp_manage import ModelsCheckpointsManage\n"
              "uploads = ModelsCheckpointsManage(repo_path=sys.argv[1]).background()\n"
              "for epoch in (1, 2, 3):\n"
              "    open(sys.argv[1] + '/model.bin', 'wb').write(bytes([epoch]) * 3000)\n"
              "    uploads.submit(metrics={'epoch': epoch}, message=f'epoch {epoch}')\n")
    subprocess.run([sys.executable, "-c", script, str(repo.root)], check=True, timeout=TIMEOUT)
    assert_three_versions_once(repo)
