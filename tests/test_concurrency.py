"""Concurrent writers: 8 processes, each in its own clone, upload and tag 5 versions at once.

Every version must end up distinct, on the remote, and downloadable with the writer's bytes;
lost races are replayed on top of the remote (counted from the library's log).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

WRITERS, VERSIONS = 8, 5

WRITER = textwrap.dedent("""
    import hashlib, json, logging, os, sys
    from cp_manage import ModelsCheckpointsManage

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    index, root = int(sys.argv[1]), sys.argv[2]
    manager = ModelsCheckpointsManage(team_name="T", model_name="m", repo_path=f"{root}/w{index}")
    manager.import_model_init()
    done = []
    for k in range(int(sys.argv[3])):
        data = os.urandom(4096) + f"writer {index} version {k}".encode()
        (manager.repo_path / "model.bin").write_bytes(data)
        manager.upload_model_checkpoint(metrics={"writer": index, "k": k})
        tag = manager.tag_model_checkpoint()
        done.append([tag, hashlib.md5(data).hexdigest()])
    print(json.dumps(done))
""")


@pytest.fixture()
def env(tmp_path: Path) -> dict[str, str]:
    gitconfig = tmp_path / "gitconfig"
    gitconfig.write_text("[user]\n\tname = Writer\n\temail = w@test.invalid\n")
    return {**os.environ, "HOME": str(tmp_path / "home"), "CPV_HOME": str(tmp_path / "cpv"),
            "GIT_CONFIG_GLOBAL": str(gitconfig), "GIT_CONFIG_NOSYSTEM": "1",
            "DVC_NO_ANALYTICS": "1"}


def test_eight_writers_five_versions_each(tmp_path: Path, env: dict[str, str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    seed = subprocess.run([sys.executable, "-c", "from cp_manage import ModelsCheckpointsManage;"
                           f"ModelsCheckpointsManage(team_name='T', model_name='m', repo_path="
                           f"'{tmp_path}/seed').import_model_init()"], env=env, check=False,
                          capture_output=True, text=True)
    assert seed.returncode == 0, seed.stderr

    started = time.monotonic()
    procs = [subprocess.Popen([sys.executable, str(script), str(i), str(tmp_path), str(VERSIONS)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(WRITERS)]
    results = [p.communicate(timeout=600) for p in procs]
    elapsed = time.monotonic() - started
    for proc, (_out, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, err[-2000:]

    written = {tag: md5 for out, _ in results for tag, md5 in json.loads(out)}
    assert len(written) == WRITERS * VERSIONS  # no name given twice
    retries = sum(err.count("replaying on top of it") + err.count("taken meanwhile")
                  for _, err in results)

    bare = Path(env["CPV_HOME"]) / "remotes/git/T/m.git"
    remote_tags = subprocess.run(["git", "tag"], cwd=bare, capture_output=True, text=True,
                                 check=True).stdout.split()
    assert sorted(remote_tags) == sorted(written)

    # A fresh clone sees every version, each downloadable with its writer's bytes.
    from cp_manage import ModelsCheckpointsManage

    for key in ("HOME", "CPV_HOME", "GIT_CONFIG_GLOBAL"):
        monkeypatch.setenv(key, env[key])
    reader = ModelsCheckpointsManage(team_name="T", model_name="m", repo_path=tmp_path / "reader")
    reader.import_model_init()
    listed = reader.read_checkpoint_tag()
    assert listed == [f"v0.{n}" for n in range(1, WRITERS * VERSIONS + 1)]
    for tag, md5 in written.items():
        artifact = reader.download_model_checkpoint(tag=tag, output_dir=tmp_path / "dl" / tag)
        assert hashlib.md5(artifact.model_path.read_bytes()).hexdigest() == md5
    history = subprocess.run(["git", "log", "--format=%s", "refs/heads/main"], cwd=bare,
                             capture_output=True, text=True, check=True).stdout.splitlines()
    assert sum(line.startswith("Upload model") for line in history) == WRITERS * VERSIONS
    print(f"\nconcurrency: {WRITERS} writers x {VERSIONS} versions = {len(written)} versions, "
          f"{retries} lost races replayed, {elapsed:.1f} s")
