"""Hostile input (issue 6): each case a clear error that changes nothing.

Version names git would read as options, revision expressions or other refs; names that climb
out of their folder; metrics that cannot be stored; broken or unsafe configuration; paths and
pointers that lead outside the repository.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from helpers import ModelRepo, assert_one_error_line, md5_of, run_cpv

from cp_manage import (
    ConfigError,
    CPVConfig,
    CPVError,
    InvalidNameError,
    InvalidVersionError,
    ModelsCheckpointsManage,
    PointerError,
)

HOSTILE_VERSIONS = [
    "-x",
    "--upload-pack=touch {marker}",
    "refs/heads/main",
    "v1.0..v2.0",
    "v1.0~1",
    "v1.0^{{}}",
    "v1.0\x1b[31m",
    "v1.0\n",
    "v1.0\t",
    "HEAD",
    "v0.1:model.bin.dvc",
    "@{{-1}}",
]


@pytest.fixture
def tagged(repo: ModelRepo) -> ModelRepo:
    repo.upload({"acc": 0.5})
    repo.manager.tag_model_checkpoint()
    return repo


@pytest.mark.parametrize("template", HOSTILE_VERSIONS)
@pytest.mark.parametrize("command", ["tag", "show", "download", "revert"])
def test_hostile_version_names_are_refused_by_the_cli(tagged: ModelRepo, tmp_path: Path,
                                                      template: str, command: str) -> None:
    marker = tmp_path / "pwned"
    version = template.format(marker=marker)
    before = tagged.snapshot()
    args: list[Any] = ["model", command]
    if command == "download":
        args += ["-o", tmp_path / "out"]
    args += ["--", version] if version.startswith("-") else [version]
    result = run_cpv(*args, cwd=tagged.root, expect=None)
    line = assert_one_error_line(result)
    assert "not a valid model version" in line
    assert tagged.snapshot() == before
    assert not marker.exists()
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("version", ["-x", "--upload-pack=touch /tmp/x", "refs/heads/main",
                                     "v1.0~1", "v1.0^{}", "v1.0..v2.0", "v1.0\x00"])
def test_hostile_version_names_are_refused_by_the_api(tagged: ModelRepo, version: str) -> None:
    before = tagged.snapshot()
    manager = tagged.manager
    for call in (manager.tag_model_checkpoint, manager.get_model_metadata,
                 manager.revert_model_checkpoint, manager.download_model_checkpoint):
        with pytest.raises(InvalidVersionError):
            call(version)
    assert tagged.snapshot() == before


@pytest.mark.parametrize("name", ["..", "../escape", "a/b", "/abs", "a b", "a\nb", "", ".hidden",
                                  "x" * 101, "a..b", "tëam"])
def test_team_and_model_names_cannot_escape(tmp_path: Path, isolated_env: dict[str, Path],
                                            name: str) -> None:
    for kwargs in ({"team_name": name, "model_name": "m"}, {"team_name": "t", "model_name": name}):
        with pytest.raises(InvalidNameError):
            ModelsCheckpointsManage(**kwargs, repo_path=tmp_path / "r").import_model_init()
    assert not (isolated_env["cpv_home"] / "remotes").exists()
    assert not (tmp_path / "r").exists()
    result = run_cpv("init", "--team", name or "''", "--model", "m", "--path", tmp_path / "r2",
                     cwd=tmp_path, expect=None)
    if name:
        assert_one_error_line(result)
    assert not (tmp_path / "r2").exists()


@pytest.mark.parametrize("metrics", [  # NaN and ±inf are stored: tests/test_metrics_values.py
    {"tensor": object()},
    {"raw": list(range(200_000))},
    {1: 0.5},
    ["acc", 0.5],
])
def test_unstorable_metrics_are_refused(repo: ModelRepo, metrics: Any) -> None:
    repo.write_model()
    before = repo.snapshot()
    with pytest.raises(CPVError) as caught:
        repo.manager.upload_model_checkpoint(repo.model_file, metrics=metrics)
    assert caught.value.hint or "metric" in str(caught.value).lower()
    assert repo.snapshot() == before


def test_nan_metric_from_the_cli(repo: ModelRepo) -> None:
    """A diverged run still saves its checkpoint: NaN is recorded (as "nan"), not refused."""
    repo.write_model()
    result = run_cpv("model", "upload", "--metric", "acc=NaN", cwd=repo.root)
    assert result.stderr == ""
    assert repo.git("show", "HEAD:metrics.log").splitlines()[-1] == '{"acc": "nan"}'


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"aws_profile": 5}',
                                     '{"git_url_template": ["x"]}', "\x00\x01"])
def test_corrupt_config_json_is_a_clear_error(isolated_env: dict[str, Path], content: str,
                                              workdir: Path) -> None:
    path = isolated_env["cpv_home"] / "config.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    path.chmod(0o600)
    with pytest.raises(ConfigError) as caught:
        CPVConfig().get_config()
    assert str(path) in str(caught.value)
    line = assert_one_error_line(run_cpv("config", "show", cwd=workdir, expect=None))
    assert "config.json" in line
    assert path.read_text() == content


@pytest.mark.parametrize("mode", [0o620, 0o602, 0o666])
def test_config_json_writable_by_others_is_refused(isolated_env: dict[str, Path], mode: int,
                                                   workdir: Path) -> None:
    CPVConfig().set("storage_url_template", "s3://{bucket}/{team}/{model}")
    path = isolated_env["cpv_home"] / "config.json"
    assert path.stat().st_mode & 0o777 == 0o600
    path.chmod(mode)
    with pytest.raises(ConfigError, match="chmod 600"):
        CPVConfig().get_config()
    assert "chmod 600" in assert_one_error_line(run_cpv("config", "show", cwd=workdir,
                                                        expect=None))


def test_existing_ssh_host_entry_is_kept_not_duplicated(tmp_path: Path) -> None:
    ssh_config = tmp_path / "ssh_config"
    original = ("Host bitbucket.org\n  User mine\n  IdentityFile ~/.ssh/mine\n\n"
                "Host other\n  Port 1\n")
    ssh_config.write_text(original)
    key = tmp_path / "key"
    for _ in range(2):
        result = CPVConfig().setup_bitbucket_ssh(key, ssh_config_path=ssh_config)
        assert result["block_written"] is False
    assert ssh_config.read_text() == original
    assert key.exists() and key.stat().st_mode & 0o777 == 0o600


def test_ssh_block_is_idempotent_and_keeps_other_entries(tmp_path: Path) -> None:
    ssh_config = tmp_path / "ssh_config"
    ssh_config.write_text("Host other\n  Port 1\n")
    key = tmp_path / "key"
    CPVConfig().setup_bitbucket_ssh(key, ssh_config_path=ssh_config)
    once = ssh_config.read_text()
    CPVConfig().setup_bitbucket_ssh(key, ssh_config_path=ssh_config)
    assert ssh_config.read_text() == once
    assert once.startswith("Host other\n  Port 1\n")
    assert once.count("Host bitbucket.org") == 1
    assert "Hostname altssh.bitbucket.org" in once and "Port 443" in once


def test_model_path_outside_the_repository_or_through_a_symlink_is_only_read(
        repo: ModelRepo, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.bin"
    outside.write_bytes(os.urandom(100))
    before = (outside.read_bytes(), outside.stat())
    repo.manager.upload_model_checkpoint(outside)
    assert repo.model_file.read_bytes() == before[0] and not repo.model_file.is_symlink()
    assert repo.model_file.stat().st_ino != before[1].st_ino
    # Through a link: the link's target is read, and neither it nor the link changes.
    repo.model_file.unlink()
    outside.write_bytes(os.urandom(100))
    repo.model_file.symlink_to(outside)
    run_cpv("model", "upload", cwd=repo.root)
    assert repo.model_file.is_symlink() and os.readlink(repo.model_file) == str(outside)
    assert md5_of(outside) == repo.manager.get_model_metadata()["md5"]
    assert outside.stat().st_nlink == 1


@pytest.mark.parametrize("path", ["../../etc/passwd", "/etc/passwd", "sub/../../x"])
def test_pointer_naming_a_path_outside_is_refused(tagged: ModelRepo, tmp_path: Path,
                                                  path: str) -> None:
    pointer = tagged.root / "model.bin.dvc"
    text = pointer.read_text().replace("path: model.bin", f"path: {path}")
    pointer.write_text(text)
    tagged.git("commit", "-qam", "hostile pointer")
    tagged.git("tag", "-a", "v0.9", "-m", "hostile")
    before = tagged.snapshot()
    with pytest.raises(PointerError):
        tagged.manager.download_model_checkpoint("v0.9", output_dir=tmp_path / "out")
    with pytest.raises(PointerError):
        tagged.manager.get_model_metadata(None)
    line = assert_one_error_line(run_cpv("model", "download", "v0.9", "-o", tmp_path / "o2",
                                         cwd=tagged.root, expect=None))
    assert "outside the repository" in line or "points at" in line
    assert tagged.snapshot() == before
    assert not (tmp_path / "out").exists() and not (tmp_path / "o2").exists()


def test_no_subprocess_goes_through_a_shell() -> None:
    root = Path(__file__).resolve().parents[1] / "cp_manage"
    for source in root.rglob("*.py"):
        text = source.read_text()
        assert "shell=True" not in text, source
        assert "os.system(" not in text and "os.popen(" not in text, source


def test_list_json_is_valid_after_hostile_metrics_keys(repo: ModelRepo) -> None:
    repo.upload({"a\nb": 1, "quote\"key": 2, "ünï": 3})
    repo.manager.tag_model_checkpoint()
    listed = json.loads(run_cpv("model", "list", "--json", cwd=repo.root).stdout)
    assert listed[0]["metrics"] == {"a\nb": 1, "quote\"key": 2, "ünï": 3}
