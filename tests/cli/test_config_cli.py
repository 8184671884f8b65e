"""``cpv config show`` prints the values in force and where each comes from; ``cpv config
unset`` returns a key to its default."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from helpers import MODEL, TEAM, run_cpv

from cp_manage.config import CPVConfig
from cp_manage.errors import ConfigError


def shown(cwd: Path) -> dict[str, dict[str, Any]]:
    result: dict[str, dict[str, Any]] = json.loads(
        run_cpv("config", "show", "--json", cwd=cwd).stdout)
    return result


def test_show_prints_each_value_in_force_and_its_source(
        isolated_env: dict[str, Path], workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = isolated_env["cpv_home"]
    fresh = shown(workdir)
    assert fresh["cpv_home"] == {"value": str(home), "source": "env", "origin": "CPV_HOME"}
    assert fresh["git_url_template"] == {
        "value": f"{home}/remotes/git/{{team}}/{{model}}.git", "source": "default",
        "origin": None}
    assert fresh["storage_url_template"]["value"] == f"{home}/remotes/storage/{{team}}/{{model}}"
    assert fresh["bucket"] == {"value": None, "source": "default", "origin": None}
    assert fresh["aws_profile"] == {"value": "default", "source": "default", "origin": None}

    # A bucket makes the storage template the S3 one: show says so, and why.
    run_cpv("config", "set", "bucket", "team-bucket", cwd=workdir)
    with_bucket = shown(workdir)
    config_file = str(home / "config.json")
    assert with_bucket["bucket"] == {"value": "team-bucket", "source": "config file",
                                     "origin": config_file}
    assert with_bucket["storage_url_template"] == {
        "value": "s3://{bucket}/{team}/{model}", "source": "default", "origin": "bucket is set"}
    # ... and it is the template cpv really uses.
    assert CPVConfig().storage_url(TEAM, MODEL) == f"s3://team-bucket/{TEAM}/{MODEL}"
    text = run_cpv("config", "show", cwd=workdir).stdout
    assert "embedded default" not in text
    assert ("storage_url_template: s3://{bucket}/{team}/{model}  (default, since bucket is set)"
            in text)
    assert "bucket: team-bucket  (config file)" in text

    # The environment beats the file.
    monkeypatch.setenv("CPV_BUCKET", "env-bucket")
    monkeypatch.setenv("AWS_PROFILE", "ml")
    by_env = shown(workdir)
    assert by_env["bucket"] == {"value": "env-bucket", "source": "env", "origin": "CPV_BUCKET"}
    assert by_env["aws_profile"] == {"value": "ml", "source": "env", "origin": "AWS_PROFILE"}
    assert "bucket: env-bucket  (env CPV_BUCKET)" in run_cpv("config", "show", cwd=workdir).stdout


def test_a_home_given_as_argument_is_shown_as_such(tmp_path: Path) -> None:
    settings = CPVConfig(tmp_path / "elsewhere").effective_settings()
    assert settings["cpv_home"].value == str(tmp_path / "elsewhere")
    assert settings["cpv_home"].source == "argument"
    assert settings["git_url_template"].value == (
        f"{tmp_path / 'elsewhere'}/remotes/git/{{team}}/{{model}}.git")


def test_unset_returns_a_key_to_its_default(isolated_env: dict[str, Path], workdir: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    home = isolated_env["cpv_home"]
    default_url = CPVConfig().git_url(TEAM, MODEL)
    run_cpv("config", "set", "git_url_template", "git@bitbucket.org:AI-Team/{model}.git",
            cwd=workdir)
    run_cpv("config", "set", "region", "eu-west-1", cwd=workdir)
    assert CPVConfig().git_url(TEAM, MODEL) == f"git@bitbucket.org:AI-Team/{MODEL}.git"

    done = run_cpv("config", "unset", "git_url_template", cwd=workdir)
    assert "Unset git_url_template" in done.stdout
    assert f"{home}/remotes/git/{{team}}/{{model}}.git  (default)" in done.stdout
    stored = json.loads((home / "config.json").read_text())
    assert "git_url_template" not in stored and stored["region"] == "eu-west-1"
    assert CPVConfig().git_url(TEAM, MODEL) == default_url
    assert shown(workdir)["git_url_template"]["source"] == "default"

    # Unsetting what is not set changes nothing, not even the file's timestamp.
    before = (home / "config.json").read_bytes()
    again = run_cpv("config", "unset", "git_url_template", cwd=workdir)
    assert "was not set" in again.stdout and "nothing changed" in again.stdout
    assert (home / "config.json").read_bytes() == before

    # The API does the same, and tells whether there was anything to remove.
    config = CPVConfig()
    assert config.unset("region") is True
    assert config.unset("region") is False
    assert config.get_config("region") is None

    # A variable in the environment still wins: unset says so rather than pretend.
    run_cpv("config", "set", "bucket", "file-bucket", cwd=workdir)
    monkeypatch.setenv("CPV_BUCKET", "env-bucket")
    still = run_cpv("config", "unset", "bucket", cwd=workdir)
    assert "in force now: env-bucket  (env CPV_BUCKET)" in still.stdout


def test_unset_of_an_unknown_key_is_a_usage_error(isolated_env: dict[str, Path],
                                                  workdir: Path) -> None:
    for command in ("unset", "set"):
        args = ("config", command, "buckett") + (("x",) if command == "set" else ())
        result = run_cpv(*args, cwd=workdir, expect=2)
        assert "unknown setting 'buckett'" in result.stderr
        assert "known: aws_credential_path, aws_profile, bucket," in result.stderr
        assert "Traceback" not in result.stderr
    with pytest.raises(ConfigError, match="Unknown setting 'last_updated'"):
        CPVConfig().unset("last_updated")
    assert not (isolated_env["cpv_home"] / "config.json").exists()
