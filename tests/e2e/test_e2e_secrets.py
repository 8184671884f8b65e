"""No secret leaves the credentials file: after a whole lifecycle on S3 + SSH, failures run with
``--verbose`` (tracebacks on) included, neither key is in any output, in config.json, in any
file or git object of the clone, of the mirror or of the git host's repository."""

from __future__ import annotations

import json
import stat

from conftest import TEAM, Infra
from data_helpers import SEED_DATASET, write_dataset
from helpers import write_random

MODEL = "whisper-secret"
WRONG = "wrong-secret-key-1234"


def test_no_secret_in_outputs_config_repository_or_remote(infra: Infra) -> None:
    root = infra.root
    infra.bare_repo(MODEL)
    infra.bare_repo("never-made")
    infra.cpv("--verbose", "init", "--team", TEAM, "--model", MODEL, cwd=root)
    repo = root / MODEL
    write_random(repo / "model.bin", 4096, seed=1)
    infra.cpv("--verbose", "model", "upload", "--metric", "accuracy=0.8", cwd=repo)
    infra.cpv("--verbose", "model", "tag", cwd=repo)
    write_dataset(root / "dataset", SEED_DATASET)
    infra.cpv("--verbose", "data", "upload", root / "dataset", cwd=repo)
    write_random(repo / "model.bin", 4096, seed=2)
    infra.cpv("--verbose", "model", "upload", "--metric", "accuracy=0.9", cwd=repo)
    infra.cpv("--verbose", "combined", "tag", cwd=repo)
    for command in (["combined", "show", "v0.2"], ["config", "show", "--json"],
                    ["config", "validate", "--json"], ["doctor"]):
        infra.cpv("--verbose", *command, cwd=repo)
    elsewhere = root / "elsewhere"  # no clone here: the download works from config alone
    elsewhere.mkdir()
    infra.cpv("--verbose", "model", "download", "v0.1", "--team", TEAM, "--model", MODEL,
              "-o", elsewhere / "v0.1", cwd=elsewhere)
    infra.run(["rm", "-rf", str(repo / ".dvc" / "cache")], cwd=repo)

    # Failures, each with --verbose: tracebacks and every detail on.
    failures = []
    infra.write_credentials(secret_key=WRONG)
    write_random(repo / "model.bin", 4096, seed=3)
    failures += [
        infra.cpv("--verbose", "model", "upload", cwd=repo, expect=1),
        infra.cpv("--verbose", "model", "download", "v0.1", "-o", root / "out", cwd=repo,
                  expect=1),
        infra.cpv("--verbose", "data", "download", "v0.2", "--team", TEAM, "--model", MODEL,
                  "-o", elsewhere / "data", cwd=elsewhere, expect=1),
        infra.cpv("--verbose", "init", "--team", TEAM, "--model", "never-made", cwd=root,
                  expect=1),
        infra.cpv("--verbose", "config", "validate", "--json", cwd=repo, expect=1),
        infra.cpv("--verbose", "doctor", cwd=repo, expect=1),
    ]
    # The same wrong secret through the environment, as CI jobs pass keys.
    env_keys = infra.with_env(AWS_ACCESS_KEY_ID=infra.s3.access_key,
                              AWS_SECRET_ACCESS_KEY=WRONG)
    infra.write_credentials()
    failures.append(infra.cpv("--verbose", "model", "upload", cwd=repo, expect=1,
                              env=env_keys))
    infra.configure_aws(bucket="no-such-bucket-cpv")
    failures.append(infra.cpv("--verbose", "init", "--team", TEAM, "--model", "never-made",
                              cwd=root, expect=1))
    infra.configure_aws()
    refused = infra.with_env(GIT_SSH_COMMAND=infra.ssh_command_with(key=root / "nobody"))
    infra.cpv("config", "ssh", "--key", root / "nobody", "--ssh-config", root / "unused",
              cwd=root)
    failures.append(infra.cpv("--verbose", "model", "upload", cwd=repo, expect=1,
                              env=refused))
    assert all("Traceback" in f.stderr for f in failures[:4]), failures[0].stderr

    # The clone works on, and its remote and storage hold what it made.
    infra.cpv("--verbose", "model", "upload", cwd=repo)
    infra.cpv("--verbose", "model", "tag", cwd=repo)

    config = infra.cpv_home / "config.json"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    settings = json.loads(config.read_text())
    assert settings["aws_profile"] == "ml-team"
    assert settings["aws_credential_path"] == str(infra.credentials)
    assert infra.s3.secret_key in infra.credentials.read_text()  # it is where it belongs
    searched = infra.assert_no_secrets(WRONG)
    assert {repo / ".git", infra.git_host / TEAM / f"{MODEL}.git",
            infra.cpv_home / "mirrors" / TEAM / f"{MODEL}.git"} <= set(searched)
