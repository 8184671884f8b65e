"""``cpv demo``: the whole model lifecycle on the embedded default, narrated.

It runs the real ``cpv`` commands in a fresh folder with its own ``CPV_HOME`` (a local bare git
remote and a local DVC storage remote), so it needs no configuration and touches nothing else.
That temporary folder is removed at the end unless ``--keep`` asks to explore it.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import click

from cp_manage.cli import output

TEAM, MODEL = "AI-Convo", "faster-whisper"


def _run(args: list[str], *, env: dict[str, str], cwd: Path) -> str:
    output.step(f"\n$ cpv {shlex.join(args)}")
    result = subprocess.run([sys.executable, "-m", "cp_manage.cli.app", *args], cwd=cwd,
                            env=env, capture_output=True, text=True, timeout=300, check=False)
    click.echo(result.stdout.rstrip())
    if result.stderr.strip():
        click.echo(result.stderr.rstrip(), err=True)
    if result.returncode != 0:
        raise click.ClickException(f"'cpv {shlex.join(args)}' exited {result.returncode}")
    return result.stdout


def _checkpoint(path: Path, seed: int, size: int) -> str:
    """Fake weights: deterministic pseudo-random bytes, as a training run would write."""
    digest = hashlib.md5(usedforsecurity=False)
    block = hashlib.sha256(str(seed).encode()).digest() * (1024 * 1024 // 32)
    with open(path, "wb") as handle:
        for i in range(size // len(block)):
            chunk = bytes([i % 251]) + block[1:]
            handle.write(chunk)
            digest.update(chunk)
    return digest.hexdigest()


@click.command(help="Run the model lifecycle end to end in a scratch folder, narrated.")
@click.option("--workdir", type=click.Path(file_okay=False),
              help="Where to work (default: a new temporary folder, removed at the end).")
@click.option("--keep", is_flag=True, help="Keep the temporary folder to explore it.")
@click.option("--size-mib", default=16, show_default=True, help="Size of each fake checkpoint.")
def demo(workdir: str | None, keep: bool, size_mib: int) -> None:
    if workdir is not None:  # the user's own folder: always kept
        root = Path(workdir).absolute()
        root.mkdir(parents=True, exist_ok=True)
        _walk_through(root, size_mib, keep=True)
        return
    root = Path(tempfile.mkdtemp(prefix="cpv-demo-")).absolute()
    try:
        _walk_through(root, size_mib, keep=keep)
    finally:
        if not keep:
            try:
                shutil.rmtree(root)
            except OSError as e:
                output.warning(f"Could not remove the demo's folder {root}: {e}")


def _walk_through(root: Path, size_mib: int, *, keep: bool) -> None:
    env = {**os.environ, "CPV_HOME": str(root / "cpv-home"), "DVC_NO_ANALYTICS": "1",
           "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    for var, value in (("GIT_AUTHOR_NAME", "cpv demo"), ("GIT_AUTHOR_EMAIL", "demo@cpv.invalid"),
                       ("GIT_COMMITTER_NAME", "cpv demo"),
                       ("GIT_COMMITTER_EMAIL", "demo@cpv.invalid")):
        env.setdefault(var, value)
    repo = root / MODEL
    output.info(f"cpv demo in {root}\nCPV_HOME={env['CPV_HOME']} (embedded default: a bare git "
                "remote and a DVC storage folder under it)")

    _run(["init", "--team", TEAM, "--model", MODEL, "--path", str(repo)], env=env, cwd=root)

    size = size_mib * 1024 * 1024
    first = _checkpoint(repo / "model.bin", 1, size)
    output.info(f"\n# training wrote model.bin ({size_mib} MiB, md5 {first})")
    _run(["model", "upload", "--metric", "accuracy=0.81", "--metric", "wer=0.192",
          "-m", "epoch 1"], env=env, cwd=repo)
    _run(["model", "tag"], env=env, cwd=repo)

    second = _checkpoint(repo / "model.bin", 2, size)
    output.info(f"\n# training overwrote model.bin in place (md5 {second})")
    _run(["model", "upload", "--metric", "accuracy=0.86", "--metric", "wer=0.151",
          "-m", "epoch 2"], env=env, cwd=repo)
    _run(["model", "tag"], env=env, cwd=repo)
    _run(["model", "upload", "--metric", "accuracy=0.86", "--metric", "wer=0.151"],
         env=env, cwd=repo)

    _run(["model", "list"], env=env, cwd=repo)
    _run(["model", "show", "v0.1"], env=env, cwd=repo)
    _run(["model", "diff", "v0.1", "v0.2"], env=env, cwd=repo)

    downloads = root / "downloads" / "v0.1"
    _run(["model", "download", "v0.1", "-o", str(downloads)], env=env, cwd=repo)
    got = hashlib.md5((downloads / "model.bin").read_bytes(), usedforsecurity=False).hexdigest()
    output.info(f"# downloaded v0.1 md5 {got}: {'matches' if got == first else 'DIFFERS FROM'} "
                "what was uploaded; the working tree still holds v0.2")

    _run(["model", "revert", "v0.1"], env=env, cwd=repo)
    now = hashlib.md5((repo / "model.bin").read_bytes(), usedforsecurity=False).hexdigest()
    output.info(f"# model.bin in the working tree is v0.1 again: "
                f"{'yes' if now == first else 'NO'}")
    log = subprocess.run(["git", "log", "--oneline", "--decorate"], cwd=repo, env=env,
                         capture_output=True, text=True, check=True).stdout
    output.step("\n$ git log --oneline --decorate")
    click.echo(log.rstrip())
    if got != first or now != first:
        raise click.ClickException("the demo's checks failed")
    if keep:
        output.success(f"\nDemo finished. Explore it: cd {repo} && cpv model list")
    else:
        output.success(f"\nDemo finished; its folder {root} is removed ('cpv demo --keep' "
                       "keeps it to explore).")
