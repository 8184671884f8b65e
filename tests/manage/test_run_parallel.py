"""``run_parallel``: the thread pool every many-file transfer (upload, download) runs on."""

from __future__ import annotations

import threading
import time

import pytest

from cp_manage.manage import handlers
from cp_manage.manage.handlers import run_parallel


def test_results_in_order_and_on_done_in_the_calling_thread() -> None:
    caller = threading.current_thread()
    workers: set[int] = set()
    done: list[int] = []

    def work(item: int) -> int:
        workers.add(threading.get_ident())
        time.sleep(0.001 * (item % 3))
        return item * item

    def on_done(item: int, result: int) -> None:
        assert threading.current_thread() is caller and result == item * item
        done.append(item)

    assert run_parallel(work, list(range(200)), on_done=on_done) == [n * n for n in range(200)]
    assert sorted(done) == list(range(200))
    assert 1 < len(workers) <= handlers.WORKERS and caller.ident not in workers


def test_the_first_failure_stops_the_rest_and_is_raised_once_they_finished(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(handlers, "WORKERS", 2)
    started: list[int] = []
    finished: list[int] = []

    def work(item: int) -> int:
        started.append(item)
        if item == 3:
            raise ValueError("item 3 failed")
        time.sleep(0.01)
        finished.append(item)
        return item

    with pytest.raises(ValueError, match="item 3 failed"):
        run_parallel(work, list(range(100)))
    assert len(started) < 10, "items not started when it failed never start"
    assert sorted(finished) == sorted(item for item in started if item != 3), \
        "those under way finish before the error is raised"
    assert threading.active_count() == 1


def test_a_failing_on_done_stops_the_workers_too() -> None:
    started: list[int] = []

    def work(item: int) -> int:
        started.append(item)
        time.sleep(0.005)
        return item

    def on_done(item: int, _result: int) -> None:
        raise KeyError(item)

    with pytest.raises(KeyError):
        run_parallel(work, list(range(1000)), on_done=on_done)
    assert len(started) < 1000 and threading.active_count() == 1
