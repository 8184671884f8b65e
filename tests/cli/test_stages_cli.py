"""``cpv model promote/demote/stages/retire/best``, ``list --all/--sort`` and ``tag --commit``
through the real ``cpv`` command, in a clone and on a machine without one."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from data_helpers import data_manager, write_dataset
from helpers import CPV, MODEL, TEAM, ModelRepo, assert_one_error_line, md5_of, run_cpv

NO_CLONE = ("--team", TEAM, "--model", MODEL)


@pytest.fixture
def released(repo: ModelRepo) -> dict[str, str]:
    """v0.1 (wer 0.3), v0.2 (wer 0.2), v0.3 (no wer), then one upload without a version."""
    made = {}
    for index, metrics in enumerate([{"wer": 0.3}, {"wer": 0.2}, {"bleu": 31.0}]):
        made[f"v0.{index + 1}"] = repo.upload(metrics, size=300, seed=index)[0]
        repo.manager.tag_model_checkpoint()
    made["untagged"] = repo.upload({"wer": 0.1}, size=300, seed=9)[0]
    return made


def test_promote_demote_and_the_history(repo: ModelRepo, released: dict[str, str]) -> None:
    cwd = repo.root
    out = run_cpv("model", "promote", "v0.1", "production", "-m", "first release", cwd=cwd)
    assert "Promoted v0.1 to production as stage/000001" in out.stdout
    run_cpv("model", "promote", "v0.2", "staging", cwd=cwd)
    out = run_cpv("model", "promote", "staging", "production", "-m", "A/B test won", cwd=cwd)
    assert "Promoted v0.2 to production (replacing v0.1) as stage/000003" in out.stdout
    again = run_cpv("model", "promote", "v0.2", "production", cwd=cwd)
    assert "production already holds v0.2; nothing recorded" in again.stdout
    out = run_cpv("model", "demote", "staging", "-m", "tests moved to canary", cwd=cwd)
    assert "Demoted staging (was v0.2) as stage/000004" in out.stdout
    assert "nothing recorded" in run_cpv("model", "demote", "staging", cwd=cwd).stdout

    current = run_cpv("model", "stages", cwd=cwd).stdout.splitlines()
    assert current[0].split() == ["stage", "version", "since", "(UTC)", "by", "message"]
    assert current[1].split()[:2] == ["production", "v0.2"] and "A/B test won" in current[1]
    assert len(current) == 2

    table = run_cpv("model", "stages", "--history", cwd=cwd).stdout
    print(f"\n$ cpv model stages --history\n{table}")
    lines = table.splitlines()
    assert lines[0].split() == ["seq", "when", "(UTC)", "who", "action", "stage", "version",
                                "replaced", "message"]
    assert [line.split()[0] for line in lines[1:]] == ["1", "2", "3", "4"]
    assert "Test Engineer <test@example.com>" in lines[1]
    history = json.loads(run_cpv("model", "stages", "--history", "--json", cwd=cwd).stdout)
    assert [(e["seq"], e["action"], e["stage"], e["version"], e["replaced"]) for e in history] == [
        (1, "promote", "production", "v0.1", None), (2, "promote", "staging", "v0.2", None),
        (3, "promote", "production", "v0.2", "v0.1"), (4, "demote", "staging", None, "v0.2")]
    assert {"created_at", "author", "message", "tag", "commit"} <= history[0].keys()
    production = json.loads(run_cpv("model", "stages", "production", "--history", "--json",
                                    cwd=cwd).stdout)
    assert [e["seq"] for e in production] == [1, 3]
    assert json.loads(run_cpv("model", "stages", "--json", cwd=cwd).stdout)[0]["seq"] == 3

    listing = run_cpv("model", "list", cwd=cwd).stdout.splitlines()
    assert listing[0].split()[-1] == "stages"
    assert listing[2].split()[0] == "v0.2" and listing[2].split()[-1] == "production"


def test_a_stage_wherever_a_version_goes(repo: ModelRepo, released: dict[str, str],
                                         tmp_path: Path) -> None:
    cwd = repo.root
    run_cpv("model", "promote", "v0.1", "production", cwd=cwd)
    run_cpv("model", "promote", "v0.2", "staging", cwd=cwd)
    shown = json.loads(run_cpv("model", "show", "production", "--json", cwd=cwd).stdout)
    assert shown["version"] == "v0.1"
    diff = json.loads(run_cpv("model", "diff", "production", "staging", "--json",
                              cwd=cwd).stdout)
    assert (diff["old"]["version"], diff["new"]["version"]) == ("v0.1", "v0.2")
    assert diff["metrics"]["wer"]["delta"] == -0.1

    # A deploy box without a clone fetches production, and again after a promote.
    deploy = tmp_path / "deploy"
    deploy.mkdir()
    run_cpv("model", "download", "production", *NO_CLONE, "-o", "current", cwd=deploy)
    assert md5_of(deploy / "current" / "model.bin") == released["v0.1"]
    run_cpv("model", "promote", "staging", "production", cwd=cwd)
    run_cpv("model", "download", "production", *NO_CLONE, "-o", "current", "--force",
            cwd=deploy)
    assert md5_of(deploy / "current" / "model.bin") == released["v0.2"]
    assert run_cpv("model", "stages", "--history", *NO_CLONE, cwd=deploy).stdout == run_cpv(
        "model", "stages", "--history", cwd=cwd).stdout
    run_cpv("model", "download", "production", *NO_CLONE, cwd=deploy)
    assert md5_of(deploy / f"{MODEL}-production" / "model.bin") == released["v0.2"]
    missing = run_cpv("model", "download", "canary", *NO_CLONE, cwd=deploy, expect=None)
    assert "canary is not a stage of any model version" in assert_one_error_line(missing)


def test_best_picks_for_a_script(repo: ModelRepo, released: dict[str, str]) -> None:
    cwd = repo.root
    best = run_cpv("model", "best", "wer", "--min", cwd=cwd)
    assert best.stdout == "v0.2\n"  # the untagged upload (wer 0.1) is no version
    assert "skipped 1 version(s) without a usable wer: v0.3 (no such metric)" in best.stderr
    assert run_cpv("model", "best", "wer", "--max", cwd=cwd).stdout == "v0.1\n"
    picked = json.loads(run_cpv("model", "best", "bleu", "--max", "--json", cwd=cwd).stdout)
    assert (picked["version"], picked["value"]) == ("v0.3", 31.0)
    assert set(picked["skipped"]) == {"v0.1", "v0.2"}
    script = ("set -euo pipefail\n"
              f"{' '.join(CPV)} model promote \"$({' '.join(CPV)} model best wer --min)\" "
              "production -m 'lowest wer'\n")
    shell = subprocess.run(["bash", "-c", script], cwd=cwd, capture_output=True, text=True,
                           timeout=120, check=False)
    assert shell.returncode == 0, shell.stderr
    assert "Promoted v0.2 to production" in shell.stdout
    assert run_cpv("model", "best", "wer", cwd=cwd, expect=2).returncode == 2
    none = run_cpv("model", "best", "bleu2", "--min", cwd=cwd, expect=None)
    assert "No model version has a value of 'bleu2'" in assert_one_error_line(none)
    sorted_rows = run_cpv("model", "list", "--sort", "wer", "--desc", cwd=cwd).stdout
    assert [line.split()[0] for line in sorted_rows.splitlines()[1:]] == ["v0.1", "v0.2", "v0.3"]


def test_retire_and_list_all(repo: ModelRepo, released: dict[str, str]) -> None:
    cwd = repo.root
    out = run_cpv("model", "retire", "v0.1", "-m", "trained on leaked data", cwd=cwd)
    assert "Retired v0.1 as stage/000001" in out.stdout
    assert "already retired" in run_cpv("model", "retire", "v0.1", cwd=cwd).stdout
    visible = json.loads(run_cpv("model", "list", "--json", cwd=cwd).stdout)
    assert [v["version"] for v in visible] == ["v0.2", "v0.3"]
    assert run_cpv("model", "best", "wer", "--max", cwd=cwd).stdout == "v0.2\n"
    refused = run_cpv("model", "promote", "v0.1", "production", cwd=cwd, expect=None)
    assert "v0.1 was retired" in assert_one_error_line(refused)

    everything = json.loads(run_cpv("model", "list", "--all", "--json", cwd=cwd).stdout)
    assert [(v["version"], v["retired"] is not None) for v in everything] == [
        ("v0.1", True), ("v0.2", False), ("v0.3", False), (None, False)]
    assert everything[0]["retired"]["message"] == "trained on leaked data"
    untagged = everything[-1]
    assert untagged["md5"] == released["untagged"] and untagged["metrics"] == {"wer": 0.1}
    table = run_cpv("model", "list", "--all", cwd=cwd).stdout.splitlines()
    assert table[0].split()[:2] == ["version", "commit"] and table[0].split()[-1] == "message"
    assert table[1].startswith("v0.1 (retired)")
    assert table[-1].split()[:2] == ["-", untagged["commit"][:10]]

    # The upload without a version: shown by its commit, then tagged by it.
    short = untagged["commit"][:8]
    shown = json.loads(run_cpv("model", "show", short, "--json", cwd=cwd).stdout)
    assert shown["md5"] == released["untagged"] and shown["version"] is None
    tagged = run_cpv("model", "tag", "v1.0", "--commit", short, "-m", "epoch 9", cwd=cwd)
    assert "Tagged v1.0" in tagged.stdout
    assert "already v1.0" in run_cpv("model", "tag", "--commit", short, cwd=cwd).stdout
    assert run_cpv("model", "best", "wer", "--min", cwd=cwd).stdout == "v1.0\n"


@pytest.mark.parametrize(("args", "code", "said"), [
    (("promote", "v0.1", "Production"), 1, "uses uppercase letters"),
    (("promote", "v0.1", "v2.0"), 1, "looks like a version"),
    (("promote", "v0.1", "--", "-rf"), 1, "looks like an option"),
    (("promote", "v0.1", "-rf"), 2, "No such option"),
    (("promote", "v0.1", "latest"), 1, "is reserved"),
    (("promote", "v0.1", "../../x"), 1, "is not a valid stage name"),
    (("demote", "prod\u200b"), 1, "is not a valid stage name"),
    (("stages", "x" * 40), 1, "is longer than 32 characters"),
    (("promote", "v9.9", "production"), 1, "No model version v9.9"),
    (("demote", "production"), 1, "production is not a stage"),
    (("show", "not-a-stage"), 1, "not-a-stage is not a stage"),
    (("tag", "--commit", "--all"), 1, "is not a commit"),
])
def test_refusals(repo: ModelRepo, args: tuple[str, ...], code: int, said: str) -> None:
    repo.upload({"wer": 0.5}, size=100, seed=1)
    repo.manager.tag_model_checkpoint()
    before = repo.remote_refs()
    result = run_cpv("model", *args, cwd=repo.root, expect=code)
    if code == 1:
        assert said in assert_one_error_line(result)
    else:
        assert said in result.stderr
    assert repo.remote_refs() == before


def test_data_has_the_same_verbs(repo: ModelRepo, tmp_path: Path) -> None:
    data = data_manager(repo)
    data.import_data_init(write_dataset(tmp_path / "ds", {"train/a.txt": b"a\n"}))
    data.tag_data_checkpoint()
    out = run_cpv("data", "promote", "data/v0.1", "production", cwd=repo.root)
    assert "Promoted v0.1 to production as data/stage/000001" in out.stdout
    assert "production" in run_cpv("data", "list", cwd=repo.root).stdout.splitlines()[1]
    assert json.loads(run_cpv("data", "stages", "--json", cwd=repo.root).stdout)[0][
        "tag"] == "data/stage/000001"
    assert run_cpv("model", "stages", "--json", cwd=repo.root).stdout.strip() == "[]"
    assert "No such command 'best'" in run_cpv("data", "best", "x", "--min", cwd=repo.root,
                                               expect=2).stderr


@pytest.mark.parametrize("command", ["promote", "demote", "stages", "retire", "best", "list",
                                     "tag"])
def test_help(command: str, workdir: Path) -> None:
    text = run_cpv("model", command, "--help", cwd=workdir).stdout
    assert text.startswith(f"Usage: cpv model {command}")
    expected = {"promote": "STAGE", "demote": "STAGE", "stages": "--history", "retire": "-m",
                "best": "--min", "list": "--sort", "tag": "--commit"}[command]
    assert expected in text


def test_the_readme_section_runs(repo: ModelRepo, released: dict[str, str]) -> None:
    """The README's stages block, in a repository like the one it describes."""
    from test_readme import block_after

    script = block_after("## Stages, retirement and the best version", "bash")
    shim = repo.root.parent / "bin"  # `cpv` runs this checkout's cpv
    shim.mkdir()
    (shim / "cpv").write_text(f"#!/bin/sh\nexec {' '.join(CPV)} \"$@\"\n")
    (shim / "cpv").chmod(0o755)
    env = {**os.environ, "PATH": f"{shim}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=repo.root, env=env,
                            capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    assert "Promoted v0.2 to production as stage/000001" in result.stdout
    assert md5_of(repo.root.parent / "deploy" / "model.bin") == released["v0.2"]
    assert "Tagged v1.0" in result.stdout
    history = repo.manager.stage_history()
    assert [(e.action, e.stage, e.version) for e in history] == [
        ("promote", "production", "v0.2"), ("promote", "staging", "v0.1"),
        ("demote", "staging", None), ("retire", None, "v0.1")]
