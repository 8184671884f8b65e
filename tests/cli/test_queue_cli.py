"""``cpv model pending`` and ``cpv model flush`` as a user sees them (the crash tests in
tests/test_queue_crash.py run them after a SIGKILL)."""

from __future__ import annotations

import json

import pytest
from helpers import ModelRepo, assert_one_error_line, run_cpv

from cp_manage.manage.queue import QueueError


def test_a_failed_upload_waits_is_listed_and_can_be_dropped(repo: ModelRepo) -> None:
    assert "Nothing waits" in run_cpv("model", "pending", cwd=repo.root).stdout
    assert json.loads(run_cpv("model", "pending", "--json", cwd=repo.root).stdout) == []
    gone = repo.storage.with_name("gone")
    repo.storage.rename(gone)
    repo.write_model(seed=1)
    with pytest.raises(QueueError), repo.manager.background() as uploads:
        uploads.submit(metrics={"loss": 0.5}, tag="v3.0")

    line = assert_one_error_line(run_cpv("model", "flush", cwd=repo.root, expect=None))
    assert "Queued upload #1" in line and "does not exist" in line
    listed = json.loads(run_cpv("model", "pending", "--json", cwd=repo.root).stdout)
    assert [(e["seq"], e["tag"], e["metrics"]) for e in listed] == [(1, "v3.0", {"loss": 0.5})]
    assert "v3.0" in run_cpv("model", "pending", cwd=repo.root).stdout

    missing = assert_one_error_line(run_cpv("model", "pending", "--drop", "7", cwd=repo.root,
                                            expect=None))
    assert "No queued upload 7" in missing
    dropped = run_cpv("model", "pending", "--drop", listed[0]["id"][:8], cwd=repo.root).stdout
    assert "Dropped upload #1" in dropped
    gone.rename(repo.storage)
    assert "Nothing waits" in run_cpv("model", "flush", cwd=repo.root).stdout
    assert repo.manager.read_checkpoint_tag() == []
