"""Four clones promoting at once, each in its own process: every assignment is recorded once,
all clones see one order, and each stage's current version is the last in that order.

Each clone promotes versions no other clone promotes, alternating between two of them, so
every one of its promotes changes the stage and must become an event; lost races for a
sequence slot are replayed (counted from the library's log).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

CLONES, ROUNDS = 4, 5

PROMOTER = textwrap.dedent("""
    import json, logging, sys
    from cp_manage import ModelsCheckpointsManage

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    index, root, rounds = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    manager = ModelsCheckpointsManage(team_name="T", model_name="m", repo_path=f"{root}/c{index}")
    manager.import_model_init()
    done = []
    for k in range(rounds):
        version = f"v0.{index + 1 + 4 * (k % 2)}"  # v0.1/v0.5 for clone 0, v0.2/v0.6 ...
        stage = "production" if k < rounds - 1 or index % 2 else "staging"
        result = manager.promote(version, stage, f"clone {index} round {k}")
        done.append([result.event.tag, result.created, version, stage])
    print(json.dumps(done))
""")

SEED = textwrap.dedent("""
    import os, sys
    from cp_manage import ModelsCheckpointsManage

    manager = ModelsCheckpointsManage(team_name="T", model_name="m", repo_path=sys.argv[1])
    manager.import_model_init()
    for n in range(8):
        (manager.repo_path / "model.bin").write_bytes(os.urandom(256))
        manager.upload_model_checkpoint(metrics={"n": n})
        manager.tag_model_checkpoint()
""")


@pytest.fixture()
def env(tmp_path: Path) -> dict[str, str]:
    gitconfig = tmp_path / "gitconfig"
    gitconfig.write_text("[user]\n\tname = Promoter\n\temail = p@test.invalid\n")
    return {**os.environ, "HOME": str(tmp_path / "home"), "CPV_HOME": str(tmp_path / "cpv"),
            "GIT_CONFIG_GLOBAL": str(gitconfig), "GIT_CONFIG_NOSYSTEM": "1",
            "DVC_NO_ANALYTICS": "1"}


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                          check=True).stdout


def test_four_clones_promoting_at_once(tmp_path: Path, env: dict[str, str],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    seed = subprocess.run([sys.executable, "-c", SEED, str(tmp_path / "seed")], env=env,
                          capture_output=True, text=True, check=False, timeout=300)
    assert seed.returncode == 0, seed.stderr
    script = tmp_path / "promoter.py"
    script.write_text(PROMOTER)

    started = time.monotonic()
    procs = [subprocess.Popen([sys.executable, str(script), str(i), str(tmp_path), str(ROUNDS)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(CLONES)]
    results = [p.communicate(timeout=600) for p in procs]
    elapsed = time.monotonic() - started
    for proc, (_out, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, err[-2000:]
    done = [tuple(row) for out, _ in results for row in json.loads(out)]
    assert all(created for _tag, created, _v, _s in done)  # each changed its stage
    retries = sum(err.count("taken meanwhile") for _, err in results)

    # Every assignment is one tag on the remote, in one gapless sequence.
    bare = Path(env["CPV_HOME"]) / "remotes/git/T/m.git"
    remote = git("for-each-ref", "--format=%(refname:strip=2)", "refs/tags/stage/",
                 cwd=bare).split()
    total = CLONES * ROUNDS
    assert remote == [f"stage/{n:06d}" for n in range(1, total + 1)]
    assert sorted(tag for tag, *_ in done) == remote

    # Every clone (and a reader without one) sees the same order; each event replaced what
    # the one before it on its stage had put there, so each writer saw all earlier events.
    from cp_manage import ModelsCheckpointsManage

    for key in ("HOME", "CPV_HOME", "GIT_CONFIG_GLOBAL"):
        monkeypatch.setenv(key, env[key])
    histories = [ModelsCheckpointsManage(repo_path=tmp_path / f"c{i}").stage_history()
                 for i in range(CLONES)]
    histories.append(ModelsCheckpointsManage(team_name="T", model_name="m",
                                             repo_path=tmp_path / "none").stage_history())
    rows = [[(e.seq, e.tag, e.stage, e.version, e.replaced, e.message) for e in history]
            for history in histories]
    assert all(row == rows[0] for row in rows)
    history = histories[0]
    assert {(e.tag, True, e.version, e.stage) for e in history} == set(done)
    held: dict[str, str | None] = {}
    for event in history:
        assert event.replaced == held.get(str(event.stage)), event
        held[str(event.stage)] = event.version
    for i in range(CLONES):
        manager = ModelsCheckpointsManage(repo_path=tmp_path / f"c{i}")
        assert manager.stages() == held
    # Each clone's own promotes appear in the order it made them.
    for i in range(CLONES):
        mine = [e.message for e in history if e.message.startswith(f"clone {i} ")]
        assert mine == [f"clone {i} round {k}" for k in range(ROUNDS)]
    print(f"\nstage concurrency: {CLONES} clones x {ROUNDS} promotes = {total} events, "
          f"{retries} lost races replayed, {elapsed:.1f} s")
