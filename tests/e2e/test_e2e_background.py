"""Background uploads against the team's real infrastructure (SeaweedFS S3, git over SSH): a
training process submits five epochs, overwriting its file after each submit, and the bucket
ends up with each epoch's own bytes under its own version."""

from __future__ import annotations

import hashlib
import json

from conftest import TEAM, Infra
from helpers import CPV

MODEL = "whisper-bg"

TRAINING = """
import hashlib, json, os, sys
from cp_manage import ModelsCheckpointsManage

manager = ModelsCheckpointsManage(repo_path=sys.argv[1])
path = os.path.join(sys.argv[1], "model.bin")
written = []
with manager.background() as uploads:
    futures = []
    for epoch in range(1, 6):
        data = bytes([epoch]) * (300_000 + epoch) + os.urandom(64)
        with open(path, "wb") as handle:
            handle.write(data)
        written.append(hashlib.md5(data).hexdigest())
        futures.append(uploads.submit(path, metrics={"epoch": epoch, "loss": 1 / epoch}))
        with open(path, "wb") as handle:
            handle.write(b"next epoch in progress")
print(json.dumps({"md5": written, "results": [f.result() for f in futures]}))
"""


def test_five_epochs_through_the_queue_to_s3(infra: Infra) -> None:
    infra.bare_repo(MODEL)
    infra.cpv("init", "--team", TEAM, "--model", MODEL, cwd=infra.root)
    repo = infra.root / MODEL
    ran = infra.run([CPV[0], "-c", TRAINING, str(repo)], cwd=infra.root)
    report = json.loads(ran.stdout.strip().splitlines()[-1])
    assert report["results"] == ["v0.1", "v0.2", "v0.3", "v0.4", "v0.5"]
    listed = json.loads(infra.cpv("model", "list", "--json", cwd=repo).stdout)
    assert [(v["version"], v["md5"], v["metrics"]["epoch"]) for v in listed] == [
        (f"v0.{n}", report["md5"][n - 1], n) for n in range(1, 6)]
    client = infra.s3.client()
    for md5 in report["md5"]:
        key = f"{infra.storage_prefix(MODEL)}/files/md5/{md5[:2]}/{md5[2:]}"
        body = client.get_object(Bucket=infra.bucket, Key=key)["Body"].read()
        assert hashlib.md5(body).hexdigest() == md5
    assert "refs/tags/v0.5" in infra.remote_refs(MODEL)
    assert json.loads(infra.cpv("model", "pending", "--json", cwd=repo).stdout) == []
