"""The Publisher on its own: plain git clones of one bare remote (no cpv repository, no DVC),
racing for the branch and for version tags, and a remote whose hook refuses a tag."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import bare_remote_with_clones, git, remote_refs

from cp_manage.backends.git import Git
from cp_manage.errors import PushRejectedError
from cp_manage.manage.publishing import Changes, Publisher, is_lost_race

LOG = "log.txt"


def publishers(tmp_path: Path, *names: str) -> tuple[Path, list[Publisher]]:
    remote, clones = bare_remote_with_clones(tmp_path, *names)
    return remote, [Publisher(Git(clone), clone) for clone in clones]


def append_line(publisher: Publisher, line: str) -> Callable[[str | None], Changes]:
    """Changes that add ``line`` to the log as HEAD has it (recomputed on each replay)."""
    def changes(head: str | None) -> Changes:
        before = publisher.git.show(head, LOG) if head else None
        return {LOG: (before or b"") + f"{line}\n".encode()}
    return changes


def next_version(publisher: Publisher, commit: str, proposed: list[str]
                 ) -> Callable[[], dict[str, str]]:
    """Propose the next version not among the tags this clone has fetched."""
    def propose() -> dict[str, str]:
        taken = set(publisher.git.out("tag", "--list").split())
        number = next(n for n in range(1, 1000) if f"v{n}" not in taken)
        proposed.append(f"v{number}")
        return {f"v{number}": f"v{number} of {commit[:10]}\n"}
    return propose


def tag_commit(remote: Path, tag: str) -> str:
    return git("rev-parse", f"refs/tags/{tag}^{{commit}}", cwd=remote)


def add_update_hook(remote: Path, script: str) -> None:
    hook = remote / "hooks" / "update"
    hook.write_text(f"#!/bin/sh\n{script}\nexit 0\n")
    hook.chmod(0o755)


def test_a_commit_that_lost_the_race_is_replayed_on_top(tmp_path: Path) -> None:
    remote, (alice, bob) = publishers(tmp_path, "alice", "bob")
    calls: list[str | None] = []
    bobs_line = append_line(bob, "bob")

    def racing(head: str | None) -> Changes:
        if not calls:  # alice lands between bob's fetch and bob's push
            alice.commit_and_push(append_line(alice, "alice"), "alice's line")
        calls.append(head)
        return bobs_line(head)

    commit = bob.commit_and_push(racing, "bob's line")

    alices = git("rev-parse", f"{commit}~1", cwd=bob.root)
    assert len(calls) == 2 and calls[1] == alices  # recomputed on top of alice's commit
    assert remote_refs(remote)["refs/heads/main"] == commit == bob.git.head()
    assert git("show", f"main:{LOG}", cwd=remote) == "alice\nbob"
    assert git("log", "--format=%s", "main", cwd=remote).splitlines() == [
        "bob's line", "alice's line", "start"]


def test_two_clones_racing_for_a_version_get_distinct_versions(tmp_path: Path) -> None:
    remote, (alice, bob) = publishers(tmp_path, "alice", "bob")
    alices = alice.commit_and_push(append_line(alice, "alice"), "alice's model")
    bobs = bob.commit_and_push(append_line(bob, "bob"), "bob's model")
    assert alices and bobs
    proposed: list[str] = []
    bobs_proposal = next_version(bob, bobs, proposed)

    def racing() -> dict[str, str]:
        tags = bobs_proposal()
        if len(proposed) == 1:  # alice takes the same number first
            alice.push_versions(alices, next_version(alice, alices, []), retry=True)
        return tags

    pushed = bob.push_versions(bobs, racing, retry=True)

    assert proposed == ["v1", "v2"] and pushed is not None and list(pushed) == ["v2"]
    assert tag_commit(remote, "v1") == alices and tag_commit(remote, "v2") == bobs
    assert git("rev-parse", "v1^{commit}", cwd=bob.root) == alices  # bob's own v1 is gone


def test_an_explicit_version_taken_meanwhile_is_not_replayed(tmp_path: Path) -> None:
    remote, (alice, bob) = publishers(tmp_path, "alice", "bob")
    alices = alice.commit_and_push(append_line(alice, "alice"), "alice's model")
    bobs = bob.commit_and_push(append_line(bob, "bob"), "bob's model")
    assert alices and bobs
    calls = []

    def v1() -> dict[str, str]:
        calls.append(1)
        alice.push_versions(alices, lambda: {"v1": "alice's\n"}, retry=False)
        return {"v1": "bob's\n"}

    with pytest.raises(PushRejectedError) as caught:
        bob.push_versions(bobs, v1, retry=False)

    assert calls == [1]
    assert caught.value.rejected == {"refs/tags/v1": "already exists"}
    assert is_lost_race(caught.value)  # the caller turns it into "v1 already exists"
    assert tag_commit(remote, "v1") == alices
    assert bob.git.tags_at(bobs) == []  # no tag left behind locally


def test_a_tag_taken_inside_the_remote_at_the_last_moment_is_replayed(tmp_path: Path) -> None:
    """Both writers pass git's checks; the remote's ref transaction finds v1 taken (the hook
    lands it, for real, just before this push would) and the push is replayed as v2."""
    remote, (bob,) = publishers(tmp_path, "bob")
    start = remote_refs(remote)["refs/heads/main"]
    add_update_hook(remote, f'[ "$1" = refs/tags/v1 ] && git update-ref refs/tags/v1 {start}')
    bobs = bob.commit_and_push(append_line(bob, "bob"), "bob's model")
    assert bobs
    proposed: list[str] = []

    pushed = bob.push_versions(bobs, next_version(bob, bobs, proposed), retry=True)

    assert proposed == ["v1", "v2"] and pushed is not None and list(pushed) == ["v2"]
    assert tag_commit(remote, "v1") == start and tag_commit(remote, "v2") == bobs


def test_parallel_writers_each_get_their_own_versions(tmp_path: Path) -> None:
    remote, writers = publishers(tmp_path, "w0", "w1", "w2")
    rounds = 2
    results: dict[str, list[tuple[str, str]]] = {}
    errors: list[BaseException] = []

    def write(publisher: Publisher) -> None:
        name = publisher.root.name
        try:
            for k in range(rounds):
                commit = publisher.commit_and_push(append_line(publisher, f"{name}.{k}"),
                                                   f"{name} round {k}")
                assert commit is not None
                pushed = publisher.push_versions(commit, next_version(publisher, commit, []),
                                                 retry=True)
                assert pushed is not None
                results.setdefault(name, []).extend((tag, commit) for tag in pushed)
        except BaseException as e:  # reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=write, args=(w,)) for w in writers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors, errors

    landed = [pair for pairs in results.values() for pair in pairs]
    tags = sorted(tag for tag, _ in landed)
    assert len(landed) == len(writers) * rounds and len(set(tags)) == len(tags)
    for tag, commit in landed:
        assert tag_commit(remote, tag) == commit
    log = git("show", f"main:{LOG}", cwd=remote).splitlines()
    assert sorted(log) == sorted(f"{w.root.name}.{k}" for w in writers for k in range(rounds))


def test_a_hook_refusing_a_version_is_reported_and_nothing_is_half_pushed(
        tmp_path: Path) -> None:
    remote, (bob,) = publishers(tmp_path, "bob")
    add_update_hook(remote, '[ "$1" = refs/tags/v1 ] && { echo "v1 is reserved" >&2; exit 1; }')
    head = bob.git.head()
    bob.git.run("commit", "--quiet", "--allow-empty", "-m", "not pushed yet")
    commit = bob.git.head()
    assert commit and commit != head
    before = remote_refs(remote)
    calls = []

    def v1() -> dict[str, str]:
        calls.append(1)
        return {"v1": "bob's\n"}

    with pytest.raises(PushRejectedError) as caught:
        bob.push_versions(commit, v1, retry=True)

    error = caught.value
    assert error.rejected == {"refs/tags/v1": "hook declined"}
    assert error.held_back == ["refs/heads/main"] and error.accepted == []
    assert error.remote_said == ["v1 is reserved"]
    assert not is_lost_race(error) and calls == [1]  # a refusal is not retried
    assert remote_refs(remote) == before  # neither the commit nor the tag
    assert bob.git.tags_at(commit) == []


def test_a_hook_refusing_the_branch_takes_the_local_commit_back(tmp_path: Path) -> None:
    remote, (bob,) = publishers(tmp_path, "bob")
    add_update_hook(remote, '[ "$1" = refs/heads/main ] && { echo "frozen" >&2; exit 1; }')
    head = bob.git.head()
    before = remote_refs(remote)

    with pytest.raises(PushRejectedError) as caught:
        bob.commit_and_push(append_line(bob, "bob"), "bob's line")

    assert caught.value.rejected == {"refs/heads/main": "hook declined"}
    assert caught.value.remote_said == ["frozen"]
    assert bob.git.head() == head and remote_refs(remote) == before
