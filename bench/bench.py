"""cpv's benchmark: cpv against the floor (md5 + boto3) and the plain DVC + git workflow.

Everything runs on this machine in one run against one SeaweedFS S3 server on 127.0.0.1, so the
ratios compare like with like (absolute seconds on shared machines are not comparable). Each
floor run (md5, boto3 upload, boto3 download) alternates with the cpv run it is compared to,
and every timed transfer starts once the disk and the S3 server are quiet.

    .venv/bin/python bench/bench.py                 # 1 GiB model, 3 runs of each step
    .venv/bin/python bench/bench.py --size-mib 256 --runs 3 --skip-data
    .venv/bin/python bench/bench.py --only data     # the 10,000-file dataset against plain DVC

Sections (``--only`` picks some, repeatable): ``model`` (one file of --size-mib against md5 +
boto3 and plain DVC), ``list`` (listing many versions, ``cpv --help``), ``data`` (many small
files: first upload against ``dvc add`` + ``dvc push -j 16``, a fresh download against a fresh
``git clone`` + ``dvc pull -j 16``, a re-upload after 1 % changed), ``folder`` (a checkpoint
folder of 4 shards and 5 JSON files against md5 + a parallel boto3 transfer; only where cpv has
folder artifacts, ``cpv init --artifact``), ``resume`` (an upload and a download of
--size-mib killed half-way and run again, each against an uninterrupted one: time and bytes,
issue 13), ``report`` (``cpv model report`` of 300 versions, tagged straight into git with
cpv's metadata) and ``handoff`` (``submit`` of the --size-mib checkpoint to background uploads
against a synchronous upload + tag of it, issue 15).

Prints the median of each step, peak memory of cpv's transfers, the ratios and whether each
target of issues 5, 12, 13 and 15 holds; exits 1 when one does not.
"""

from __future__ import annotations

import argparse
import atexit
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from servers import SeaweedS3  # noqa: E402

BIN = Path(sys.executable).parent
CPV = [sys.executable, "-m", "cp_manage.cli.app"]
BUCKET = "bench"
SECTIONS = ("model", "list", "data", "folder", "resume", "report", "handoff")
PULL_JOBS = "16"
"""``dvc push -j`` / ``dvc pull -j`` of the plain DVC workflow the dataset is compared to."""
FOLDER_SHARDS = 4
FOLDER_JSON = ("config.json", "generation_config.json", "model.safetensors.index.json",
               "special_tokens_map.json", "tokenizer_config.json")

Check = tuple[str, float, float]
"""(label, value, limit): the label says ``<=`` or ``<``."""


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def median_of(runs: int, fn: Callable[[int], float]) -> float:
    return statistics.median(fn(i) for i in range(runs))


def run(args: list[str], *, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, check=False,
                            timeout=3600)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n"
                         f"{result.stderr}")
    return result


def peak_rss_mib(args: list[str], *, cwd: Path, env: dict[str, str]) -> tuple[float, float]:
    """(seconds, peak resident MiB) of a command, from GNU time."""
    start = time.perf_counter()
    result = run(["/usr/bin/time", "-f", "%M", *args], cwd=cwd, env=env)
    elapsed = time.perf_counter() - start
    return elapsed, int(result.stderr.strip().splitlines()[-1]) / 1024


def write_random(path: Path, size: int) -> None:
    with open(path, "wb") as handle:
        remaining = size
        while remaining:
            chunk = os.urandom(min(remaining, 16 * 1024 * 1024))
            handle.write(chunk)
            remaining -= len(chunk)


def touch_head(path: Path, run_index: int) -> None:
    """Make the file's content new (so nothing is deduplicated) without rewriting it."""
    with open(path, "r+b") as handle:
        handle.write(hashlib.sha256(f"{time.time()}-{run_index}".encode()).digest())


def settle(s3: SeaweedS3) -> None:
    """Let the machine go quiet before a timed step: dirty pages reach the disk and the S3
    server finishes digesting the last upload (it keeps both cores busy for seconds after a
    large one). Every transfer step, floor and cpv alike, starts from the same quiet state."""
    os.sync()
    assert s3.process is not None
    stat, clock = Path(f"/proc/{s3.process.pid}/stat"), os.sysconf("SC_CLK_TCK")

    def cpu_seconds() -> float:
        fields = stat.read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / clock

    deadline = time.monotonic() + 60
    before = cpu_seconds()
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = cpu_seconds()
        if now - before < 0.05:  # under 10 % of a core for half a second
            return
        before = now


def md5_file(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        while chunk := handle.read(8 * 1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class Bench:
    """What every section shares: the arguments, the folder, the S3 server and its environment,
    a boto3 client for the floor, and the results (printed in the order they were added)."""

    args: argparse.Namespace
    work: Path
    s3: SeaweedS3
    env: dict[str, str]
    client: Any
    results: dict[str, float] = field(default_factory=dict)
    ratios: list[tuple[str, float]] = field(default_factory=list)

    def quiet_timed(self, fn: Callable[[], object]) -> float:
        settle(self.s3)
        return timed(fn)

    def run(self, args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
        return run(args, cwd=cwd, env=self.env)

    def ratio(self, label: str, value: float) -> float:
        self.ratios.append((label, value))
        return value


def plain_dvc_repo(bench: Bench, name: str) -> tuple[Path, Path]:
    """A plain git + DVC repository (and its bare remote) whose DVC remote is the S3 server."""
    bare, plain = bench.work / f"{name}.git", bench.work / name
    bench.run(["git", "init", "-q", "--bare", str(bare)], bench.work)
    plain.mkdir()
    dvc = str(BIN / "dvc")
    for command in (["git", "init", "-q"], [dvc, "init", "-q"],
                    [dvc, "remote", "add", "-d", "s3", f"s3://{BUCKET}/{name}"],
                    [dvc, "remote", "modify", "s3", "endpointurl", bench.s3.endpoint_url],
                    ["git", "remote", "add", "origin", str(bare)],
                    ["git", "add", "-A"], ["git", "commit", "-qm", "init"],
                    ["git", "push", "-q", "origin", "main"]):
        bench.run(command, plain)
    return plain, bare


def cpv_remote(bench: Bench, model: str) -> str:
    """The git remote ``cpv init`` made for (bench, model)."""
    return str(Path(bench.env["CPV_HOME"]) / "remotes" / "git" / "bench" / f"{model}.git")


def bench_model(bench: Bench) -> list[Check]:
    """One checkpoint file of --size-mib: cpv against the floor and the plain DVC workflow."""
    args, work, env, client, results = bench.args, bench.work, bench.env, bench.client, \
        bench.results
    size = args.size_mib * 1024 * 1024
    source = work / "model.bin"
    write_random(source, size)

    # -- the floor, measured in turn with cpv's own runs below (same conditions) -------------
    floor: dict[str, list[float]] = {"md5": [], "boto3_upload": [], "boto3_download": []}
    results.update(dict.fromkeys(floor, 0.0))  # printed first
    quiet_timed = bench.quiet_timed

    def floor_upload(i: int) -> None:
        floor["md5"].append(quiet_timed(lambda: md5_file(source)))
        floor["boto3_upload"].append(quiet_timed(
            lambda: client.upload_file(str(source), BUCKET, f"floor/model-{i}.bin")))

    downloaded = work / "floor-download.bin"

    def floor_download(i: int) -> None:
        downloaded.unlink(missing_ok=True)
        floor["boto3_download"].append(quiet_timed(lambda: client.download_file(
            BUCKET, f"floor/model-{i}.bin", str(downloaded))))
        downloaded.unlink(missing_ok=True)

    # -- the plain DVC + git workflow ----------------------------------------------------------
    plain, bare = plain_dvc_repo(bench, "plain")
    dvc = str(BIN / "dvc")
    shutil.copyfile(source, plain / "model.bin")

    def plain_step(i: int) -> dict[str, float]:
        touch_head(plain / "model.bin", i)
        settle(bench.s3)
        steps = {
            "dvc_add": [dvc, "add", "-q", "model.bin"],
            "git_commit": ["git", "commit", "-qam", f"v{i}"],
            "dvc_push": [dvc, "push", "-q"],
            "git_tag": ["git", "tag", "-a", f"v0.{i + 1}", "-m", "plain"],
            "git_push": ["git", "push", "-q", "--follow-tags", "origin", "main"],
        }
        out: dict[str, float] = {}
        for name, command in steps.items():
            if name == "git_commit":
                run(["git", "add", "model.bin.dvc", ".gitignore"], cwd=plain, env=env)
            out[name] = timed(lambda c=command: run(c, cwd=plain, env=env))
        return out

    plain_runs = [plain_step(i) for i in range(args.runs)]
    for name in plain_runs[0]:
        results[f"plain_{name}"] = statistics.median(r[name] for r in plain_runs)
    results["plain_upload_total"] = statistics.median(sum(r.values()) for r in plain_runs)

    def plain_pull(i: int) -> float:
        clone = work / f"plain-clone-{i}"
        shutil.rmtree(clone, ignore_errors=True)

        def go() -> None:
            run(["git", "clone", "-q", str(bare), str(clone)], cwd=work, env=env)
            run([dvc, "pull", "-q"], cwd=clone, env=env)

        settle(bench.s3)
        elapsed = timed(go)
        shutil.rmtree(clone, ignore_errors=True)
        return elapsed

    results["plain_clone_pull"] = median_of(args.runs, plain_pull)

    # -- cpv ----------------------------------------------------------------------------------
    repo = work / "cpv-repo"
    run([*CPV, "init", "--team", "bench", "--model", "m", "--path", str(repo)],
        cwd=work, env=env)
    shutil.copyfile(source, repo / "model.bin")
    upload_rss: list[float] = []

    def cpv_upload_tag(i: int) -> float:
        floor_upload(i)
        touch_head(repo / "model.bin", i)
        settle(bench.s3)
        elapsed, rss = peak_rss_mib([*CPV, "model", "upload", "--metric", f"run={i}"],
                                    cwd=repo, env=env)
        upload_rss.append(rss)
        return elapsed + timed(lambda: run([*CPV, "model", "tag"], cwd=repo, env=env))

    results["cpv_upload_tag"] = median_of(max(args.runs, 2), cpv_upload_tag)
    results["cpv_upload_peak_mib"] = max(upload_rss)
    results["cpv_unchanged_upload"] = median_of(args.runs, lambda i: timed(
        lambda: run([*CPV, "model", "upload", "--metric", f"run={max(args.runs, 2) - 1}"],
                    cwd=repo, env=env)))
    versions = json.loads(run([*CPV, "model", "list", "--json"], cwd=repo,
                              env=env).stdout)
    last = versions[-1]["version"]

    download_rss: list[float] = []

    def cpv_download(i: int) -> float:
        clone = work / f"cpv-clone-{i}"
        out = work / f"cpv-download-{i}"
        shutil.rmtree(clone, ignore_errors=True)
        shutil.rmtree(out, ignore_errors=True)
        run(["git", "clone", "-q", cpv_remote(bench, "m"), str(clone)], cwd=work, env=env)
        floor_download(i)
        settle(bench.s3)
        elapsed, rss = peak_rss_mib([*CPV, "model", "download", last, "-o", str(out)],
                                    cwd=clone, env=env)
        download_rss.append(rss)
        shutil.rmtree(clone, ignore_errors=True)
        shutil.rmtree(out, ignore_errors=True)
        return elapsed

    results["cpv_download"] = median_of(args.runs, cpv_download)
    results["cpv_download_peak_mib"] = max(download_rss)
    results.update({name: statistics.median(runs) for name, runs in floor.items()})

    older = versions[-2]["version"]

    def switch(i: int) -> float:
        target = older if i % 2 == 0 else last
        return timed(lambda: run([*CPV, "model", "revert", target], cwd=repo, env=env))

    switch(1)  # start from the newest version
    results["cpv_switch_cached"] = median_of(max(args.runs, 4), switch)

    floor_up = results["md5"] + results["boto3_upload"]
    upload_ratio = bench.ratio("cpv upload+tag / (md5 + boto3 upload)  ",
                               results["cpv_upload_tag"] / floor_up)
    download_ratio = bench.ratio("cpv download / boto3 download          ",
                                 results["cpv_download"] / results["boto3_download"])
    bench.ratio("cpv upload+tag / plain dvc+git workflow",
                results["cpv_upload_tag"] / results["plain_upload_total"])
    bench.ratio("cpv download / plain clone + dvc pull  ",
                results["cpv_download"] / results["plain_clone_pull"])
    return [
        ("upload + tag <= 1.15 x (md5 + boto3 upload)", upload_ratio, 1.15),
        ("fresh download <= 1.2 x boto3 download", download_ratio, 1.2),
        ("unchanged re-upload <= 0.5 s", results["cpv_unchanged_upload"], 0.5),
        ("switch between cached versions <= 0.5 s", results["cpv_switch_cached"], 0.5),
        ("peak memory of upload < 300 MiB", results["cpv_upload_peak_mib"], 300),
        ("peak memory of download < 300 MiB", results["cpv_download_peak_mib"], 300),
    ]


def bench_list(bench: Bench) -> list[Check]:
    """Listing many versions (tiny artifacts; the list reads tags only), and ``cpv --help``."""
    args, work, env, results = bench.args, bench.work, bench.env, bench.results
    many = work / "many"
    from cp_manage import ModelsCheckpointsManage

    os.environ.update({k: env[k] for k in ("HOME", "CPV_HOME", "GIT_CONFIG_GLOBAL",
                                           "GIT_CONFIG_NOSYSTEM")})
    manager = ModelsCheckpointsManage(team_name="bench", model_name="many", repo_path=many)
    manager.import_model_init(storage_url=str(work / "many-storage"))
    for n in range(args.versions):
        (many / "model.bin").write_bytes(f"weights {n}".encode())
        manager.upload_model_checkpoint(metrics={"accuracy": n / args.versions, "n": n})
        manager.tag_model_checkpoint()
    results["cpv_list_200"] = median_of(args.runs, lambda i: timed(
        lambda: run([*CPV, "model", "list", "--json"], cwd=many, env=env)))
    results["cpv_help"] = median_of(args.runs, lambda i: timed(
        lambda: run([*CPV, "--help"], cwd=work, env=env)))
    return [
        (f"list {args.versions} versions <= 0.5 s", results["cpv_list_200"], 0.5),
        ("cpv --help <= 0.3 s", results["cpv_help"], 0.3),
    ]


def bench_data(bench: Bench) -> list[Check]:
    """Many small files (--data-files of --data-file-kib, in train/ and validation/).

    Against plain DVC, in a plain git + DVC repository: ``dvc add`` + ``dvc push -j 16`` of the
    folder against cpv's first upload, and a fresh ``git clone`` + ``dvc pull -j 16`` against a
    fresh ``git clone`` + ``cpv data download VERSION -o DIR`` (both clones start with empty
    caches). Then a re-upload after 1 % of the files changed.
    """
    args, work, results = bench.args, bench.work, bench.results
    dvc = str(BIN / "dvc")
    dataset = work / "dataset"
    per_split = args.data_files // 2
    for split in ("train", "validation"):
        (dataset / split).mkdir(parents=True)
        for n in range(per_split):
            (dataset / split / f"{n:05}.bin").write_bytes(os.urandom(args.data_file_kib * 1024))

    runs: dict[str, list[float]] = {"dvc_add_push_data": [], "data_first_upload": [],
                                    "dvc_clone_pull_data": [], "data_clone_download": []}

    def one_run(i: int) -> Path:
        """Both workflows, each storing the dataset anew (its own S3 prefix); cpv's repo."""
        plain, bare = plain_dvc_repo(bench, f"plain-data-{i}")
        shutil.copytree(dataset, plain / "data")
        runs["dvc_add_push_data"].append(bench.quiet_timed(lambda: (
            bench.run([dvc, "add", "-q", "data"], plain),
            bench.run([dvc, "push", "-q", "-j", PULL_JOBS], plain))))
        bench.run(["git", "add", "data.dvc", ".gitignore"], plain)
        bench.run(["git", "commit", "-qm", "data"], plain)
        bench.run(["git", "push", "-q", "origin", "main"], plain)

        repo = work / f"cpv-data-{i}"
        bench.run([*CPV, "init", "--team", "bench", "--model", f"data-{i}", "--path",
                   str(repo)], work)
        shutil.copytree(dataset, repo / "data")
        runs["data_first_upload"].append(bench.quiet_timed(
            lambda: bench.run([*CPV, "data", "upload"], repo)))
        bench.run([*CPV, "data", "tag"], repo)

        plain_clone, cpv_clone = work / "plain-data-clone", work / "cpv-data-clone"
        out = work / "cpv-data-download"
        runs["dvc_clone_pull_data"].append(bench.quiet_timed(lambda: (
            bench.run(["git", "clone", "-q", str(bare), str(plain_clone)], work),
            bench.run([dvc, "pull", "-q", "-j", PULL_JOBS], plain_clone))))
        runs["data_clone_download"].append(bench.quiet_timed(lambda: (
            bench.run(["git", "clone", "-q", cpv_remote(bench, f"data-{i}"), str(cpv_clone)],
                      work),
            bench.run([*CPV, "data", "download", "v0.1", "-o", str(out)], cpv_clone))))
        assert sum(1 for _ in out.rglob("*.bin")) == 2 * per_split
        for folder in (plain, bare, plain_clone, cpv_clone, out):
            shutil.rmtree(folder)
        return repo

    repos = [one_run(i) for i in range(args.data_runs)]
    results.update({name: statistics.median(values) for name, values in runs.items()})

    repo = repos[-1]
    data = repo / "data"
    for n in range(0, per_split, 50):  # 1 % of the files
        for split in ("train", "validation"):
            (data / split / f"{n:05}.bin").write_bytes(os.urandom(args.data_file_kib * 1024))
    results["data_second_upload"] = bench.quiet_timed(
        lambda: bench.run([*CPV, "data", "upload"], repo))

    upload = bench.ratio("data: cpv first upload / (dvc add + dvc push -j 16)  ",
                         results["data_first_upload"] / results["dvc_add_push_data"])
    download = bench.ratio("data: cpv clone + download / (clone + dvc pull -j 16)",
                           results["data_clone_download"] / results["dvc_clone_pull_data"])
    return [
        ("data: first upload <= 1.0 x dvc add + dvc push -j 16", upload, 1.0),
        ("data: fresh download <= 1.0 x git clone + dvc pull -j 16", download, 1.0),
        ("data: 1 % changed re-upload <= 0.2 x first upload",
         results["data_second_upload"] / results["data_first_upload"], 0.2),
    ]


def folder_artifacts_supported(bench: Bench) -> bool:
    """Whether this cpv versions folders: ``cpv init --artifact checkpoint/``."""
    return "--artifact" in bench.run([*CPV, "init", "--help"], bench.work).stdout


def bench_folder(bench: Bench) -> list[Check]:
    """A checkpoint folder: FOLDER_SHARDS shards of --size-mib / FOLDER_SHARDS and 5 JSON files.

    cpv (``cpv init --artifact checkpoint/``; ``cpv model upload DIR`` + ``cpv model tag``; a
    fresh clone's ``cpv model download V -o DIR``) against the floor: md5 of the files plus a
    parallel boto3 upload of them (one ``upload_file`` per file on a thread pool), and a
    parallel boto3 download. Each floor run alternates with the cpv run it is compared to.
    Then the upload after one shard changed (a different shard each run), against the first
    uploads; both are medians of the same number of runs.
    """
    if not folder_artifacts_supported(bench):
        print("folder checkpoint: skipped (no folder artifacts yet)")
        return []
    args, work, client, results = bench.args, bench.work, bench.client, bench.results
    folder = work / "checkpoint"
    folder.mkdir()
    shard_size = args.size_mib * 1024 * 1024 // FOLDER_SHARDS
    shards = [folder / f"model-{n + 1:05}-of-{FOLDER_SHARDS:05}.safetensors"
              for n in range(FOLDER_SHARDS)]
    for shard in shards:
        write_random(shard, shard_size)
    for name in FOLDER_JSON:
        (folder / name).write_text(json.dumps({"name": name, "shards": len(shards)}))
    files = sorted(folder.iterdir())

    floor: dict[str, list[float]] = {"folder_md5": [], "folder_boto3_upload": [],
                                     "folder_boto3_download": []}

    def in_parallel(work_on: Callable[[Path], object]) -> None:
        with ThreadPoolExecutor(max_workers=len(files)) as pool:
            list(pool.map(work_on, files))

    def floor_upload(i: int) -> None:
        floor["folder_md5"].append(bench.quiet_timed(
            lambda: [md5_file(path) for path in files]))
        floor["folder_boto3_upload"].append(bench.quiet_timed(lambda: in_parallel(
            lambda path: client.upload_file(str(path), BUCKET,
                                            f"floor-folder/{i}/{path.name}"))))

    def floor_download(i: int) -> None:
        target = work / "floor-folder-download"
        target.mkdir()
        floor["folder_boto3_download"].append(bench.quiet_timed(lambda: in_parallel(
            lambda path: client.download_file(BUCKET, f"floor-folder/{i}/{path.name}",
                                              str(target / path.name)))))
        shutil.rmtree(target)

    repo = work / "cpv-folder"
    bench.run([*CPV, "init", "--team", "bench", "--model", "ckpt", "--artifact", "checkpoint/",
               "--path", str(repo)], work)
    upload_rss: list[float] = []
    uploads: list[float] = []

    def cpv_upload_tag(i: int) -> float:
        floor_upload(i)
        for path in files:
            touch_head(path, i)  # every file new: nothing is deduplicated
        settle(bench.s3)
        elapsed, rss = peak_rss_mib([*CPV, "model", "upload", str(folder)], cwd=repo,
                                    env=bench.env)
        upload_rss.append(rss)
        uploads.append(elapsed)
        return elapsed + timed(lambda: bench.run([*CPV, "model", "tag"], repo))

    results["folder_upload_tag"] = median_of(max(args.runs, 2), cpv_upload_tag)
    results["folder_first_upload"] = statistics.median(uploads)
    def one_shard_changed(i: int) -> float:
        touch_head(shards[i % len(shards)], 1000 + i)  # a different shard each run
        elapsed = bench.quiet_timed(
            lambda: bench.run([*CPV, "model", "upload", str(folder)], repo))
        bench.run([*CPV, "model", "tag"], repo)
        return elapsed

    results["folder_one_shard_upload"] = median_of(max(args.runs, 2), one_shard_changed)
    versions = json.loads(bench.run([*CPV, "model", "list", "--json"], repo).stdout)
    last = versions[-1]["version"]

    download_rss: list[float] = []

    def cpv_download(i: int) -> float:
        clone, out = work / f"cpv-folder-clone-{i}", work / f"cpv-folder-download-{i}"
        bench.run(["git", "clone", "-q", cpv_remote(bench, "ckpt"), str(clone)], work)
        floor_download(i)
        settle(bench.s3)
        elapsed, rss = peak_rss_mib([*CPV, "model", "download", last, "-o", str(out)],
                                    cwd=clone, env=bench.env)
        download_rss.append(rss)
        assert sorted(p.name for p in out.iterdir()) == [p.name for p in files], "tree in DIR"
        shutil.rmtree(clone)
        shutil.rmtree(out)
        return elapsed

    results["folder_download"] = median_of(args.runs, cpv_download)
    results.update({name: statistics.median(values) for name, values in floor.items()})
    results["folder_upload_peak_mib"] = max(upload_rss)
    results["folder_download_peak_mib"] = max(download_rss)

    upload = bench.ratio("folder: cpv upload+tag / (md5 + boto3 upload)  ",
                         results["folder_upload_tag"] / (results["folder_md5"]
                                                         + results["folder_boto3_upload"]))
    changed = bench.ratio("folder: 1 shard changed upload / first upload ",
                          results["folder_one_shard_upload"] / results["folder_first_upload"])
    download = bench.ratio("folder: cpv download / boto3 download         ",
                           results["folder_download"] / results["folder_boto3_download"])
    return [
        ("folder: upload + tag <= 1.15 x (md5 + parallel boto3 upload)", upload, 1.15),
        ("folder: upload after 1 shard changed <= 0.35 x the first", changed, 0.35),
        ("folder: fresh download <= 1.2 x parallel boto3 download", download, 1.2),
        ("folder: peak memory of upload < 300 MiB", results["folder_upload_peak_mib"], 300),
        ("folder: peak memory of download < 300 MiB", results["folder_download_peak_mib"],
         300),
    ]


def bench_report(bench: Bench) -> list[Check]:
    """``cpv model report`` of 300 versions (issue 16: under 2 s), the whole command."""
    from report_helpers import synthetic_versions, write_versions

    from cp_manage import ModelsCheckpointsManage

    work, env, results = bench.work, bench.env, bench.results
    many = work / "report-300"
    os.environ.update({k: env[k] for k in ("HOME", "CPV_HOME", "GIT_CONFIG_GLOBAL",
                                           "GIT_CONFIG_NOSYSTEM")})
    manager = ModelsCheckpointsManage(team_name="bench", model_name="report-300",
                                      repo_path=many)
    manager.import_model_init(storage_url=str(work / "report-300-storage"))
    (many / "model.bin").write_bytes(b"weights")
    commit = manager.upload_model_checkpoint(metrics={"accuracy": 0.5})
    write_versions(many, synthetic_versions(300, team="bench", model="report-300"),
                   commit=commit)
    out = work / "report-300.html"
    results["cpv_report_300"] = median_of(bench.args.runs, lambda i: timed(
        lambda: run([*CPV, "model", "report", "-o", str(out)], cwd=many, env=env)))
    return [("report of 300 versions < 2 s", results["cpv_report_300"], 2.0)]


def bench_handoff(bench: Bench) -> list[Check]:
    """Handing a checkpoint off: ``uploads.submit`` of the --size-mib ``model.bin`` (it returns
    once the checkpoint is snapshotted into the cache) against a synchronous upload + tag of the
    same checkpoint, both in one Python process on the S3 server, paired run by run.

    Each run writes new content into the file first (nothing is deduplicated), and each submit
    waits, untimed, for its upload to finish before the next timed step.
    """
    args, work, env, results = bench.args, bench.work, bench.env, bench.results
    os.environ.update(env)  # the library reads the bench's HOME, CPV_HOME and AWS settings
    from cp_manage import ModelsCheckpointsManage

    repo = work / "cpv-handoff"
    bench.run([*CPV, "init", "--team", "bench", "--model", "handoff", "--path", str(repo)], work)
    source = repo / "model.bin"
    write_random(source, args.size_mib * 1024 * 1024)
    manager = ModelsCheckpointsManage(repo_path=repo)
    sync_runs: list[float] = []
    submit_runs: list[float] = []
    futures: list[Future[str]] = []
    with manager.background() as uploads:
        for i in range(args.runs):
            touch_head(source, 2 * i)
            sync_runs.append(bench.quiet_timed(lambda i=i: (
                manager.upload(source, metrics={"run": i}), manager.tag())))
            touch_head(source, 2 * i + 1)
            submit_runs.append(bench.quiet_timed(lambda i=i: futures.append(
                uploads.submit(source, metrics={"run": i, "background": True}))))
            futures[-1].result()  # the upload finishes before the next timed step
    versions = json.loads(bench.run([*CPV, "model", "list", "--json"], repo).stdout)
    assert len(versions) == 2 * args.runs, "every submit became a version"
    results["handoff_sync_upload_tag"] = statistics.median(sync_runs)
    results["handoff_submit"] = statistics.median(submit_runs)
    print("handoff runs (s): sync upload+tag " + ", ".join(f"{t:.2f}" for t in sync_runs)
          + "; submit " + ", ".join(f"{t:.2f}" for t in submit_runs))
    ratio = bench.ratio("handoff: submit / sync upload + tag       ",
                        results["handoff_submit"] / results["handoff_sync_upload_tag"])
    return [("handoff: submit <= 0.4 x synchronous upload + tag", ratio, 0.4)]


def bench_resume(bench: Bench) -> list[Check]:
    """A --size-mib upload, and a download, killed (SIGKILL) at about half-way and run again,
    each paired with an uninterrupted one in the same conditions: the rerun must send (receive)
    only what storage (the partial download) did not hold, and take a fraction of the time."""
    args, work, env, results = bench.args, bench.work, bench.env, bench.results
    size = args.size_mib * 1024 * 1024
    repo = work / "resume-repo"
    run([*CPV, "init", "--team", "bench", "--model", "resume", "--path", str(repo)],
        cwd=work, env=env)
    write_random(repo / "model.bin", size)
    prefix = "bench/resume/files/md5"
    client = bench.client

    uploads: list[dict[str, Any]] = []

    def stored_parts(*, again: bool = False) -> int:
        """Bytes in the unfinished upload's parts (one request a poll once it is known)."""
        if again or not uploads:
            uploads[:] = client.list_multipart_uploads(Bucket=BUCKET, Prefix=prefix).get(
                "Uploads", [])
        return sum(part["Size"] for upload in uploads for part in client.list_parts(
            Bucket=BUCKET, Key=upload["Key"], UploadId=upload["UploadId"]).get("Parts", []))

    def kill_when(args_: list[str], cwd: Path, ready: Callable[[], bool]) -> None:
        process = subprocess.Popen(args_, cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        while not ready():
            if process.poll() is not None:
                raise SystemExit(f"{' '.join(args_)} ended before it was half-way")
            time.sleep(0.02)
        process.kill()
        process.wait()

    def already(stderr: str, what: str) -> int:
        """The bytes cpv's log says were already there (its --verbose line)."""
        for line in stderr.splitlines():
            if f"bytes already {what}" in line:
                return int(line.rsplit(": ", 1)[1].split()[0])
        raise SystemExit(f"the rerun did not resume:\n{stderr}")

    upload: dict[str, list[float]] = {"full": [], "rerun": [], "missing": [], "sent": []}

    def upload_pair(i: int) -> None:
        touch_head(repo / "model.bin", 2 * i)
        settle(bench.s3)
        upload["full"].append(timed(lambda: run([*CPV, "model", "upload"], cwd=repo, env=env)))
        touch_head(repo / "model.bin", 2 * i + 1)
        settle(bench.s3)
        uploads.clear()
        kill_when([*CPV, "model", "upload"], repo, lambda: stored_parts() >= size // 2)
        time.sleep(1)  # parts whose bytes had all arrived are stored by now
        held = stored_parts(again=True)
        settle(bench.s3)
        began = time.perf_counter()
        rerun = run([*CPV, "model", "upload", "-v"], cwd=repo, env=env)
        upload["rerun"].append(time.perf_counter() - began)
        upload["missing"].append(size - held)
        upload["sent"].append(size - already(rerun.stderr, "in storage"))
        if stored_parts(again=True):
            raise SystemExit("a multipart upload is left after the rerun")

    for i in range(args.runs):
        upload_pair(i)
    run([*CPV, "model", "tag"], cwd=repo, env=env)
    version = json.loads(run([*CPV, "model", "list", "--json"], cwd=repo,
                             env=env).stdout)[-1]["version"]
    md5 = md5_file(repo / "model.bin")

    download: dict[str, list[float]] = {"full": [], "rerun": [], "missing": [], "received": []}

    def covered(clone: Path) -> int:
        state = clone / ".dvc" / "cache" / "cpv-partial" / f"{md5}.cpv-state"
        try:
            return int(json.loads(state.read_text())["covered"])
        except (OSError, ValueError, KeyError):
            return 0

    def download_pair(i: int) -> None:
        for kind in ("full", "killed"):
            clone, out = work / f"resume-clone-{i}-{kind}", work / f"resume-out-{i}-{kind}"
            run(["git", "clone", "-q", cpv_remote(bench, "resume"), str(clone)], cwd=work,
                env=env)
            command = [*CPV, "model", "download", version, "-o", str(out), "-v"]
            if kind == "killed":
                kill_when(command, clone, lambda c=clone: covered(c) >= size // 2)
                held = covered(clone)
            settle(bench.s3)
            began = time.perf_counter()
            result = run(command, cwd=clone, env=env)
            download["full" if kind == "full" else "rerun"].append(time.perf_counter() - began)
            if md5_file(out / "model.bin") != md5:
                raise SystemExit("the downloaded file is wrong")
            if kind == "killed":
                download["missing"].append(size - held)
                download["received"].append(size - already(result.stderr, "received"))
            shutil.rmtree(clone, ignore_errors=True)
            shutil.rmtree(out, ignore_errors=True)

    for i in range(args.runs):
        download_pair(i)

    mib = 1024 * 1024
    for name, runs in (("upload", upload), ("download", download)):
        results[f"resume_full_{name}"] = statistics.median(runs["full"])
        results[f"resume_rerun_{name}"] = statistics.median(runs["rerun"])
    results["resume_upload_missing_mib"] = statistics.median(upload["missing"]) / mib
    results["resume_upload_sent_mib"] = statistics.median(upload["sent"]) / mib
    results["resume_download_missing_mib"] = statistics.median(download["missing"]) / mib
    results["resume_download_got_mib"] = statistics.median(download["received"]) / mib
    upload_ratio = bench.ratio("resumed upload / full upload            ",
                               results["resume_rerun_upload"] / results["resume_full_upload"])
    download_ratio = bench.ratio("resumed download / full download        ",
                                 results["resume_rerun_download"]
                                 / results["resume_full_download"])
    extra_sent = max(s - m for s, m in zip(upload["sent"], upload["missing"], strict=True)) / mib
    extra_got = max(r - m for r, m in zip(download["received"], download["missing"],
                                          strict=True)) / mib
    return [
        ("resumed upload <= 0.65 x full upload", upload_ratio, 0.65),
        ("resumed download <= 0.8 x full download", download_ratio, 0.8),
        ("resumed upload sends <= what storage lacked + one part (16 MiB)", extra_sent, 16),
        ("resumed download gets <= what the partial lacked + one part (8 MiB)", extra_got, 8),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024,
                        help="the model file; the checkpoint folder's shards are a quarter each")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--versions", type=int, default=200, help="for the list benchmark")
    parser.add_argument("--data-files", type=int, default=10_000)
    parser.add_argument("--data-file-kib", type=int, default=20)
    parser.add_argument("--data-runs", type=int, default=1,
                        help="runs of the dataset's uploads and downloads (each takes minutes; "
                        "more than one only with --only data: three leave the S3 "
                        "server too little room for the later sections)")
    parser.add_argument("--only", action="append", choices=SECTIONS,
                        help="run only this section (repeatable; default: all)")
    parser.add_argument("--skip-data", action="store_true", help="every section but data")
    parser.add_argument("--workdir", type=Path,
                        help="keep everything in this folder (default: a temporary one, removed "
                        "at the end)")
    args = parser.parse_args()
    sections = [name for name in SECTIONS if name in (args.only or SECTIONS)
                and not (args.skip_data and name == "data")]

    work = Path(args.workdir or tempfile.mkdtemp(prefix="cpv-bench-")).absolute()
    work.mkdir(parents=True, exist_ok=True)
    if args.workdir is None:
        # A run leaves ~20 x --size-mib of files (S3 store, caches, clones), and a full disk
        # makes the S3 server fail with InternalError. Only a folder named with --workdir stays.
        atexit.register(shutil.rmtree, work, True)
    print(f"cpv benchmark: {args.size_mib} MiB model.bin, median of {args.runs} runs, in {work}"
          f" ({', '.join(sections)})")

    checks: list[Check] = []
    with SeaweedS3(work / "s3") as s3:
        s3.create_bucket(BUCKET)
        gitconfig = work / "gitconfig"
        gitconfig.write_text("[user]\n\tname = bench\n\temail = bench@cpv.invalid\n"
                             "[init]\n\tdefaultBranch = main\n")
        env = {**os.environ, **s3.env(), "HOME": str(work / "home"),
               "CPV_HOME": str(work / "cpv-home"), "GIT_CONFIG_GLOBAL": str(gitconfig),
               "GIT_CONFIG_NOSYSTEM": "1", "DVC_NO_ANALYTICS": "1",
               "AWS_ENDPOINT_URL": s3.endpoint_url, "CPV_BUCKET": BUCKET}
        # Python's default: compiled modules are cached on first use. Some sandboxes and CI
        # images turn that off, which would charge every command (cpv's and dvc's) ~50 ms of
        # compiling that no user pays.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        bench = Bench(args, work, s3, env, s3.client(read_timeout=600))
        sections_run = {"model": bench_model, "list": bench_list, "data": bench_data,
                        "folder": bench_folder, "resume": bench_resume,
                        "report": bench_report, "handoff": bench_handoff}
        for name in sections:
            checks += sections_run[name](bench)

    results = bench.results
    print("\nmedian seconds (MiB for memory):")
    for name, value in results.items():
        print(f"  {name:<24} {value:10.3f}")
    print("\nratios:")
    for label, value in bench.ratios:
        print(f"  {label} {value:.2f}")
    print("\ntargets:")
    ok = True
    for label, value, limit in checks:
        passed = value <= limit if "<=" in label else value < limit
        ok &= passed
        print(f"  [{'pass' if passed else 'FAIL'}] {label}: {value:.3f}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
