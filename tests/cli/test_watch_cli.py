"""``cpv model watch DIR`` on folders laid out exactly as the Hugging Face Trainer and Lightning
write them (and on any layout with --pattern): step order, each checkpoint once, a restart that
skips what was done, settling, and a watcher stopped by SIGTERM finishing its upload first."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from artifact_helpers import init_folder_repo
from helpers import TIMEOUT, ModelRepo, git, run_cpv


def hf_checkpoint(out: Path, step: int, *, complete: bool = True) -> Path:
    """``checkpoint-STEP/`` as the Trainer saves it (weights, config, optimizer, state)."""
    folder = out / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(step.to_bytes(4, "big") * 700)
    (folder / "config.json").write_text('{"model_type": "bert"}')
    (folder / "optimizer.pt").write_bytes(b"adam" * 100)
    if complete:
        epoch = step / 100
        history = [{"loss": 2.0, "step": step // 2, "epoch": epoch / 2},
                   {"eval_loss": round(1 / epoch, 4), "eval_accuracy": 0.5, "epoch": epoch,
                    "step": step},
                   {"loss": 1.0, "learning_rate": 5e-5, "step": step, "epoch": epoch}]
        (folder / "trainer_state.json").write_text(json.dumps(
            {"global_step": step, "epoch": epoch, "log_history": history}))
    return folder


def folder_md5s(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.md5(p.read_bytes()).hexdigest()
            for p in folder.rglob("*") if p.is_file()}


def versions(root: Path) -> list[dict[str, object]]:
    return json.loads(run_cpv("model", "list", "--json", cwd=root).stdout)


def test_trainer_folders_in_step_order_then_a_restart(tmp_path: Path,
                                                      isolated_env: dict[str, Path]) -> None:
    repo = init_folder_repo(tmp_path / "bert-large", isolated_env["cpv_home"])
    out = tmp_path / "out"
    for step in (500, 1000):
        hf_checkpoint(out, step)
    hf_checkpoint(out, 1500, complete=False)  # still being saved
    (out / "runs").mkdir()
    (out / "runs" / "events.out.tfevents").write_bytes(b"tb")

    first = run_cpv("model", "watch", out, "--once", "--settle", "0", cwd=repo.root).stdout
    assert "skipped   checkpoint-1500/: incomplete (no trainer_state.json yet)" in first
    assert "Versioned 2 checkpoint(s)" in first
    listed = versions(repo.root)
    assert [v["version"] for v in listed] == ["v0.1", "v0.2"]
    assert listed[0]["metrics"] == {"eval_loss": 0.2, "eval_accuracy": 0.5, "step": 500,
                                    "epoch": 5.0}
    assert listed[1]["metrics"]["step"] == 1000
    shown = json.loads(run_cpv("model", "show", "v0.1", "--json", cwd=repo.root).stdout)
    assert {k: f["md5"] for k, f in shown["files"].items()} == folder_md5s(
        out / "checkpoint-500")

    (out / "checkpoint-1500" / "trainer_state.json").write_text(json.dumps(
        {"global_step": 1500, "epoch": 15.0, "log_history": []}))
    hf_checkpoint(out, 2000)
    again = run_cpv("model", "watch", out, "--once", "--settle", "0", cwd=repo.root).stdout
    assert "checkpoint-500/" not in again and "checkpoint-1000/" not in again
    assert again.index("checkpoint-1500/") < again.index("checkpoint-2000/")
    listed = versions(repo.root)
    assert [(v["version"], v["metrics"]["step"]) for v in listed] == [
        ("v0.1", 500), ("v0.2", 1000), ("v0.3", 1500), ("v0.4", 2000)]
    assert listed[2]["metrics"] == {"step": 1500, "epoch": 15.0}
    nothing = run_cpv("model", "watch", out, "--once", "--settle", "0", cwd=repo.root).stdout
    assert "Versioned 0 checkpoint(s)" in nothing


def test_lightning_files_in_step_order_then_a_restart(repo: ModelRepo, tmp_path: Path) -> None:
    checkpoints = tmp_path / "lightning_logs" / "version_0" / "checkpoints"
    checkpoints.mkdir(parents=True)
    names = ["epoch=1-step=200-val_loss=0.50.ckpt", "epoch=9-step=1000-val_loss=0.25.ckpt",
             "epoch=10-step=1100-val_loss=-0.12.ckpt"]  # by name, epoch=10 sorts first
    for n, name in enumerate(names):
        (checkpoints / name).write_bytes(bytes([n + 1]) * 2000)
    (checkpoints / "last.ckpt").write_bytes(bytes([3]) * 2000)
    (tmp_path / "lightning_logs" / "checkpoint-5").mkdir()  # a folder: not for model.bin
    (tmp_path / "lightning_logs" / "checkpoint-5" / "x").write_bytes(b"x")

    shown = run_cpv("model", "watch", tmp_path / "lightning_logs", "--once", "--settle", "0",
                    cwd=repo.root).stdout
    assert "last.ckpt" not in shown
    assert "checkpoint-5/: a folder, but this repository's model is the file model.bin" in shown
    listed = versions(repo.root)
    assert [(v["version"], v["metrics"]) for v in listed] == [
        ("v0.1", {"epoch": 1, "step": 200, "val_loss": 0.5}),
        ("v0.2", {"epoch": 9, "step": 1000, "val_loss": 0.25}),
        ("v0.3", {"epoch": 10, "step": 1100, "val_loss": -0.12})], shown
    assert [v["md5"] for v in listed] == [
        hashlib.md5(bytes([n]) * 2000).hexdigest() for n in (1, 2, 3)]

    (checkpoints / "epoch=11-step=1200-val_loss=0.10.ckpt").write_bytes(b"\x04" * 2000)
    again = run_cpv("model", "watch", tmp_path / "lightning_logs", "--once", "--settle", "0",
                    cwd=repo.root).stdout
    assert again.count("queued") == 1 and "epoch=11" in again
    assert [v["version"] for v in versions(repo.root)] == ["v0.1", "v0.2", "v0.3", "v0.4"]


def test_any_layout_with_a_pattern_and_a_metrics_file_without_versions(
        tmp_path: Path, isolated_env: dict[str, Path]) -> None:
    repo = init_folder_repo(tmp_path / "bert-large", isolated_env["cpv_home"])
    out = tmp_path / "out"
    for step in (10, 2):
        (out / f"step_{step}").mkdir(parents=True)
        (out / f"step_{step}" / "weights.pt").write_bytes(bytes([step]) * 500)
        (out / f"step_{step}" / "scores.json").write_text(json.dumps({"bleu": step / 100}))
    (out / "notes.txt").write_text("not a checkpoint")
    run_cpv("model", "watch", out, "--pattern", "step_*", "--metrics-file", "scores.json",
            "--no-tag", "--once", "--settle", "0", cwd=repo.root)
    assert versions(repo.root) == []
    log = repo.git("log", "--format=%s", "-2").splitlines()
    assert log == ["Checkpoint step_10", "Checkpoint step_2"]
    metrics = [json.loads(line) for line in (repo.root / "metrics.log").read_text().splitlines()
               if line.strip()]
    assert metrics[-2:] == [{"bleu": 0.02}, {"bleu": 0.1}]


def test_once_waits_for_a_checkpoint_to_settle(repo: ModelRepo, tmp_path: Path) -> None:
    out = tmp_path / "ckpts"
    out.mkdir()
    old, fresh = out / "epoch=0-step=10.ckpt", out / "epoch=1-step=20.ckpt"
    old.write_bytes(b"old" * 100)
    an_hour_ago = time.time() - 3600
    os.utime(old, (an_hour_ago, an_hour_ago))
    fresh.write_bytes(b"fresh" * 100)
    shown = run_cpv("model", "watch", out, "--once", "--settle", "2", cwd=repo.root).stdout
    assert "waiting   epoch=1-step=20.ckpt: settling (2 s)" in shown
    assert [v["metrics"]["step"] for v in versions(repo.root)] == [10, 20]


def test_sigterm_finishes_the_upload_under_way_and_keeps_the_rest_queued(
        repo: ModelRepo, tmp_path: Path) -> None:
    out = tmp_path / "ckpts"
    out.mkdir()
    hold = tmp_path / "hold"
    hold.touch()
    env = {**os.environ, "CPV_TEST_PAUSE_AT": "queue_entry", "CPV_TEST_PAUSE_FILE": str(hold)}
    watcher = subprocess.Popen(
        [sys.executable, "-m", "cp_manage.cli.app", "model", "watch", str(out), "--settle", "0"],
        cwd=repo.root, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        for step in (1, 2):
            (out / f"epoch={step}-step={step}.ckpt").write_bytes(bytes([step]) * 1000)
        deadline = time.monotonic() + TIMEOUT
        while len(repo.manager.pending_uploads()) < 2:  # both snapshotted and queued
            assert time.monotonic() < deadline and watcher.poll() is None
            time.sleep(0.2)
        watcher.send_signal(signal.SIGTERM)  # the worker is held inside the first upload
        time.sleep(0.5)
        hold.unlink()
        stdout, stderr = watcher.communicate(timeout=TIMEOUT)
    finally:
        if watcher.poll() is None:
            watcher.kill()
    assert watcher.returncode == 128 + signal.SIGTERM, stderr
    assert "Stopped by SIGTERM: 1 checkpoint(s) versioned; 1 upload(s) wait in the queue" in \
        stdout
    assert [v["metrics"]["step"] for v in versions(repo.root)] == [1]
    run_cpv("model", "flush", cwd=repo.root)
    assert [v["metrics"]["step"] for v in versions(repo.root)] == [1, 2]
    assert git("tag", cwd=repo.root).split() == ["v0.1", "v0.2"]
