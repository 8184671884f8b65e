"""The whole model, data and combined lifecycle through the CLI against S3 and an SSH git host,
then the two promises that outlive cpv: stock ``git clone`` + ``dvc pull`` reproduce every
version, and any machine holding only the configuration downloads a version without a clone.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import PROFILE, TEAM, Infra, make_infra
from data_helpers import SEED_DATASET, write_dataset
from helpers import files_under, md5_of, write_random
from servers import SeaweedS3, SSHServer

MODEL = "faster-whisper"


@dataclass
class Released:
    """A model repository with three model versions and two data versions on S3 + SSH."""

    infra: Infra
    repo: Path
    model_md5: dict[str, str]  # model tag -> md5 of model.bin
    datasets: dict[str, dict[str, str]]  # data tag -> {relative path: md5}


@pytest.fixture(scope="module")
def released(tmp_path_factory: pytest.TempPathFactory, s3_server: SeaweedS3,
             ssh_server: SSHServer) -> Iterator[Released]:
    root = tmp_path_factory.mktemp("released")
    infra = make_infra(root, s3_server, ssh_server)
    bare = infra.bare_repo(MODEL)
    laptop = root / "laptop"
    laptop.mkdir()

    init = infra.cpv("init", "--team", TEAM, "--model", MODEL, cwd=laptop)
    repo = laptop / MODEL
    assert infra.git_url(MODEL) in init.stdout
    assert f"s3://{infra.bucket}/{TEAM}/{MODEL}" in init.stdout
    assert infra.git("rev-parse", "HEAD", cwd=repo) == infra.git("rev-parse", "main", cwd=bare)
    again = infra.cpv("init", "--team", TEAM, "--model", MODEL, cwd=laptop)
    assert "nothing changed" in again.stdout

    model_md5: dict[str, str] = {}
    for seed, accuracy in ((1, 0.81), (2, 0.86)):
        md5 = write_random(repo / "model.bin", 3000 + seed, seed=seed)
        infra.cpv("model", "upload", "--metric", f"accuracy={accuracy}", "-m", f"epoch {seed}",
                  cwd=repo)
        tag = infra.cpv("model", "tag", cwd=repo).stdout.split()[-1]
        model_md5[tag] = md5

    source = write_dataset(root / "dataset", SEED_DATASET)
    infra.cpv("data", "upload", source, cwd=repo)
    assert infra.cpv("data", "tag", cwd=repo).stdout.split()[-1] == "data/v0.1"
    datasets = {"data/v0.1": files_under(repo / "data")}

    write_dataset(repo / "data", {"train/part-1.jsonl": b'{"text": "h"}\n'})
    infra.cpv("data", "upload", "-m", "more data", cwd=repo)
    model_md5["v0.3"] = write_random(repo / "model.bin", 5000, seed=3)
    infra.cpv("model", "upload", "--metric", "accuracy=0.9", cwd=repo)
    tagged = infra.cpv("combined", "tag", "-m", "release", cwd=repo)
    assert "Tagged v0.3 and data/v0.3" in tagged.stdout
    datasets["data/v0.3"] = files_under(repo / "data")
    assert list(model_md5) == ["v0.1", "v0.2", "v0.3"]
    yield Released(infra, repo, model_md5, datasets)


def test_lifecycle_commands_against_s3_and_ssh(released: Released, tmp_path: Path) -> None:
    infra, repo = released.infra, released.repo
    dvc_config = (repo / ".dvc" / "config").read_text()
    assert f"url = s3://{infra.bucket}/{TEAM}/{MODEL}" in dvc_config
    assert f"endpointurl = {infra.s3.endpoint_url}" in dvc_config
    assert PROFILE not in dvc_config and str(infra.credentials) not in dvc_config

    # Every version is on the git host, and every object in the bucket under team/model.
    remote_tags = infra.git("ls-remote", "--tags", "--refs", "origin", cwd=repo)
    for tag in ["v0.1", "v0.2", "v0.3", "data/v0.1", "data/v0.3"]:
        assert f"refs/tags/{tag}\n" in remote_tags + "\n"
    listing = infra.s3.client().list_objects_v2(Bucket=infra.bucket)
    keys = {item["Key"] for item in listing.get("Contents", [])}
    for md5 in released.model_md5.values():
        assert f"{TEAM}/{MODEL}/files/md5/{md5[:2]}/{md5[2:]}" in keys
    for files in released.datasets.values():
        for md5 in files.values():
            assert f"{TEAM}/{MODEL}/files/md5/{md5[:2]}/{md5[2:]}" in keys
    assert all(key.startswith(f"{TEAM}/{MODEL}/files/md5/") for key in keys)

    models = json.loads(infra.cpv("model", "list", "--json", cwd=repo).stdout)
    assert [(m["version"], m["md5"]) for m in models] == list(released.model_md5.items())
    assert models[2]["data_version"] == "data/v0.3"
    data = json.loads(infra.cpv("data", "list", "--json", cwd=repo).stdout)
    assert [d["tag"] for d in data] == ["data/v0.1", "data/v0.3"]
    shown = json.loads(infra.cpv("combined", "show", "v0.3", "--json", cwd=repo).stdout)
    assert shown["lineage"]["same_commit"] and shown["lineage"]["trained_on_this_data"]
    diff = json.loads(infra.cpv("model", "diff", "v0.1", "v0.2", "--json", cwd=repo).stdout)
    assert diff["metrics"]["accuracy"]["new"] == 0.86

    # Downloads come from S3: the clone's cache does not have what a fresh clone lacks, so
    # drop the cache first and prove the bytes arrive from the bucket.
    out = tmp_path / "out"
    infra.run(["rm", "-rf", str(repo / ".dvc" / "cache")], cwd=repo)
    infra.cpv("model", "download", "v0.1", "-o", out / "model", cwd=repo)
    assert md5_of(out / "model" / "model.bin") == released.model_md5["v0.1"]
    infra.cpv("data", "download", "data/v0.1", "-o", out / "data", cwd=repo)
    assert files_under(out / "data") == released.datasets["data/v0.1"]

    # Revert (model alone, then model and data together): new commits, pushed over ssh.
    assert "Reverted model to v0.1" in infra.cpv("model", "revert", "v0.1", cwd=repo).stdout
    assert md5_of(repo / "model.bin") == released.model_md5["v0.1"]
    infra.cpv("combined", "revert", "v0.3", cwd=repo)
    assert md5_of(repo / "model.bin") == released.model_md5["v0.3"]
    assert files_under(repo / "data") == released.datasets["data/v0.3"]
    infra.cpv("data", "revert", "v0.1", cwd=repo)
    assert files_under(repo / "data") == released.datasets["data/v0.1"]
    head = infra.git("rev-parse", "HEAD", cwd=repo)
    assert infra.git("ls-remote", "origin", "refs/heads/main", cwd=repo).split()[0] == head
    assert infra.git("status", "--porcelain", cwd=repo) == ""


def test_stock_git_clone_and_dvc_pull_reproduce_every_version(
        released: Released, tmp_path: Path) -> None:
    infra = released.infra
    clone = tmp_path / "clone"
    infra.git("clone", "-q", infra.git_url(MODEL), clone, cwd=tmp_path)
    # v0.1 and v0.2 hold a model only; data/v0.1 holds v0.2's model; v0.3 holds both.
    for rev, model_tag, data_tag in (("v0.1", "v0.1", None), ("v0.2", "v0.2", None),
                                     ("data/v0.1", "v0.2", "data/v0.1"),
                                     ("v0.3", "v0.3", "data/v0.3")):
        infra.git("checkout", "-q", rev, cwd=clone)
        infra.dvc("pull", "-q", cwd=clone)
        assert md5_of(clone / "model.bin") == released.model_md5[model_tag], rev
        if data_tag is not None:
            assert files_under(clone / "data") == released.datasets[data_tag], rev


def test_download_without_a_clone_from_the_configuration_alone(
        released: Released, tmp_path: Path, s3_server: SeaweedS3, ssh_server: SSHServer
        ) -> None:
    # Another machine: its own HOME and CPV_HOME, the same team configuration, no clone.
    other = make_infra(tmp_path, s3_server, ssh_server)
    other.configure_aws(bucket=released.infra.bucket)
    other.cpv("config", "set", "git_url_template", released.infra.git_url_template,
              cwd=tmp_path)
    empty = tmp_path / "elsewhere"
    empty.mkdir()

    got = other.cpv("model", "download", "v0.2", "--team", TEAM, "--model", MODEL,
                    "-o", empty / "v0.2", cwd=empty)
    assert "verified" in got.stdout
    assert md5_of(empty / "v0.2" / "model.bin") == released.model_md5["v0.2"]
    other.cpv("data", "download", "data/v0.3", "--team", TEAM, "--model", MODEL,
              "-o", empty / "data", cwd=empty)
    assert files_under(empty / "data") == released.datasets["data/v0.3"]
    assert sorted(p.name for p in empty.iterdir()) == ["data", "v0.2"]  # no clone was made

    # Reading too: the versions and their metadata, as the clone shows them.
    no_clone = ("--team", TEAM, "--model", MODEL)
    for args in (("model", "list", "--json"), ("data", "list", "--json"),
                 ("model", "show", "v0.3", "--json"), ("model", "diff", "v0.1", "v0.2"),
                 ("combined", "show", "v0.3", "--json")):
        assert other.cpv(*args, *no_clone, cwd=empty).stdout == released.infra.cpv(
            *args, cwd=released.repo).stdout, args
    assert sorted(p.name for p in empty.iterdir()) == ["data", "v0.2"]

    # The tags were fetched with their history, and no branch.
    mirror = other.cpv_home / "mirrors" / TEAM / f"{MODEL}.git"
    refs = other.git("for-each-ref", "--format=%(refname)", cwd=mirror).splitlines()
    assert refs == [f"refs/tags/{t}" for t in ("data/v0.1", "data/v0.3", "v0.1", "v0.2",
                                               "v0.3")]
    assert not (mirror / "shallow").exists()
    # Only those versions' objects came from storage: nothing of v0.1, v0.3 or data/v0.1.
    cached = {p.parent.name + p.name for p in (other.cpv_home / "cache").rglob("*")
              if p.is_file()}
    wanted = {released.model_md5["v0.2"], *released.datasets["data/v0.3"].values()}
    unwanted = {released.model_md5["v0.1"], released.model_md5["v0.3"]}
    assert not cached & unwanted, cached
    assert cached <= wanted | {c for c in cached if c.endswith(".dir")}


def test_a_teammate_joins_with_cpv_init_and_both_see_each_others_versions(
        infra: Infra, tmp_path: Path, s3_server: SeaweedS3, ssh_server: SSHServer) -> None:
    # The git host made the repository with its own default branch, master; cpv pushes main.
    infra.bare_repo("bert-large", branch="master")
    # The team keeps its models under a prefix of its own.
    infra.cpv("config", "set", "storage_url_template", "s3://{bucket}/ml/{team}/{model}",
              cwd=tmp_path)
    first = tmp_path / "first"
    first.mkdir()
    infra.cpv("init", "--team", TEAM, "--model", "bert-large", cwd=first)
    mine = first / "bert-large"
    v01 = write_random(mine / "model.bin", 4096, seed=1)
    infra.cpv("model", "upload", "--metric", "loss=0.3", cwd=mine)
    infra.cpv("model", "tag", cwd=mine)
    prefix = f"ml/{TEAM}/bert-large/files/md5/"

    teammate = make_infra(tmp_path / "teammate", s3_server, ssh_server)
    teammate.configure_aws(bucket=infra.bucket)
    teammate.cpv("config", "set", "git_url_template", infra.git_url_template, cwd=teammate.root)
    # No storage_url_template here: the clone's .dvc/config names the team's location.
    cloned = teammate.cpv("init", "--team", TEAM, "--model", "bert-large", cwd=teammate.root)
    assert "Cloned" in cloned.stdout
    theirs = teammate.root / "bert-large"
    assert teammate.git("branch", "--show-current", cwd=theirs) == "main"
    teammate.cpv("model", "download", "v0.1", "-o", teammate.root / "v0.1", cwd=theirs)
    assert md5_of(teammate.root / "v0.1" / "model.bin") == v01
    v02 = write_random(theirs / "model.bin", 4096, seed=2)
    teammate.cpv("model", "upload", "--metric", "loss=0.2", cwd=theirs)
    assert "v0.2" in teammate.cpv("model", "tag", cwd=theirs).stdout

    listed = json.loads(infra.cpv("model", "list", "--json", cwd=mine).stdout)
    assert [(v["version"], v["md5"]) for v in listed] == [("v0.1", v01), ("v0.2", v02)]
    infra.cpv("model", "download", "v0.2", "-o", tmp_path / "v0.2", cwd=mine)
    assert md5_of(tmp_path / "v0.2" / "model.bin") == v02
    listing = infra.s3.client().list_objects_v2(Bucket=infra.bucket)
    assert {item["Key"] for item in listing["Contents"]} == {
        f"{prefix}{md5[:2]}/{md5[2:]}" for md5 in (v01, v02)}
