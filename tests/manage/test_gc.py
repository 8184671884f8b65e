"""gc and du on real git remotes and a real local storage folder: what goes, what stays, the
record in git, and a fresh machine and stock ``dvc pull`` afterwards."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from data_helpers import data_manager, write_dataset
from gc_helpers import age_storage, fresh_clone, history, stock_dvc_pull
from helpers import (
    MODEL,
    TEAM,
    ModelRepo,
    files_under,
    md5_of,
    run_cpv,
    storage_object,
)

from cp_manage import CPVError, DataCheckpointsManage
from cp_manage.manage.dataset import listing_bytes
from cp_manage.manage.gc_plan import GCOptions, parse_duration


def test_dry_run_then_gc_removes_only_what_nobody_needs(repo: ModelRepo, tmp_path: Path) -> None:
    made = history(repo)
    age_storage(repo.storage)
    before = files_under(repo.storage)
    refs = repo.remote_refs()
    cached = files_under(repo.cache)

    dry = run_cpv("gc", "--dry-run", cwd=repo.root).stdout
    for label in ("v0.1 (retired)", "v0.2 (retired)"):
        assert label in dry
    assert "Would remove 3 uploads: 3 objects, 1.5 KiB" in dry
    assert files_under(repo.storage) == before  # nothing changed
    assert repo.remote_refs() == refs
    assert files_under(repo.cache) == cached

    report = json.loads(run_cpv("gc", "--json", cwd=repo.root).stdout)
    gone = {made["v0.1"], made["v0.2"], made["u1"]}
    assert report["record"] == "gc/000001"
    assert report["object_count"] == 3 and report["size_bytes"] == 3 * 512
    assert {u["oid"] for u in report["uploads"]} == gone
    after = files_under(repo.storage)
    assert len(after) == len(before) - 3
    assert not any(storage_object(repo.storage, md5).exists() for md5 in gone)
    for name in ("v0.3", "u4", "v0.4", "v0.5"):
        assert storage_object(repo.storage, made[name]).exists()
    assert not any((repo.cache / "files" / "md5" / m[:2] / m[2:]).exists() for m in gone)

    # The record is an annotated tag on the remote, readable with git alone.
    assert "refs/tags/gc/000001" in repo.remote_refs()
    message = repo.git("tag", "-l", "--format=%(contents)", "gc/000001")
    assert message.startswith("gc: removed 3 uploads (3 objects, 1536 bytes)")
    recorded = json.loads(message.split("cpv-gc: ", 1)[1])
    assert recorded["author"] == "Test Engineer <test@example.com>"
    assert recorded["options"] == {"keep_last": 3, "grace_seconds": 86400.0,
                                   "include_unreferenced": False, "kinds": ["model", "data"]}
    assert sorted(v for u in recorded["uploads"] for v in u["versions"]) == ["v0.1", "v0.2"]

    # A fresh machine (new clone, empty cache) downloads every kept version; stock dvc pulls
    # every kept tag.
    other = fresh_clone(tmp_path, "fresh")
    for name in ("v0.3", "v0.4", "v0.5", "production"):
        artifact = other.manager.download_model_checkpoint(name, output_dir=tmp_path / name)
        assert md5_of(artifact.model_path) == made[name if name != "production" else "v0.3"]
    for tag in ("v0.3", "v0.4", "v0.5"):
        assert md5_of(stock_dvc_pull(repo, tmp_path, tag) / "model.bin") == made[tag]

    # A removed upload says gc removed it, and when.
    failed = run_cpv("model", "download", "v0.1", "-o", tmp_path / "gone", cwd=other.root,
                     expect=1)
    assert "removed by gc" in failed.stderr and "gc/000001" in failed.stderr, failed.stderr
    assert recorded["created_at"][:10] in failed.stderr
    nowhere = tmp_path / "no-clone"  # a machine without a clone reads the record too
    nowhere.mkdir()
    failed = run_cpv("model", "download", "v0.2", "--team", TEAM, "--model", MODEL, "-o",
                     tmp_path / "gone2", cwd=nowhere, expect=1)
    assert "The model v0.2 was removed by gc on" in failed.stderr, failed.stderr

    # Nothing more to remove: no second record.
    again = run_cpv("gc", cwd=repo.root).stdout
    assert "Nothing to remove" in again
    assert "gc/000002" not in repo.remote_refs()


def test_folder_versions_share_objects_and_du_counts_them_exactly(repo: ModelRepo,
                                                                 tmp_path: Path) -> None:
    files = {"a.txt": b"a" * 100, "b.txt": b"b" * 200, "c.txt": b"c" * 300}
    md5 = {name: hashlib.md5(data).hexdigest() for name, data in files.items()}
    data = data_manager(repo)
    data.upload(write_dataset(tmp_path / "d1", {k: files[k] for k in ("a.txt", "b.txt")}))
    assert data.tag_data_checkpoint() == "data/v0.1"
    shutil.rmtree(tmp_path / "d1")
    data.upload(write_dataset(tmp_path / "d2", {k: files[k] for k in ("a.txt", "c.txt")}))
    assert data.tag_data_checkpoint() == "data/v0.2"
    data.retire("data/v0.1", "a bad split")
    model_md5, _ = repo.upload({"wer": 0.2}, size=1000, seed=9)
    assert repo.manager.tag_model_checkpoint() == "v0.1"  # trained on data/v0.2
    first = listing_bytes({"a.txt": md5["a.txt"], "b.txt": md5["b.txt"]})
    second = listing_bytes({"a.txt": md5["a.txt"], "c.txt": md5["c.txt"]})
    first_oid, second_oid = f"{hashlib.md5(first).hexdigest()}.dir", \
        f"{hashlib.md5(second).hexdigest()}.dir"

    usage = json.loads(run_cpv("du", "--keep-last", "1", "--grace", "0", "--json",
                               cwd=repo.root).stdout)
    rows = {row["label"]: row for row in usage["rows"]}
    assert set(rows) == {"data/v0.1 (retired)", "data/v0.2", "v0.1"}
    old = rows["data/v0.1 (retired)"]
    assert (old["objects"], old["total_bytes"], old["unique_bytes"], old["shared_bytes"]) == (
        3, len(first) + 300, len(first) + 200, 100)
    assert (old["keep"], old["gc_objects"], old["gc_bytes"]) == ([], 2, len(first) + 200)
    new = rows["data/v0.2"]
    assert (new["objects"], new["total_bytes"], new["unique_bytes"], new["shared_bytes"]) == (
        3, len(second) + 400, len(second) + 300, 100)
    assert new["gc_bytes"] == 0 and "data/v0.2" in new["keep"]
    assert (rows["v0.1"]["unique_bytes"], rows["v0.1"]["shared_bytes"]) == (1000, 0)
    total = len(first) + len(second) + 600 + 1000
    assert (usage["storage_objects"], usage["storage_bytes"]) == (6, total)
    assert (usage["gc_objects"], usage["gc_bytes"]) == (2, len(first) + 200)
    text = run_cpv("du", "--keep-last", "1", "--grace", "0", cwd=repo.root).stdout
    assert f"would free 2 objects, {len(first) + 200} B" in text

    # Without --grace 0 nothing is old enough: du says so too.
    assert json.loads(run_cpv("du", "--json", cwd=repo.root).stdout)["gc_bytes"] == 0

    before = set(files_under(repo.storage))
    result = run_cpv("data", "gc", "--keep-last", "1", "--grace", "0", cwd=repo.root).stdout
    assert "recorded as gc/000001" in result
    gone = {f"{first_oid[:2]}/{first_oid[2:]}", f"{md5['b.txt'][:2]}/{md5['b.txt'][2:]}"}
    assert before - set(files_under(repo.storage)) == {f"files/md5/{g}" for g in gone}
    assert storage_object(repo.storage, md5["a.txt"]).exists()  # shared with data/v0.2
    assert storage_object(repo.storage, second_oid).exists()

    other = fresh_clone(tmp_path, "fresh")
    path, _ = DataCheckpointsManage(repo_path=other.root).download(
        "data/v0.2", output_dir=tmp_path / "got")
    assert files_under(path) == {"a.txt": md5["a.txt"], "c.txt": md5["c.txt"]}
    for tag in ("data/v0.2", "v0.1"):
        pulled = stock_dvc_pull(repo, tmp_path, tag)
        assert files_under(pulled / "data") == {"a.txt": md5["a.txt"], "c.txt": md5["c.txt"]}
    assert md5_of(pulled / "model.bin") == model_md5
    failed = run_cpv("data", "download", "data/v0.1", "-o", tmp_path / "old", cwd=other.root,
                     expect=1)
    assert "The data data/v0.1 was removed by gc on" in failed.stderr, failed.stderr


def test_cache_only_trims_the_local_cache_and_never_an_only_copy(repo: ModelRepo) -> None:
    made = history(repo)
    cached = lambda: {md5 for md5 in made.values()  # noqa: E731
                      if (repo.cache / "files" / "md5" / md5[:2] / md5[2:]).exists()}
    assert cached() == set(made.values())
    storage = files_under(repo.storage)
    refs = repo.remote_refs()
    storage_object(repo.storage, made["v0.4"]).unlink()  # the cache now holds the only copy
    storage.pop(f"files/md5/{made['v0.4'][:2]}/{made['v0.4'][2:]}")

    dry = run_cpv("gc", "--cache-only", "--keep-last", "1", "--dry-run", cwd=repo.root)
    assert "Would remove 4 objects (2.0 KiB) from the local cache" in dry.stdout
    assert "1 cached object(s) storage does not hold were kept" in dry.stderr
    assert cached() == set(made.values())

    run_cpv("gc", "--cache-only", "--keep-last", "1", cwd=repo.root)
    # HEAD (v0.5), production (v0.3) and the only copy of v0.4 stay; storage and git untouched.
    assert cached() == {made["v0.5"], made["v0.3"], made["v0.4"]}
    assert files_under(repo.storage) == storage
    assert repo.remote_refs() == refs
    repo.manager.download_model_checkpoint("v0.1", output_dir=repo.root.parent / "again")


@pytest.mark.parametrize("args", [
    ["gc", "--keep-last", "-1"], ["gc", "--grace", "5x"], ["gc", "--grace", "24"],
    ["gc", "--grace", "-1h"], ["du", "--grace", "soon"], ["data", "gc", "--keep-last", "x"],
    ["gc", "--cache-only", "--include-unreferenced"]])
def test_invalid_options_are_usage_errors(repo: ModelRepo, args: list[str]) -> None:
    history_before = repo.snapshot()
    result = run_cpv(*args, cwd=repo.root, expect=2)
    assert "Traceback" not in result.stderr
    assert repo.snapshot() == history_before


def test_invalid_options_through_the_api(repo: ModelRepo) -> None:
    with pytest.raises(CPVError, match="keep_last"):
        repo.manager.gc(keep_last=-1)
    with pytest.raises(CPVError, match="not a duration"):
        repo.manager.gc(grace="5x")
    assert parse_duration("1h30m").total_seconds() == 5400
    assert GCOptions.make(grace=0).grace.total_seconds() == 0


def test_the_readme_block_runs_as_written(repo: ModelRepo) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Cleaning up: gc and du"):]
    script = re.search(r"```bash\n(.*?)```", section, re.S)
    assert script is not None
    history(repo)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", script.group(1)], cwd=repo.root,
                            env=env, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    # Everything is minutes old: inside the grace period, so nothing went.
    assert "Nothing would be removed (keep-last 3, grace 24h)" in result.stdout


def test_a_snapshot_waiting_in_the_upload_queue_is_kept(repo: ModelRepo) -> None:
    """A background upload still queued here names objects no commit refers to yet, possibly
    the same bytes as an upload gc would remove: gc keeps them, so the flush still finds them."""
    from cp_manage.backends.pointer import Pointer
    from cp_manage.manage.queue import UploadQueue, new_entry

    made = history(repo)
    age_storage(repo.storage)
    waiting = made["u1"]  # the queued checkpoint has the bytes of an upload nobody needs
    entry = new_entry(Pointer(path="model.bin", md5=waiting, size=512), [waiting], metrics=None,
                      message="queued", tag=True, source=repo.root / "model.bin", source_key=None)
    UploadQueue(repo.manager.repo).add(entry)

    report = json.loads(run_cpv("gc", "--json", cwd=repo.root).stdout)
    removed = {u["oid"] for u in report["uploads"]}
    assert removed == {made["v0.1"], made["v0.2"]}
    assert storage_object(repo.storage, waiting).exists()
    assert (repo.cache / "files" / "md5" / waiting[:2] / waiting[2:]).exists()
