"""Publishing: keeping a clone in step with its git remote, and putting commits and version
tags there so that nothing exists on one laptop only.

Writers in other clones publish at the same time. A commit is replayed on top of whatever
landed first (its content is recomputed from the new HEAD); a version tag taken meanwhile is
proposed again with the next free number. Whether a push lost such a race is decided from the
typed ``PushRejectedError`` the git backend raises, never from git's wording.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from pathlib import Path

from cp_manage.backends.git import Git
from cp_manage.errors import (
    ConcurrentModificationError,
    CPVError,
    GitError,
    PushRejectedError,
    RemoteError,
)
from cp_manage.faults import crash_point
from cp_manage.fsutil import atomic_write_bytes
from cp_manage.interrupts import critical

logger = logging.getLogger(__name__)

PUSH_ATTEMPTS = 30
TAG_ATTEMPTS = 30

Changes = dict[str, bytes]
"""File contents to commit, by path relative to the repository."""

LOST_RACE_REASONS = ("fetch first", "non-fast-forward", "already exists", "stale info",
                     "cannot lock ref")
"""How git says a ref was refused because another writer updated it first (see
``PushRejectedError.rejected``)."""


def is_lost_race(error: CPVError) -> bool:
    """Whether a push failed because another writer moved the branch or took a tag first:
    refs were refused, each for one of ``LOST_RACE_REASONS`` (a hook's refusal is not a race).
    """
    return isinstance(error, PushRejectedError) and bool(error.rejected) and all(
        reason.startswith(LOST_RACE_REASONS) for reason in error.rejected.values())


def backoff(attempt: int) -> None:
    """Sleep a little, more after each lost race, with jitter so writers spread out."""
    time.sleep(random.uniform(0, min(2.0, 0.05 * 2 ** attempt)))


class Publisher:
    """Publishes the clone at ``root`` (through its ``git``) to its remote ``origin``."""

    def __init__(self, git: Git, root: Path) -> None:
        self.git = git
        self.root = root

    def branch(self) -> str:
        """The branch checked out.

        Raises:
            GitError: HEAD is detached.
        """
        branch = self.git.branch()
        if branch is None:
            raise GitError(f"{self.root} has no branch checked out (detached HEAD)",
                           hint="Run 'git switch main' (or your branch), then try again.")
        return branch

    def sync(self) -> None:
        """Fetch the branch and tags; fast-forward when the remote is ahead.

        Raises:
            ConcurrentModificationError: local and remote history diverged.
        """
        branch = self.branch()
        if not self.git.fetch(f"+refs/heads/{branch}:refs/remotes/origin/{branch}", "--tags",
                              missing_ok=True):
            return
        remote = self.git.rev_parse(f"refs/remotes/origin/{branch}")
        head = self.git.head()
        if remote is None or head == remote or (head and self.git.is_ancestor(remote, head)):
            return
        if head is None or self.git.is_ancestor(head, remote):
            self.git.run("merge", "--ff-only", "--quiet", remote)
            return
        raise ConcurrentModificationError(
            f"The local branch {branch} and origin/{branch} have diverged",
            hint="Run 'git pull --rebase' (or push your own commits), then run the command again.")

    def fetch_tags_quietly(self) -> None:
        """Bring in teammates' versions; on failure (offline) carry on with what is local."""
        try:
            self.git.fetch("--tags")
        except RemoteError as e:
            logger.warning("Could not fetch versions from the git remote (%s); showing local "
                           "versions only", e.message)

    def commit_and_push(self, make_changes: Callable[[str | None], Changes], message: str, *,
                        write: bool = True, on_pushed: Callable[[], None] | None = None
                        ) -> str | None:
        """Commit the files ``make_changes(head)`` returns and push, replaying on a race.

        ``make_changes`` computes file contents from the current HEAD, so when another writer
        pushed first the change is recomputed on top of theirs. Returns the new commit, or None
        when nothing differs from HEAD. A failed push takes the local commit back.

        Writing, committing, pushing and ``on_pushed`` (the caller's bookkeeping once the remote
        holds the change) form one critical section: a SIGINT or SIGTERM arriving meanwhile is
        raised only once the commit is on the remote (and says so) or taken back.

        Raises:
            PushRejectedError: the remote refused the commit for another reason than a race.
            RemoteError: the push failed otherwise.
            ConcurrentModificationError: every one of ``PUSH_ATTEMPTS`` attempts lost a race,
                or local and remote history diverged.
        """
        branch = self.branch()
        for attempt in range(PUSH_ATTEMPTS):
            self.sync()
            head = self.git.head()
            changes = make_changes(head)
            if head and all(self.git.show(head, p) == c for p, c in changes.items()):
                # Already committed: perhaps by a run that died before its push. Finish it.
                with critical():
                    self.push_head_if_needed()
                    if on_pushed is not None:
                        on_pushed()
                return None
            pushed = False
            with critical():
                if write:
                    for path, content in changes.items():
                        atomic_write_bytes(self.root / path, content)
                commit = self.git.commit_paths(sorted(changes), message)
                crash_point("after_commit")
                try:
                    self.git.push(f"{commit}:refs/heads/{branch}")
                except RemoteError as e:
                    self.git.undo_commit(commit)
                    if not (is_lost_race(e) and attempt + 1 < PUSH_ATTEMPTS):
                        raise
                else:
                    pushed = True
                    self.git.run("update-ref", f"refs/remotes/origin/{branch}", commit,
                                 check=False)
                    if on_pushed is not None:
                        on_pushed()
            if pushed:
                crash_point("after_push")
                return commit
            logger.info("The remote moved on; replaying on top of it")
            backoff(attempt)
        raise ConcurrentModificationError("Gave up after repeated races with other writers")

    def remote_head(self) -> str | None:
        """The remote branch's commit as last fetched (None before it exists)."""
        return self.git.rev_parse(f"refs/remotes/origin/{self.branch()}")

    def push_head_if_needed(self) -> None:
        """Push HEAD when the remote branch does not contain it yet."""
        head, remote = self.git.head(), self.remote_head()
        if head and (remote is None or not self.git.is_ancestor(head, remote)):
            with critical():
                self.git.push(f"{head}:refs/heads/{self.branch()}")
                self.git.run("update-ref", f"refs/remotes/origin/{self.branch()}", head,
                             check=False)

    def remote_tags(self) -> set[str]:
        """Tag names on the git remote (one ls-remote call)."""
        listing = self.git.out("ls-remote", "--tags", "--refs", "origin")
        return {line.split("\t", 1)[1].removeprefix("refs/tags/")
                for line in listing.splitlines() if "\t" in line}

    def push_tags(self, tags: dict[str, str], commit: str) -> None:
        """Create annotated tags (name → message) on ``commit`` and push them in one atomic
        transaction, with the commit when the remote lacks it. On any failure no tag remains.
        """
        branch = self.branch()
        created: list[str] = []
        with critical():  # a signal waits: the tags are then on the remote, or nowhere
            try:
                for name, message in tags.items():
                    self.git.create_tag(name, message, commit)
                    created.append(name)
                crash_point("after_tag_created")
                refspecs = [f"refs/tags/{name}" for name in tags]
                remote = self.git.rev_parse(f"refs/remotes/origin/{branch}")
                if remote is None or not self.git.is_ancestor(commit, remote):
                    refspecs.insert(0, f"{commit}:refs/heads/{branch}")
                self.git.push(*refspecs)
            except BaseException:
                self.git.delete_tags(*created)
                raise
        crash_point("after_tag_pushed")

    def push_versions(self, head: str, propose: Callable[[], dict[str, str] | None], *,
                      retry: bool) -> dict[str, str] | None:
        """Push the annotated tags ``propose()`` names onto ``head`` in one atomic push.

        ``propose`` runs after each fetch of the remote's tags, so it sees every version taken
        so far, and returns ``{tag: message}`` (or None: nothing to push). When another writer
        takes one of the names first and ``retry`` is set, it runs again after a pause, so an
        automatic version moves on to the next free number.

        Returns:
            What was pushed, or None when ``propose`` returned None.

        Raises:
            CPVError: the push failed (``is_lost_race`` tells whether it lost a race; with
                ``retry`` it did not).
            ConcurrentModificationError: every one of ``TAG_ATTEMPTS`` attempts lost a race.
        """
        for attempt in range(TAG_ATTEMPTS):
            self.fetch_tags_quietly()
            tags = propose()
            if tags is None:
                return None
            try:
                self.push_tags(tags, head)
            except CPVError as e:
                if not (retry and is_lost_race(e)):
                    raise
                if attempt + 1 == TAG_ATTEMPTS:
                    raise ConcurrentModificationError(
                        f"Gave up after {TAG_ATTEMPTS} lost races for a version",
                        hint="Many writers are tagging at once; run the command again.") from e
                logger.info("%s taken meanwhile; trying the next version", ", ".join(tags))
                backoff(attempt)
                continue
            return tags
        raise AssertionError("unreachable")
