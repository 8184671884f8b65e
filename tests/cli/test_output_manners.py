"""The manners of a well-behaved command line: plain tables in pipes, NO_COLOR, one progress bar
in binary units, human sizes, ``-v`` anywhere, helpful version names, careful downloads, ignored
temporary files, a demo that cleans up, and JSON with one name per field.

Every check runs ``cpv`` as a real subprocess; a pseudo-terminal (the ``pty`` module) stands in
for the user's terminal where the behaviour depends on one.
"""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from helpers import CPV, MODEL, TEAM, ModelRepo, md5_of, run_cpv, write_random

from cp_manage import DataCheckpointsManage
from cp_manage.errors import CPVError
from cp_manage.manage.repository import TEMPORARY_PATTERNS

BOX_DRAWING = set("│┃─━┏┓┗┛┡┩└┘┌┐╇╈┼")
MODEL_RECORD = {"author", "commit", "cpv_version", "created_at", "data_version", "kind", "md5",
                "message", "metrics", "model", "path", "size_bytes", "tag", "team", "version"}


def run_on_terminal(*args: str | os.PathLike[str], cwd: Path, stream: str = "stderr",
                    env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Run cpv with ``stream`` ("stdout" or "stderr") on a pseudo-terminal and the other one on a
    pipe; returns (exit code, what the terminal received, what the pipe received)."""
    master, slave = pty.openpty()
    ends: dict[str, Any] = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, stream: slave}
    base = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    process = subprocess.Popen([*CPV, *map(str, args)], cwd=cwd, stdin=subprocess.DEVNULL,
                               env={**base, "TERM": "xterm", "COLUMNS": "100", **(env or {})},
                               **ends)
    os.close(slave)
    received = bytearray()
    while True:
        ready, _, _ = select.select([master], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the child closed its end
                break
            if not chunk:
                break
            received += chunk
        elif process.poll() is not None:
            break
    other = process.stdout if stream == "stderr" else process.stderr
    assert other is not None
    piped = other.read().decode()
    process.wait(timeout=120)
    os.close(master)
    return process.returncode, received.decode(errors="replace"), piped


def two_versions(repo: ModelRepo, *, sizes: tuple[int, int] = (4096, 4096),
                 metrics: dict[str, Any] | None = None) -> None:
    for seed, size in enumerate(sizes, start=1):
        repo.upload(metrics or {"accuracy": 0.5 + seed / 10}, size=size, seed=seed)
        repo.manager.tag()


# -- tables and colour ----------------------------------------------------------------------------


def test_tables_are_plain_aligned_text_when_piped(repo: ModelRepo) -> None:
    many = {f"metric_number_{i}": i / 7 for i in range(8)}  # a row far wider than 80 columns
    two_versions(repo, metrics=many)
    listing = run_cpv("model", "list", cwd=repo.root).stdout
    assert not BOX_DRAWING & set(listing), listing
    lines = listing.splitlines()
    assert len(lines) == 3 and lines[0].split()[:2] == ["version", "created"]
    assert lines[1].startswith("v0.1 ") and "metric_number_7=1" in lines[1]  # never wrapped
    assert lines[0].index("size") == lines[1].index(lines[1].split()[3])  # aligned columns
    assert all(line == line.rstrip() for line in lines)
    diff = run_cpv("model", "diff", "v0.1", "v0.2", cwd=repo.root).stdout
    assert not BOX_DRAWING & set(diff) and len(diff.splitlines()) == 1 + len(many) + 1


def test_tables_are_drawn_on_a_terminal(repo: ModelRepo) -> None:
    two_versions(repo)
    code, drawn, _ = run_on_terminal("model", "list", cwd=repo.root, stream="stdout")
    assert code == 0 and BOX_DRAWING & set(drawn), drawn


def test_no_color_turns_colour_off_on_stderr(repo: ModelRepo) -> None:
    code, coloured, _ = run_on_terminal("model", "show", "v9.9", cwd=repo.root)
    assert code == 1 and "\x1b[31merror:" in coloured  # red, on a terminal, by default
    code, plain, _ = run_on_terminal("model", "show", "v9.9", cwd=repo.root,
                                     env={"NO_COLOR": "1"})
    assert code == 1 and plain.startswith("error: No model version v9.9")
    assert "\x1b[" not in plain


# -- progress and sizes ---------------------------------------------------------------------------


class Recorder:
    """A progress callback that is told each phase: records (phase, done, total)."""

    def __init__(self) -> None:
        self.phases: list[str] = []
        self.calls: list[tuple[str, int, int]] = []

    def phase(self, name: str) -> None:
        self.phases.append(name)

    def __call__(self, done: int, total: int) -> None:
        self.calls.append((self.phases[-1] if self.phases else "", done, total))


def test_an_upload_reports_its_phases_to_one_progress_callback(repo: ModelRepo) -> None:
    size = 3 * 1024 * 1024
    repo.write_model(size, seed=1)
    recorder = Recorder()
    repo.manager.upload(progress=recorder)
    assert recorder.phases == ["hashing", "sending"]
    for phase in recorder.phases:
        done = [d for p, d, _ in recorder.calls if p == phase]
        assert done == sorted(done) and done[-1] == size  # each phase counts up once
    assert {total for _, _, total in recorder.calls} == {size}


def test_a_transfer_shows_one_bar_in_binary_units(repo: ModelRepo) -> None:
    repo.write_model(3 * 1024 * 1024, seed=1)
    code, bar, summary = run_on_terminal("model", "upload", cwd=repo.root)
    assert code == 0 and "(3.0 MiB, 3.0 MiB transferred)" in summary
    assert "uploading model: sending" in bar and "3.0 MiB / 3.0 MiB" in bar
    assert " MB" not in bar and "kB" not in bar and "bytes" not in bar  # no decimal units


def test_diff_shows_sizes_in_human_units(repo: ModelRepo) -> None:
    two_versions(repo, sizes=(3 * 1024 * 1024, 1024 * 1024 + 512 * 1024))
    diff = run_cpv("model", "diff", "v0.1", "v0.2", cwd=repo.root).stdout
    size_row = next(line for line in diff.splitlines() if line.startswith("size"))
    assert size_row.split() == ["size", "3.0", "MiB", "1.5", "MiB", "-1.5", "MiB"]


# -- options and version names ------------------------------------------------------------------


def test_verbose_works_after_the_subcommand(repo: ModelRepo) -> None:
    two_versions(repo)
    listed = run_cpv("model", "list", "-v", cwd=repo.root)
    assert "v0.1" in listed.stdout and "DEBUG" in listed.stderr
    assert "DEBUG" in run_cpv("model", "--verbose", "list", cwd=repo.root).stderr
    failed = run_cpv("model", "show", "v9.9", "--verbose", cwd=repo.root, expect=1)
    assert "Traceback" in failed.stderr and "error: No model version v9.9" in failed.stderr
    assert "DEBUG" not in run_cpv("model", "list", cwd=repo.root).stderr


def test_a_malformed_version_suggests_the_right_name(repo: ModelRepo) -> None:
    result = run_cpv("model", "show", "0.1", cwd=repo.root, expect=1)
    assert "'0.1' is not a valid model version. Did you mean v0.1?" in result.stderr
    data = run_cpv("data", "show", "data/1", cwd=repo.root, expect=1)
    assert "Did you mean data/v1.0?" in data.stderr


def test_a_shortened_list_of_versions_says_how_many_more(repo: ModelRepo) -> None:
    repo.upload({"accuracy": 0.5}, seed=1)
    for minor in range(1, 8):
        repo.git("tag", "-a", "-m", "made by hand", f"v0.{minor}")
    result = run_cpv("model", "show", "v9.9", cwd=repo.root, expect=1)
    assert "v0.3, v0.4, v0.5, v0.6, v0.7 … and 2 more" in result.stderr


# -- downloads ----------------------------------------------------------------------------------


def test_a_download_into_an_existing_file_is_an_error(repo: ModelRepo, workdir: Path) -> None:
    two_versions(repo)
    occupied = workdir / "notes.txt"
    occupied.write_bytes(b"mine")
    result = run_cpv("model", "download", "v0.1", "-o", occupied, cwd=repo.root,
                     expect=2)
    assert "is a file" in result.stderr
    with pytest.raises(CPVError, match="is a file, not a folder"):
        repo.manager.download_model_checkpoint("v0.1", output_dir=occupied)
    assert occupied.read_bytes() == b"mine"


def test_a_download_never_overwrites_a_different_file_without_force(
        repo: ModelRepo, workdir: Path) -> None:
    two_versions(repo)
    wanted = repo.manager.get_model_metadata("v0.1")["md5"]
    out = workdir / "out"
    write_random(out / "model.bin", 100, seed=9)
    mine = md5_of(out / "model.bin")
    refused = run_cpv("model", "download", "v0.1", "-o", out, cwd=repo.root, expect=1)
    assert "exists" in refused.stderr and "--force" in refused.stderr
    with pytest.raises(CPVError, match="force"):
        repo.manager.download_model_checkpoint("v0.1", output_dir=out)
    assert md5_of(out / "model.bin") == mine

    run_cpv("model", "download", "v0.1", "-o", out, "--force", cwd=repo.root)
    assert md5_of(out / "model.bin") == wanted
    run_cpv("model", "download", "v0.1", "-o", out, cwd=repo.root)  # the same bytes: fine
    artifacts = repo.manager.download_model_checkpoint("v0.2", output_dir=out, force=True)
    assert md5_of(artifacts.model_path) == repo.manager.get_model_metadata("v0.2")["md5"]


def test_a_dataset_download_replaces_another_folder_only_with_force(
        repo: ModelRepo, workdir: Path) -> None:
    dataset = workdir / "dataset"
    (dataset / "train").mkdir(parents=True)
    (dataset / "train" / "a.txt").write_bytes(b"a\n")
    DataCheckpointsManage(repo_path=repo.root).import_data_init(dataset)
    out = workdir / "busy"
    out.mkdir()
    (out / "mine.txt").write_bytes(b"keep me")
    refused = run_cpv("data", "download", "-o", out, cwd=repo.root, expect=1)
    assert "not empty" in refused.stderr and "--force" in refused.stderr
    assert (out / "mine.txt").read_bytes() == b"keep me"
    run_cpv("data", "download", "-o", out, "--force", cwd=repo.root)
    assert (out / "train" / "a.txt").read_bytes() == b"a\n" and not (out / "mine.txt").exists()
    run_cpv("data", "download", "-o", out, cwd=repo.root)  # already this dataset: fine


def test_the_default_download_folder_is_outside_the_working_tree(
        repo: ModelRepo, workdir: Path) -> None:
    two_versions(repo)
    sub = repo.root / "notebooks"
    sub.mkdir()
    for cwd in (repo.root, sub):
        result = run_cpv("model", "download", "v0.1", cwd=cwd)
        landed = repo.root.parent / f"{MODEL}-v0.1" / "model.bin"
        assert str(landed) in result.stdout and landed.is_file()
    assert repo.git("status", "--porcelain", "--untracked-files=all") == ""
    run_cpv("model", "download", "v0.2", "--repo", repo.root, cwd=workdir)
    assert (workdir / f"{MODEL}-v0.2" / "model.bin").is_file()  # outside: ./{model}-{version}


# -- the repository's .gitignore ----------------------------------------------------------------


LEFTOVERS = (".model.bin.k3j1x.cpv-tmp", ".data.q9x.cpv-tmpdir/train/a.txt",
             ".data.1f2e3d4c.cpv-old/b.txt", ".model.bin.cpv-discarded", "data/.a.txt.x.cpv-tmp",
             ".model.bin.cpv-partial", "cpv-partial/0a1b.cpv-state")


def test_the_gitignore_ignores_cpv_temporary_files(repo: ModelRepo) -> None:
    lines = (repo.root / ".gitignore").read_text().splitlines()
    assert set(TEMPORARY_PATTERNS) <= set(lines)
    for name in LEFTOVERS:
        (repo.root / name).parent.mkdir(parents=True, exist_ok=True)
        (repo.root / name).write_bytes(b"half-written")
    assert repo.git("status", "--porcelain", "--untracked-files=all") == ""


def test_an_older_repository_gets_the_patterns_with_its_next_upload(repo: ModelRepo) -> None:
    repo.upload({"accuracy": 0.5}, seed=1)
    (repo.root / ".gitignore").write_text("/model.bin\n/data\n")  # as cpv used to write it
    repo.git("commit", "-q", "-m", "an older cpv's .gitignore", ".gitignore")
    repo.git("push", "-q", "origin", "HEAD:main")
    head = repo.head()
    unchanged = run_cpv("model", "upload", "--metric", "accuracy=0.5", cwd=repo.root)
    assert "no new commit" in unchanged.stdout and repo.head() == head  # no commit just for it
    repo.write_model(seed=2)
    run_cpv("model", "upload", "--metric", "accuracy=0.6", cwd=repo.root)
    ignored = repo.git("show", "HEAD:.gitignore").splitlines()
    assert ignored[:2] == ["/model.bin", "/data"] and set(TEMPORARY_PATTERNS) <= set(ignored)


# -- the demo -----------------------------------------------------------------------------------


def test_the_demo_removes_its_folder_unless_asked_to_keep_it(tmp_path: Path) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {**os.environ, "TMPDIR": str(scratch)}

    def demo(*options: str) -> str:
        result = subprocess.run([*CPV, "demo", "--size-mib", "1", *options], cwd=tmp_path,
                                env=env, capture_output=True, text=True, timeout=600,
                                check=False)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    assert "--keep" in demo() and list(scratch.iterdir()) == []
    assert "Explore it" in demo("--keep")
    kept = list(scratch.iterdir())
    assert len(kept) == 1 and (kept[0] / MODEL / "model.bin").is_file()


# -- JSON ---------------------------------------------------------------------------------------


def test_json_records_name_each_field_once(repo: ModelRepo, monkeypatch: pytest.MonkeyPatch
                                           ) -> None:
    two_versions(repo)
    listed = json.loads(run_cpv("model", "list", "--json", cwd=repo.root).stdout)
    shown = json.loads(run_cpv("model", "show", "v0.1", "--json", cwd=repo.root).stdout)
    # list and show add where the version stands: the stages holding it, and its retirement.
    assert {frozenset(r) for r in [*listed, shown]} == {frozenset(
        MODEL_RECORD | {"stages", "retired"})}
    assert shown["team"] == TEAM and shown["model"] == MODEL and shown["size_bytes"] == 4096
    diff = json.loads(run_cpv("model", "diff", "v0.1", "v0.2", "--json", cwd=repo.root).stdout)
    assert set(diff["old"]) == MODEL_RECORD
    # The seed's dict keeps the seed's keys.
    seed = repo.manager.get_model_metadata("v0.1")
    assert {"tag", "model_size_mb", "metrics", "timestamp", "team_name", "model_name"} <= set(seed)
    assert seed["timestamp"] == seed["created_at"] == shown["created_at"]

    # A commit made in another time zone is still reported in UTC with a Z.
    monkeypatch.setenv("TZ", "IST-5:30")
    repo.write_model(seed=7)
    run_cpv("model", "upload", cwd=repo.root)
    committed = repo.git("log", "-1", "--format=%aI")
    assert committed.endswith("+05:30")
    head = json.loads(run_cpv("model", "show", "--json", cwd=repo.root).stdout)
    assert head["created_at"].endswith("Z")
    assert datetime.fromisoformat(head["created_at"]) == datetime.fromisoformat(
        committed).astimezone(timezone.utc)


def test_a_data_record_has_its_counts_and_no_model_fields(repo: ModelRepo, workdir: Path
                                                         ) -> None:
    dataset = workdir / "dataset"
    (dataset / "train").mkdir(parents=True)
    (dataset / "train" / "a.txt").write_bytes(b"a\n")
    data = DataCheckpointsManage(repo_path=repo.root)
    data.import_data_init(dataset)
    data.tag_data_checkpoint()
    record = json.loads(run_cpv("data", "list", "--json", cwd=repo.root).stdout)[0]
    assert record["file_count"] == 1 and record["splits"] == {"train": 1}
    assert "data_version" not in record and "team_name" not in record
    assert "data_size_mb" not in record and "timestamp" not in record
    assert data.get_data_metadata("v0.1")["data_size_mb"] == round(2 / 2**20, 3)
