"""Git.push: a refused push raises PushRejectedError whose fields say, per ref, what git said;
whether a push lost a race is decided from those fields (real git, real hooks, no mocks)."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import bare_remote_with_clones, remote_refs

from cp_manage.backends.git import Git, _rejection
from cp_manage.errors import PushRejectedError, RemoteError
from cp_manage.manage.repository import is_lost_race

MAIN, V1, V2 = "refs/heads/main", "refs/tags/v1", "refs/tags/v2"


def clone_pair(tmp_path: Path) -> tuple[Path, Git, Git]:
    """A bare remote with one commit on main, and two clones of it."""
    remote, clones = bare_remote_with_clones(tmp_path, "alice", "bob")
    return remote, Git(clones[0]), Git(clones[1])


def commit_and_tag(clone: Git, *tags: str) -> str:
    clone.run("commit", "--quiet", "--allow-empty", "-m", f"work of {clone.root.name}")
    head = clone.head()
    assert head is not None
    for tag in tags:
        clone.create_tag(tag.removeprefix("refs/tags/"), f"{tag} by {clone.root.name}\n", head)
    return head


def add_update_hook(remote: Path, script: str) -> None:
    hook = remote / "hooks" / "update"
    hook.write_text(f"#!/bin/sh\n{script}\nexit 0\n")
    hook.chmod(0o755)


def test_two_clones_racing_for_the_same_tag_and_branch(tmp_path: Path) -> None:
    remote, alice, bob = clone_pair(tmp_path)
    won = commit_and_tag(alice, V1)
    alice.push(f"{won}:{MAIN}", V1)
    lost = commit_and_tag(bob, V1)
    before = remote_refs(remote)

    with pytest.raises(PushRejectedError) as caught:
        bob.push(f"{lost}:{MAIN}", V1)

    error = caught.value
    assert error.rejected == {MAIN: "fetch first", V1: "already exists"}
    assert error.held_back == [] and error.accepted == []
    assert isinstance(error, RemoteError)  # callers catching RemoteError still do
    assert is_lost_race(error)
    assert remote_refs(remote) == before


def test_a_taken_tag_holds_back_the_rest_of_the_atomic_push(tmp_path: Path) -> None:
    remote, alice, bob = clone_pair(tmp_path)
    alice.push(f"{commit_and_tag(alice, V1)}:{MAIN}", V1)
    bob.run("fetch", "--quiet", "--no-tags", "origin", f"+{MAIN}:refs/remotes/origin/main")
    bob.run("reset", "--quiet", "--hard", "origin/main")  # the branch itself would fast-forward
    lost = commit_and_tag(bob, V1, V2)
    before = remote_refs(remote)

    with pytest.raises(PushRejectedError) as caught:
        bob.push(f"{lost}:{MAIN}", V1, V2)

    assert caught.value.rejected == {V1: "already exists"}
    assert sorted(caught.value.held_back) == [MAIN, V2]
    assert is_lost_race(caught.value)
    assert remote_refs(remote) == before  # atomic: not the branch, not v2


def test_a_writer_that_gets_there_a_moment_earlier_on_the_server(tmp_path: Path) -> None:
    """Both pushes pass git's own checks; the remote's ref transaction then finds the tag taken
    (another push landed in between: here the update hook lands it, for real)."""
    remote, _alice, bob = clone_pair(tmp_path)
    taken = remote_refs(remote)[MAIN]
    add_update_hook(remote, f'[ "$1" = {V1} ] && git update-ref {V1} {taken}')
    head = commit_and_tag(bob, V1)

    with pytest.raises(PushRejectedError) as caught:
        bob.push(f"{head}:{MAIN}", V1)

    error = caught.value
    assert list(error.rejected) == [V1]
    assert error.rejected[V1].startswith(f"cannot lock ref '{V1}': ")
    assert error.held_back == [MAIN]
    assert is_lost_race(error)
    assert remote_refs(remote)[MAIN] == taken  # main did not move


def test_an_update_hook_refusing_one_ref(tmp_path: Path) -> None:
    remote, _alice, bob = clone_pair(tmp_path)
    add_update_hook(remote, f'[ "$1" = {V2} ] && {{ echo "tags are frozen" >&2; exit 1; }}')
    head = commit_and_tag(bob, V1, V2)
    before = remote_refs(remote)

    with pytest.raises(PushRejectedError) as caught:
        bob.push(f"{head}:{MAIN}", V1, V2)

    error = caught.value
    assert error.rejected == {V2: "hook declined"}
    assert sorted(error.held_back) == [MAIN, V1]
    assert error.accepted == []
    assert error.remote_said == ["tags are frozen"]
    assert not is_lost_race(error)
    assert "tags are frozen" in str(error) and V2 in str(error)
    assert remote_refs(remote) == before  # nothing half-pushed


def test_refs_that_land_are_accepted(tmp_path: Path) -> None:
    """Without --atomic (not how cpv pushes; git's report read the same way) the refs that
    landed beside a refused one are listed."""
    remote, _alice, bob = clone_pair(tmp_path)
    add_update_hook(remote, f'[ "$1" = {V2} ] && exit 1')
    head = commit_and_tag(bob, V1, V2)
    result = bob.run("push", "--porcelain", "origin", f"{head}:{MAIN}", V1, V2, check=False)
    error = _rejection(result.stdout.decode(), result.stderr.decode())
    assert error is not None
    assert error.rejected == {V2: "hook declined"}
    assert sorted(error.accepted) == [MAIN, V1]
    assert remote_refs(remote)[V1]


def test_an_unreachable_remote_is_no_rejection(tmp_path: Path) -> None:
    _remote, _alice, bob = clone_pair(tmp_path)
    bob.run("remote", "set-url", "origin", str(tmp_path / "gone.git"))
    with pytest.raises(RemoteError) as caught:
        bob.push(f"HEAD:{MAIN}")
    assert not isinstance(caught.value, PushRejectedError)
    assert not is_lost_race(caught.value)
