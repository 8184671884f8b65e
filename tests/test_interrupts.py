"""SIGINT and SIGTERM at any moment: cpv stops at a safe point, says truthfully what reached the
git remote, exits 130 / 143, and leaves nothing that the same command run again does not reuse.

Every run is a real ``cpv`` subprocess receiving a real signal: from the test at a spread of
moments, to its whole process group as a terminal's Ctrl-C does, or from itself at a named
point (``CPV_TEST_SIGNAL_AT``, cp_manage/faults.py) to hit a window deterministically. What it
printed is then checked against the bare remote's refs (``git ls-remote``), and the rerun must
succeed with ``cpv doctor`` finding nothing to repair and no temporary file anywhere.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import (
    CPV,
    TIMEOUT,
    ModelRepo,
    git,
    md5_of,
    run_cpv,
    storage_object,
    write_random,
)
from servers import SeaweedS3

from cp_manage import interrupts

MiB = 1024 * 1024
EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143}


# -- running cpv and checking what it said ------------------------------------------------------


def start(args: list[str], cwd: Path, *, env: dict[str, str] | None = None,
          own_group: bool = False) -> subprocess.Popen[str]:
    return subprocess.Popen([*CPV, *args], cwd=cwd, env={**os.environ, **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=own_group)


def wait_until_handling_signals(process: subprocess.Popen[str]) -> None:
    """Until cpv catches SIGTERM (its handlers are installed): before that, Python is still
    starting and nothing can have been changed."""
    deadline = time.monotonic() + TIMEOUT
    mask = 1 << (signal.SIGTERM - 1)
    while time.monotonic() < deadline:
        try:
            status = Path(f"/proc/{process.pid}/status").read_text()
        except FileNotFoundError:
            break
        caught = int(re.search(r"^SigCgt:\s*([0-9a-f]+)", status, re.M).group(1), 16)
        if caught & mask:
            return
        assert process.poll() is None, process.communicate()
        time.sleep(0.002)
    raise AssertionError("cpv never installed its signal handlers")


def cpv_with(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CPV, *args], cwd=cwd, env={**os.environ, **env},
                          capture_output=True, text=True, timeout=TIMEOUT, check=False)


def remote_refs(repo: ModelRepo) -> dict[str, str]:
    """The bare remote's refs (``git ls-remote``): ``{ref: hash}``, tags with their ``^{}``."""
    return {ref: sha for sha, ref in (line.split("\t") for line in
                                      repo.remote_refs().splitlines()) if ref.startswith("refs/")}


def kept_refs(line: str) -> dict[str, str]:
    """What an interruption line says reached the remote: ``{ref: hash prefix or ""}``."""
    said = re.search(r"after the git remote received (.*), which is kept", line)
    if said is None:
        return {}
    refs: dict[str, str] = {}
    for said_part in re.split(r", | and ", said.group(1)):
        part = said_part.removeprefix("tags ").removeprefix("tag ")
        commit = re.fullmatch(r"commit ([0-9a-f]+) on (\S+)", part)
        if commit:
            refs[f"refs/heads/{commit.group(2)}"] = commit.group(1)
        else:
            refs[f"refs/tags/{part}"] = ""
    return refs


def assert_truthful(result: subprocess.CompletedProcess[str], signum: int,
                    before: dict[str, str], after: dict[str, str]) -> str:
    """What cpv said matches the remote. Returns "nothing", "kept" or "done"."""
    changed = {ref for ref in after if after[ref] != before.get(ref)} | (before.keys() - after)
    if result.returncode == 0 or result.returncode == -signum:
        # Done before the signal came (or, once done, the signal's default action ended it).
        assert result.stdout.strip(), (result.returncode, result.stderr)
        assert "Interrupted" not in result.stderr and "Traceback" not in result.stderr
        return "done"
    assert result.returncode == EXIT[signum], (result.returncode, result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith(f"error: Interrupted by {signal.Signals(signum).name}"), line
    assert "Run the same command again to" in line, line
    if "nothing was changed" in line:
        assert after == before, line
        return "nothing"
    named = kept_refs(line)
    assert named, line
    # Exactly what it names changed on the remote (a tag also brings its peeled ^{} line).
    assert {ref.removesuffix("^{}") for ref in changed} == set(named), (line, changed)
    for ref, prefix in named.items():
        assert after[ref].startswith(prefix), (line, ref, after[ref])
    return "kept"


def temp_files(*roots: Path) -> list[Path]:
    return [p for root in roots if root.exists() for p in root.rglob("*")
            if p.name.endswith((".cpv-tmp", ".cpv-tmpdir", ".lock"))]


def assert_nothing_left(repo: ModelRepo) -> None:
    """The clone, its remote and storage agree; no temporary file, lock or change is left."""
    assert temp_files(repo.root, repo.storage, repo.remote) == []
    assert repo.git("status", "--porcelain") == ""
    checked = run_cpv("doctor", "--json", cwd=repo.root)
    assert {f["status"] for f in json.loads(checked.stdout)} == {"passed"}, checked.stdout


# -- at named points: every window, deterministically --------------------------------------------


@pytest.mark.parametrize(("point", "signum", "outcome"), [
    ("hashing", signal.SIGTERM, "nothing"),
    ("storage_upload", signal.SIGTERM, "nothing"),  # a half-written storage file
    ("storage_upload", signal.SIGINT, "nothing"),
    ("after_blobs", signal.SIGTERM, "nothing"),
    ("after_commit", signal.SIGINT, "kept"),  # inside the critical section: the push finishes
    ("after_commit", signal.SIGTERM, "kept"),
    ("after_push", signal.SIGTERM, "kept"),  # the push is done, the command not yet
])
def test_upload_signalled_at_each_stage(repo: ModelRepo, point: str, signum: int,
                                        outcome: str) -> None:
    md5 = repo.write_model(300_000)
    before = remote_refs(repo)
    result = cpv_with(["model", "upload", "--metric", "acc=0.5"], repo.root,
                      CPV_TEST_SIGNAL_AT=point, CPV_TEST_SIGNAL=signal.Signals(signum).name)
    assert assert_truthful(result, signum, before, remote_refs(repo)) == outcome
    assert temp_files(repo.root, repo.storage) == []
    if outcome == "nothing":
        assert repo.git("status", "--porcelain", "--untracked-files=no") == ""
        assert remote_refs(repo) == before

    again = run_cpv("model", "upload", "--metric", "acc=0.5", cwd=repo.root)
    if outcome == "kept":
        assert "unchanged; no new commit" in again.stdout
    assert remote_refs(repo)["refs/heads/main"] == repo.head()
    assert md5 in repo.git("show", "HEAD:model.bin.dvc")
    assert storage_object(repo.storage, md5).is_file()
    assert repo.git("rev-list", "--count", "HEAD") == "2"  # one upload commit, not two
    assert_nothing_left(repo)


@pytest.mark.parametrize(("point", "signum"), [
    ("after_tag_created", signal.SIGINT),  # inside the critical section
    ("after_tag_pushed", signal.SIGTERM),
])
def test_tag_signalled_after_creating_it_reports_the_pushed_tag(
        repo: ModelRepo, point: str, signum: int) -> None:
    repo.write_model()
    run_cpv("model", "upload", cwd=repo.root)
    before = remote_refs(repo)
    result = cpv_with(["model", "tag"], repo.root, CPV_TEST_SIGNAL_AT=point,
                      CPV_TEST_SIGNAL=signal.Signals(signum).name)
    assert assert_truthful(result, signum, before, remote_refs(repo)) == "kept"
    assert "tag v0.1" in result.stderr
    again = run_cpv("model", "tag", cwd=repo.root, expect=None)
    assert "already v0.1" in again.stdout + again.stderr
    assert [ref for ref in remote_refs(repo) if ref.startswith("refs/tags/")] == [
        "refs/tags/v0.1", "refs/tags/v0.1^{}"]
    assert_nothing_left(repo)


@pytest.mark.parametrize("point", ["after_commit", "after_push"])
def test_revert_signalled_once_pushed_keeps_the_reverted_artifact(repo: ModelRepo,
                                                                   point: str) -> None:
    """The workspace matches what the remote now says HEAD is: the revert is not undone."""
    first, _ = repo.upload(seed=1)
    run_cpv("model", "tag", cwd=repo.root)
    repo.upload(seed=2)
    before = remote_refs(repo)
    result = cpv_with(["model", "revert", "v0.1"], repo.root, CPV_TEST_SIGNAL_AT=point)
    assert assert_truthful(result, signal.SIGTERM, before, remote_refs(repo)) == "kept"
    assert first in repo.git("show", f"{remote_refs(repo)['refs/heads/main']}:model.bin.dvc")
    assert md5_of(repo.model_file) == first
    assert "nothing changed" in run_cpv("model", "revert", "v0.1", cwd=repo.root).stdout
    assert_nothing_left(repo)


def test_download_signalled_mid_copy_leaves_no_partial_file(repo: ModelRepo) -> None:
    md5, _ = repo.upload(size=300_000)
    run_cpv("model", "tag", cwd=repo.root)
    for entry in repo.cache.rglob("*"):  # make it come from storage
        if entry.is_file():
            entry.chmod(0o644)
            entry.unlink()
    out = repo.root.parent / "out"
    result = cpv_with(["model", "download", "v0.1", "-o", str(out)], repo.root,
                      CPV_TEST_SIGNAL_AT="storage_download")
    assert result.returncode == 143, result.stderr
    assert "nothing was changed" in result.stderr
    assert list(out.iterdir()) == []  # the temporary file is gone, nothing half-written
    run_cpv("model", "download", "v0.1", "-o", out, cwd=repo.root)
    assert [p.name for p in out.iterdir()] == ["model.bin"]
    assert md5 in repo.git("show", "v0.1:model.bin.dvc")


# -- at a spread of moments, from outside ---------------------------------------------------------


def interrupt_after(args: list[str], repo: ModelRepo, signum: int, delay: float
                    ) -> subprocess.CompletedProcess[str]:
    process = start(args, repo.root)
    wait_until_handling_signals(process)
    time.sleep(delay)
    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=TIMEOUT)
    return subprocess.CompletedProcess(args, process.returncode, stdout, stderr)


def timed(args: list[str], repo: ModelRepo) -> float:
    """Seconds from cpv's handlers being in place to its end, uninterrupted."""
    process = start(args, repo.root)
    wait_until_handling_signals(process)
    began = time.monotonic()
    _, stderr = process.communicate(timeout=TIMEOUT)
    assert process.returncode == 0, stderr
    return time.monotonic() - began


def spread(total: float, count: int) -> Iterator[float]:
    """``count`` moments from the start to a little after the end of a run of ``total`` s."""
    for index in range(count):
        yield total * 1.1 * index / (count - 1)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_upload_interrupted_at_any_moment_says_what_reached_the_remote(
        repo: ModelRepo, signum: int) -> None:
    repo.write_model(1 * MiB, seed=0)
    duration = timed(["model", "upload"], repo)
    outcomes = []
    for index, delay in enumerate(spread(duration, 6)):
        md5 = repo.write_model(1 * MiB, seed=index + 1)
        before = remote_refs(repo)
        result = interrupt_after(["model", "upload"], repo, signum, delay)
        outcomes.append(assert_truthful(result, signum, before, remote_refs(repo)))
        run_cpv("model", "upload", cwd=repo.root)
        assert remote_refs(repo)["refs/heads/main"] == repo.head()
        assert md5 in repo.git("show", "HEAD:model.bin.dvc")
        assert_nothing_left(repo)
    print(f"\n{signal.Signals(signum).name} after {duration:.2f} s runs: {outcomes}")


def test_tag_interrupted_at_any_moment_says_what_reached_the_remote(repo: ModelRepo) -> None:
    repo.write_model(seed=0)
    run_cpv("model", "upload", cwd=repo.root)
    duration = timed(["model", "tag"], repo)
    outcomes = []
    for index, delay in enumerate(spread(duration, 6)):
        repo.write_model(seed=index + 1)
        run_cpv("model", "upload", cwd=repo.root)
        signum = (signal.SIGINT, signal.SIGTERM)[index % 2]
        before = remote_refs(repo)
        result = interrupt_after(["model", "tag"], repo, signum, delay)
        outcome = assert_truthful(result, signum, before, remote_refs(repo))
        outcomes.append(outcome)
        again = run_cpv("model", "tag", cwd=repo.root, expect=None)
        if outcome == "nothing":
            assert again.returncode == 0, again.stderr
        else:
            assert "already v" in again.stdout + again.stderr
        tag = repo.git("tag", "--points-at", "HEAD")
        assert tag and f"refs/tags/{tag}" in remote_refs(repo)
        assert_nothing_left(repo)
    print(f"\ntag after {duration:.2f} s runs: {outcomes}")


def test_ctrl_c_to_the_process_group_during_a_slow_push_lets_the_push_finish(
        repo: ModelRepo) -> None:
    """A terminal's Ctrl-C goes to the whole foreground process group: git, in a session of
    its own, is not part of it, so the push completes and cpv reports that it did."""
    marker = repo.root.parent / "push-started"
    hook = repo.remote / "hooks" / "pre-receive"
    hook.write_text(f"#!/bin/sh\ncat >/dev/null\ntouch '{marker}'\nsleep 1\n")
    hook.chmod(0o755)
    repo.write_model()
    before = remote_refs(repo)
    process = start(["model", "upload"], repo.root, own_group=True)
    deadline = time.monotonic() + TIMEOUT
    while not marker.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.01)
    os.killpg(process.pid, signal.SIGINT)
    stdout, stderr = process.communicate(timeout=TIMEOUT)
    result = subprocess.CompletedProcess([], process.returncode, stdout, stderr)
    assert assert_truthful(result, signal.SIGINT, before, remote_refs(repo)) == "kept"
    assert remote_refs(repo)["refs/heads/main"] == repo.head()
    hook.unlink()
    assert "unchanged" in run_cpv("model", "upload", cwd=repo.root).stdout
    assert_nothing_left(repo)


# -- S3: a multipart upload outlives the interruption only until the rerun ---------------------


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    with SeaweedS3(tmp_path_factory.mktemp("seaweed")) as server:
        yield server


def test_sigterm_mid_multipart_upload_keeps_it_for_the_rerun(s3: SeaweedS3,
                                                             tmp_path: Path) -> None:
    from cp_manage.backends.s3 import SMALL_OBJECT

    bucket = s3.create_bucket("cpv-interrupts")
    env = {**s3.env(), "AWS_ENDPOINT_URL": s3.endpoint_url}
    root = tmp_path / "m"
    init = cpv_with(["init", "--team", "T", "--model", "m", "--path", str(root),
                     "--storage-url", f"s3://{bucket}/T/m"], tmp_path, **env)
    assert init.returncode == 0, init.stderr
    md5 = write_random(root / "model.bin", SMALL_OBJECT + 1)  # just above: two parts
    before = git("ls-remote", "origin", cwd=root)
    client = s3.client()

    result = cpv_with(["model", "upload"], root, CPV_TEST_SIGNAL_AT="multipart_part", **env)
    assert result.returncode == 143, result.stderr
    # The upload stays for the rerun to continue; no object, no commit.
    assert [u["Key"] for u in client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
            ] == [f"T/m/files/md5/{md5[:2]}/{md5[2:]}"]
    assert client.list_objects_v2(Bucket=bucket).get("KeyCount") == 0
    assert git("ls-remote", "origin", cwd=root) == before

    again = cpv_with(["model", "upload"], root, **env)
    assert again.returncode == 0, again.stderr
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]]
    assert keys == [f"T/m/files/md5/{md5[:2]}/{md5[2:]}"]


# -- the library: no handlers of its own ------------------------------------------------------


def test_without_the_cli_handlers_a_critical_section_changes_nothing() -> None:
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    with interrupts.critical():
        interrupts.record_kept("tag v9.9")
        assert interrupts.pending() is None
    with pytest.raises(KeyboardInterrupt) as raised, interrupts.critical():
        signal.raise_signal(signal.SIGINT)  # Python's own handler raises at once
    assert not isinstance(raised.value, interrupts.Interruption)


def test_a_signal_inside_a_critical_section_waits_for_its_end() -> None:
    interrupts.install()
    try:
        steps = []
        with pytest.raises(interrupts.Terminated) as raised:
            with interrupts.critical():
                signal.raise_signal(signal.SIGTERM)
                steps.append("finished")
                interrupts.record_kept("tag v0.3")
            steps.append("after")  # never reached
        assert steps == ["finished"]
        assert raised.value.kept == ("tag v0.3",) and raised.value.exit_code == 143
        assert "after the git remote received tag v0.3, which is kept" in str(raised.value)
        signal.raise_signal(signal.SIGINT)  # once stopping, a second signal cannot cut in
    finally:
        interrupts.uninstall()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_held_signal_is_raised_on_release() -> None:
    """What the CLI does while click parses the arguments."""
    interrupts.install(hold=True)
    try:
        signal.raise_signal(signal.SIGINT)
        assert interrupts.pending() == signal.SIGINT
        with pytest.raises(interrupts.Interrupted) as raised:
            interrupts.release()
        assert isinstance(raised.value, KeyboardInterrupt) and raised.value.exit_code == 130
        assert "nothing was changed" in str(raised.value)
    finally:
        interrupts.uninstall()


class _SignalledWhileCollected:
    """An object whose finalizer receives the signal, as when SIGTERM lands while Python
    collects a finished subprocess or a temporary file in the middle of a command."""

    def __del__(self) -> None:
        signal.raise_signal(signal.SIGTERM)
        for _ in range(3):  # the handler runs here, inside the finalizer
            pass


def test_a_signal_landing_in_a_finalizer_still_stops_the_command(
        capfd: pytest.CaptureFixture[str]) -> None:
    """Python swallows an exception raised in ``__del__``; the interruption is delivered again
    and raised in the command's own code, and nothing says "Exception ignored"."""
    hook = sys.unraisablehook
    interrupts.install()
    steps = []
    try:
        with pytest.raises(interrupts.Terminated) as raised:
            victim = _SignalledWhileCollected()
            del victim
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:  # the command goes on until the signal is back
                steps.append("step")
                time.sleep(0.001)
        assert time.monotonic() < deadline and raised.value.exit_code == 143
    finally:
        interrupts.uninstall()
    assert sys.unraisablehook is hook
    assert "Exception ignored" not in capfd.readouterr().err
