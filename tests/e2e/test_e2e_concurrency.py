"""Concurrency and crashes on the team's real infrastructure: S3 storage and an SSH git host."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import Infra
from test_concurrency import WRITER

WRITERS, VERSIONS = 4, 3


def test_concurrent_writers_over_s3_and_ssh(infra: Infra, tmp_path: Path) -> None:
    infra.bare_repo("m", team="T")
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    seed = subprocess.run([sys.executable, "-c", "from cp_manage import ModelsCheckpointsManage;"
                           f"ModelsCheckpointsManage(team_name='T', model_name='m', repo_path="
                           f"'{tmp_path}/seed').import_model_init()"], env=infra.env,
                          capture_output=True, text=True, check=False)
    assert seed.returncode == 0, seed.stderr
    started = time.monotonic()
    procs = [subprocess.Popen([sys.executable, str(script), str(i), str(tmp_path), str(VERSIONS)],
                              env=infra.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for i in range(WRITERS)]
    results = [p.communicate(timeout=600) for p in procs]
    for proc, (_out, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, err[-2000:]
    written = {tag: md5 for out, _ in results for tag, md5 in json.loads(out)}
    assert len(written) == WRITERS * VERSIONS
    retries = sum(err.count("replaying on top of it") + err.count("taken meanwhile")
                  for _, err in results)

    reader = tmp_path / "reader"
    infra.cpv("init", "--team", "T", "--model", "m", "--path", reader, cwd=tmp_path)
    listed = json.loads(infra.cpv("model", "list", "--json", cwd=reader).stdout)
    assert [v["version"] for v in listed] == [f"v0.{n}" for n in range(1, len(written) + 1)]
    for tag, md5 in written.items():
        out = tmp_path / "dl" / tag
        infra.cpv("model", "download", tag, "-o", out, cwd=reader)
        assert hashlib.md5((out / "model.bin").read_bytes()).hexdigest() == md5
    print(f"\nS3+SSH concurrency: {WRITERS} writers x {VERSIONS} versions, {retries} lost races "
          f"replayed, {time.monotonic() - started:.1f} s")


def test_upload_killed_after_blobs_and_after_commit_over_s3_and_ssh(infra: Infra,
                                                                    tmp_path: Path) -> None:
    infra.bare_repo("crash", team="T")
    repo = tmp_path / "crash"
    infra.cpv("init", "--team", "T", "--model", "crash", "--path", repo, cwd=tmp_path)
    for n, point in enumerate(("after_blobs", "after_commit")):
        (repo / "model.bin").write_bytes(f"weights {n}".encode() * 1000)
        remote_before = infra.remote_refs("crash", team="T")
        killed = infra.cpv("model", "upload", cwd=repo, expect=None,
                           env=infra.with_env(CPV_TEST_KILL_AT=point))
        assert killed.returncode == -signal.SIGKILL
        assert infra.remote_refs("crash", team="T") == remote_before
        infra.cpv("model", "upload", cwd=repo)
        infra.cpv("model", "tag", cwd=repo)
        doctor = json.loads(infra.cpv("doctor", "--json", cwd=repo).stdout)
        assert {f["status"] for f in doctor} == {"passed"}, doctor
