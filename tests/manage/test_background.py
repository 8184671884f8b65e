"""Background uploads through the API (``manager.background()``), on real git and DVC remotes:
order, the caller's freedom to overwrite at once, version requests, failures that surface and
are flushed later, backpressure. A slow worker is a real one held at a pause point
(``CPV_TEST_PAUSE_AT``, cp_manage/faults.py) for as long as a file exists."""

from __future__ import annotations

import hashlib
import os
import re
import threading
import time
from pathlib import Path

import pytest
from artifact_helpers import file_bytes, init_folder_repo
from filelock import FileLock, Timeout
from helpers import ModelRepo, overwrite_in_place, storage_object

from cp_manage import InvalidVersionError
from cp_manage.manage.queue import QueueError


@pytest.fixture
def paused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A file that holds the background worker before each entry while it exists."""
    hold = tmp_path / "hold-worker"
    hold.touch()
    monkeypatch.setenv("CPV_TEST_PAUSE_AT", "queue_entry")
    monkeypatch.setenv("CPV_TEST_PAUSE_FILE", str(hold))
    return hold


def epoch_bytes(epoch: int, size: int = 3000) -> bytes:
    return bytes([epoch]) * size + os.urandom(16)


def test_five_epochs_overwritten_after_each_submit_become_five_versions(repo: ModelRepo
                                                                       ) -> None:
    manager = repo.manager
    written: list[bytes] = []
    repo.model_file.write_bytes(b"")
    with manager.background() as uploads:
        futures = []
        for epoch in range(1, 6):
            data = epoch_bytes(epoch)
            overwrite_in_place(repo.model_file, data)  # torch.save to the same path
            written.append(data)
            futures.append(uploads.submit(repo.model_file, metrics={"epoch": epoch,
                                                                    "loss": 1 / epoch}))
            # The next epoch's training writes the file again at once.
            overwrite_in_place(repo.model_file, b"half-written next epoch")
    assert [f.result() for f in futures] == ["v0.1", "v0.2", "v0.3", "v0.4", "v0.5"]
    assert manager.read_checkpoint_tag() == ["v0.1", "v0.2", "v0.3", "v0.4", "v0.5"]
    for epoch, data in enumerate(written, start=1):
        md5 = hashlib.md5(data).hexdigest()
        meta = manager.get_model_metadata(f"v0.{epoch}")
        assert (meta["md5"], meta["metrics"]) == (md5, {"epoch": epoch, "loss": 1 / epoch})
        assert storage_object(repo.storage, md5).read_bytes() == data
    # The workspace file is the training script's: never replaced by a queued upload.
    assert repo.model_file.read_bytes() == b"half-written next epoch"
    assert manager.pending_uploads() == []


def test_folder_checkpoints_from_elsewhere(tmp_path: Path, isolated_env: dict[str, Path]
                                           ) -> None:
    repo = init_folder_repo(tmp_path / "bert-large", isolated_env["cpv_home"])
    manager = repo.manager
    source = tmp_path / "run" / "checkpoint-latest"
    expected = []
    with manager.background() as uploads:
        for epoch in range(1, 4):
            source.mkdir(parents=True, exist_ok=True)
            (source / "model.safetensors").write_bytes(epoch_bytes(epoch))
            (source / "config.json").write_text(f'{{"epoch": {epoch}}}')
            expected.append(file_bytes(source))
            uploads.submit(source, metrics={"epoch": epoch}, message=f"epoch {epoch}")
            for path in source.iterdir():
                path.unlink()  # deleted right away
    for epoch, files in enumerate(expected, start=1):
        out = manager.download_model_checkpoint(f"v0.{epoch}", output_dir=tmp_path / f"o{epoch}")
        assert file_bytes(out.model_path) == files
        assert manager.get_model_metadata(f"v0.{epoch}")["message"] == f"epoch {epoch}"
    assert not (repo.root / "checkpoint").exists(), "the workspace is left alone"


def test_each_kind_of_version_request(repo: ModelRepo) -> None:
    manager = repo.manager
    with manager.background() as uploads:
        requests: list[bool | str] = [True, "major", "v2.5", False, True]
        futures = []
        for n, tag in enumerate(requests):
            repo.write_model(seed=n)
            futures.append(uploads.submit(metrics={"n": n}, tag=tag))
        with pytest.raises(InvalidVersionError):
            uploads.submit(tag="2.x")
    results = [f.result() for f in futures]
    assert results[:3] == ["v0.1", "v1.0", "v2.5"] and results[4] == "v2.6"
    assert re.fullmatch(r"[0-9a-f]{40}", results[3])
    assert repo.git("tag", "--points-at", results[3]) == ""
    assert repo.git("log", "-1", "--format=%H", "v2.6~1") == results[3]
    assert manager.read_checkpoint_tag() == ["v0.1", "v1.0", "v2.5", "v2.6"]


def test_storage_failure_surfaces_and_flush_completes_after_repair(
        repo: ModelRepo, paused: Path) -> None:
    manager = repo.manager
    uploads = manager.background(max_pending_bytes=10**9)
    sources = []
    for epoch in (1, 2, 3):
        sources.append(epoch_bytes(epoch))
        repo.model_file.write_bytes(sources[-1])
        if epoch == 1:
            first = uploads.submit(metrics={"epoch": epoch})
            paused.unlink()
            assert first.result(timeout=120) == "v0.1"
            paused.touch()  # hold the worker: both next uploads are queued before it runs
            moved = repo.storage.with_name("unmounted")
            repo.storage.rename(moved)  # the share is gone
            futures = []
        else:
            futures.append(uploads.submit(metrics={"epoch": epoch}))
    paused.unlink()
    with pytest.raises(QueueError, match="does not exist") as failed:
        futures[0].result(timeout=120)
    assert "storage folder" in str(failed.value)
    with pytest.raises(QueueError, match="earlier upload failed"):
        futures[1].result(timeout=120)
    with pytest.raises(QueueError, match="does not exist"):
        uploads.submit(metrics={"epoch": 4})
    with pytest.raises(QueueError, match="does not exist"):
        uploads.close()
    assert [e.metrics for e in manager.pending_uploads()] == [{"epoch": 2}, {"epoch": 3}]
    assert manager.read_checkpoint_tag() == ["v0.1"]

    moved.rename(repo.storage)  # repaired
    done = manager.flush_uploads()
    assert [c.result for c in done] == ["v0.2", "v0.3"]
    for version, data in zip(["v0.2", "v0.3"], sources[1:], strict=True):
        assert manager.get_model_metadata(version)["md5"] == hashlib.md5(data).hexdigest()
    assert manager.pending_uploads() == []


def test_leaving_the_with_block_raises_a_failure(repo: ModelRepo) -> None:
    repo.storage.rename(repo.storage.with_name("gone"))
    repo.write_model()
    with pytest.raises(QueueError, match="does not exist"), repo.manager.background() as uploads:
        uploads.submit()
    assert len(repo.manager.pending_uploads()) == 1


def test_submit_blocks_while_the_snapshots_waiting_exceed_the_limit(
        repo: ModelRepo, paused: Path) -> None:
    manager = repo.manager
    events: list[str] = []
    with manager.background() as uploads:  # default: room for two checkpoints of this size
        futures = []
        for n in (1, 2):
            repo.write_model(4096, seed=n)
            futures.append(uploads.submit(metrics={"n": n}))
            futures[-1].add_done_callback(lambda _f, n=n: events.append(f"done {n}"))
            events.append(f"submitted {n}")

        def third() -> None:
            repo.write_model(4096, seed=3)
            futures.append(uploads.submit(metrics={"n": 3}))
            events.append("submitted 3")

        blocked = threading.Thread(target=third)
        blocked.start()
        time.sleep(1.0)  # the worker is held: a submit that does not wait returns meanwhile
        paused.unlink()
        blocked.join(timeout=120)
    # The third submit returned only after the worker had finished the first upload.
    assert events.index("done 1") < events.index("submitted 3")
    assert events[:2] == ["submitted 1", "submitted 2"]
    assert [f.result() for f in futures] == ["v0.1", "v0.2", "v0.3"]


def test_an_explicit_limit_holds_one_upload_at_a_time(repo: ModelRepo, paused: Path) -> None:
    events: list[str] = []
    with repo.manager.background(max_pending_bytes=5000) as uploads:
        repo.write_model(4096, seed=1)
        first = uploads.submit()
        first.add_done_callback(lambda _f: events.append("done 1"))

        def second() -> None:
            repo.write_model(4096, seed=2)
            uploads.submit()
            events.append("submitted 2")

        blocked = threading.Thread(target=second)
        blocked.start()
        time.sleep(1.0)
        paused.unlink()
        blocked.join(timeout=120)
    assert events == ["done 1", "submitted 2"]


def test_ctrl_c_in_the_block_finishes_the_upload_under_way_and_keeps_the_rest(
        repo: ModelRepo, paused: Path) -> None:
    manager = repo.manager
    with pytest.raises(KeyboardInterrupt), manager.background(max_pending_bytes=10**9) as up:
        for n in (1, 2):
            repo.write_model(seed=n)
            up.submit(metrics={"n": n})
        lock = FileLock(str(repo.root / ".git" / "cpv" / "queue" / "flush.lock"))
        while True:  # until the worker is inside upload 1 (it holds the flush lock)
            try:
                lock.acquire(timeout=0)
            except Timeout:
                break
            lock.release()
            time.sleep(0.05)
        threading.Timer(0.5, paused.unlink).start()
        raise KeyboardInterrupt
    assert manager.read_checkpoint_tag() == ["v0.1"]
    assert [e.metrics for e in manager.pending_uploads()] == [{"n": 2}]


def test_uploads_another_flusher_completed_resolve_their_futures(repo: ModelRepo) -> None:
    from cp_manage.manage.queue import UploadQueue, complete_entry

    other = type(repo.manager)(repo_path=repo.root)  # e.g. 'cpv model flush' elsewhere
    queue = UploadQueue(other.repo)
    lock = FileLock(str(queue.folder / "flush.lock"))
    queue.folder.mkdir(parents=True, exist_ok=True)
    lock.acquire()  # the other flusher holds the queue: this worker waits
    try:
        uploads = repo.manager.background(max_pending_bytes=10**9)
        futures = []
        for n in (1, 2):
            repo.write_model(seed=n)
            futures.append(uploads.submit(metrics={"n": n}, tag=n == 1))
        for entry in queue.entries():
            complete_entry(other, entry)
            queue.remove(entry)
    finally:
        lock.release()
    uploads.close()
    assert futures[0].result() == "v0.1"
    assert futures[1].result() == repo.head()
    assert repo.manager.read_checkpoint_tag() == ["v0.1"]
