"""Stages against an SSH git host and S3: a laptop promotes, a deploy box that has only the
team's configuration fetches whatever production holds, before and after a promote."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import TEAM, Infra, make_infra
from helpers import md5_of, write_random
from servers import SeaweedS3, SSHServer

MODEL = "yolov8"


def test_a_deploy_box_fetches_production(infra: Infra, tmp_path: Path, s3_server: SeaweedS3,
                                         ssh_server: SSHServer) -> None:
    infra.bare_repo(MODEL)
    laptop = tmp_path / "laptop"
    laptop.mkdir()
    infra.cpv("init", "--team", TEAM, "--model", MODEL, cwd=laptop)
    repo = laptop / MODEL
    made = {}
    for seed in (1, 2):
        made[f"v0.{seed}"] = write_random(repo / "model.bin", 2000 + seed, seed=seed)
        infra.cpv("model", "upload", "--metric", f"map={0.5 + seed / 10}", cwd=repo)
        infra.cpv("model", "tag", cwd=repo)
    infra.cpv("model", "promote", "v0.1", "production", "-m", "first deploy", cwd=repo)

    box = make_infra(tmp_path / "box", s3_server, ssh_server)
    box.configure_aws(bucket=infra.bucket)
    box.cpv("config", "set", "git_url_template", infra.git_url_template, cwd=box.root)
    srv = box.root / "srv"
    srv.mkdir()
    fetch = ("model", "download", "production", "--team", TEAM, "--model", MODEL, "-o", "model",
             "--force")
    box.cpv(*fetch, cwd=srv)
    assert md5_of(srv / "model" / "model.bin") == made["v0.1"]

    best = infra.cpv("model", "best", "map", "--max", cwd=repo).stdout.strip()
    infra.cpv("model", "promote", best, "production", cwd=repo)
    box.cpv(*fetch, cwd=srv)
    assert md5_of(srv / "model" / "model.bin") == made["v0.2"]
    history = json.loads(box.cpv("model", "stages", "--history", "--json", "--team", TEAM,
                                 "--model", MODEL, cwd=srv).stdout)
    assert [(e["seq"], e["version"], e["replaced"]) for e in history] == [
        (1, "v0.1", None), (2, "v0.2", "v0.1")]
    bare = infra.git_host / TEAM / f"{MODEL}.git"
    assert infra.git("tag", "-l", "stage/*", cwd=bare).split() == ["stage/000001",
                                                                  "stage/000002"]
