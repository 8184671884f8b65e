"""cpv's benchmark: cpv against the floor (md5 + boto3) and the plain DVC + git workflow.

Everything runs on this machine in one run against one SeaweedFS S3 server on 127.0.0.1, so the
ratios compare like with like (absolute seconds on shared machines are not comparable). Each
floor run (md5, boto3 upload, boto3 download) alternates with the cpv run it is compared to,
and every timed transfer starts once the disk and the S3 server are quiet.

    .venv/bin/python bench/bench.py                 # 1 GiB model, 3 runs of each step
    .venv/bin/python bench/bench.py --size-mib 256 --runs 3 --skip-data

Prints the median of each step, peak memory of cpv's upload and download, the ratios and whether
each target of issue 5 holds; exits 1 when one does not.
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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from servers import SeaweedS3  # noqa: E402

BIN = Path(sys.executable).parent
CPV = [sys.executable, "-m", "cp_manage.cli.app"]
BUCKET = "bench"


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--versions", type=int, default=200, help="for the list benchmark")
    parser.add_argument("--data-files", type=int, default=10_000)
    parser.add_argument("--data-file-kib", type=int, default=20)
    parser.add_argument("--skip-data", action="store_true")
    parser.add_argument("--workdir", type=Path,
                        help="keep everything in this folder (default: a temporary one, removed "
                        "at the end)")
    args = parser.parse_args()

    work = Path(args.workdir or tempfile.mkdtemp(prefix="cpv-bench-")).absolute()
    work.mkdir(parents=True, exist_ok=True)
    if args.workdir is None:
        # A run leaves ~20 x --size-mib of files (S3 store, caches, clones), and a full disk
        # makes the S3 server fail with InternalError. Only a folder named with --workdir stays.
        atexit.register(shutil.rmtree, work, True)
    size = args.size_mib * 1024 * 1024
    results: dict[str, float] = {}
    print(f"cpv benchmark: {args.size_mib} MiB model.bin, median of {args.runs} runs, in {work}")

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
        source = work / "model.bin"
        write_random(source, size)

        # -- the floor, measured in turn with cpv's own runs below (same conditions) ---------
        client = s3.client(read_timeout=600)
        floor: dict[str, list[float]] = {"md5": [], "boto3_upload": [], "boto3_download": []}
        results.update(dict.fromkeys(floor, 0.0))  # printed first

        def quiet_timed(fn: Callable[[], object]) -> float:
            settle(s3)
            return timed(fn)

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

        # -- the plain DVC + git workflow ------------------------------------------------------
        bare = work / "plain.git"
        run(["git", "init", "-q", "--bare", str(bare)], cwd=work, env=env)
        plain = work / "plain"
        plain.mkdir()
        dvc = str(BIN / "dvc")
        for command in (["git", "init", "-q"], [dvc, "init", "-q"],
                        [dvc, "remote", "add", "-d", "s3", f"s3://{BUCKET}/plain"],
                        [dvc, "remote", "modify", "s3", "endpointurl", s3.endpoint_url],
                        ["git", "remote", "add", "origin", str(bare)],
                        ["git", "add", "-A"], ["git", "commit", "-qm", "init"],
                        ["git", "push", "-q", "origin", "main"]):
            run(command, cwd=plain, env=env)
        shutil.copyfile(source, plain / "model.bin")

        def plain_step(i: int) -> dict[str, float]:
            touch_head(plain / "model.bin", i)
            settle(s3)
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

            settle(s3)
            elapsed = timed(go)
            shutil.rmtree(clone, ignore_errors=True)
            return elapsed

        results["plain_clone_pull"] = median_of(args.runs, plain_pull)

        # -- cpv ----------------------------------------------------------------------------
        repo = work / "cpv-repo"
        run([*CPV, "init", "--team", "bench", "--model", "m", "--path", str(repo)],
            cwd=work, env=env)
        shutil.copyfile(source, repo / "model.bin")
        upload_rss: list[float] = []

        def cpv_upload_tag(i: int) -> float:
            floor_upload(i)
            touch_head(repo / "model.bin", i)
            settle(s3)
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
            run(["git", "clone", "-q", str(Path(env["CPV_HOME"]) / "remotes/git/bench/m.git"),
                 str(clone)], cwd=work, env=env)
            floor_download(i)
            settle(s3)
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

        # -- list over many versions (tiny artifacts; the list reads tags only) ----------------
        many = work / "many"
        from cp_manage import ModelsCheckpointsManage

        os.environ.update({k: env[k] for k in ("HOME", "CPV_HOME", "GIT_CONFIG_GLOBAL",
                                               "GIT_CONFIG_NOSYSTEM")})
        manager = ModelsCheckpointsManage(team_name="bench", model_name="many", repo_path=many,
                                          )
        manager.import_model_init(storage_url=str(work / "many-storage"))
        for n in range(args.versions):
            (many / "model.bin").write_bytes(f"weights {n}".encode())
            manager.upload_model_checkpoint(metrics={"accuracy": n / args.versions, "n": n})
            manager.tag_model_checkpoint()
        results["cpv_list_200"] = median_of(args.runs, lambda i: timed(
            lambda: run([*CPV, "model", "list", "--json"], cwd=many, env=env)))
        results["cpv_help"] = median_of(args.runs, lambda i: timed(
            lambda: run([*CPV, "--help"], cwd=work, env=env)))

        # -- data: only what changed moves -----------------------------------------------------
        if not args.skip_data:
            data = repo / "data"
            data.mkdir(exist_ok=True)
            per_split = args.data_files // 2
            for split in ("train", "validation"):
                (data / split).mkdir(exist_ok=True)
                for n in range(per_split):
                    (data / split / f"{n:05}.bin").write_bytes(os.urandom(args.data_file_kib
                                                                          * 1024))
            results["data_first_upload"] = timed(lambda: run([*CPV, "data", "upload"], cwd=repo,
                                                             env=env))
            for n in range(0, args.data_files // 2, 50):  # 1 % of the files
                for split in ("train", "validation"):
                    (data / split / f"{n:05}.bin").write_bytes(os.urandom(
                        args.data_file_kib * 1024))
            results["data_second_upload"] = timed(lambda: run([*CPV, "data", "upload"],
                                                              cwd=repo, env=env))

    floor_up = results["md5"] + results["boto3_upload"]
    checks = [
        ("upload + tag <= 1.15 x (md5 + boto3 upload)",
         results["cpv_upload_tag"] / floor_up, 1.15),
        ("fresh download <= 1.2 x boto3 download",
         results["cpv_download"] / results["boto3_download"], 1.2),
        ("unchanged re-upload <= 0.5 s", results["cpv_unchanged_upload"], 0.5),
        ("switch between cached versions <= 0.5 s", results["cpv_switch_cached"], 0.5),
        (f"list {args.versions} versions <= 0.5 s", results["cpv_list_200"], 0.5),
        ("cpv --help <= 0.3 s", results["cpv_help"], 0.3),
        ("peak memory of upload < 300 MiB", results["cpv_upload_peak_mib"], 300),
        ("peak memory of download < 300 MiB", results["cpv_download_peak_mib"], 300),
    ]
    if not args.skip_data:
        checks.append(("data: 1 % changed re-upload <= 0.2 x first upload",
                       results["data_second_upload"] / results["data_first_upload"], 0.2))

    print("\nmedian seconds (MiB for memory):")
    for name, value in results.items():
        print(f"  {name:<24} {value:10.3f}")
    print("\nratios:")
    print(f"  cpv upload+tag / (md5 + boto3 upload)   {results['cpv_upload_tag'] / floor_up:.2f}")
    print(f"  cpv download / boto3 download           "
          f"{results['cpv_download'] / results['boto3_download']:.2f}")
    print(f"  cpv upload+tag / plain dvc+git workflow "
          f"{results['cpv_upload_tag'] / results['plain_upload_total']:.2f}")
    print(f"  cpv download / plain clone + dvc pull   "
          f"{results['cpv_download'] / results['plain_clone_pull']:.2f}")
    print("\ntargets:")
    ok = True
    for label, value, limit in checks:
        passed = value <= limit if "<=" in label else value < limit
        ok &= passed
        print(f"  [{'pass' if passed else 'FAIL'}] {label}: {value:.3f}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
