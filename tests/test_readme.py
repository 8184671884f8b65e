"""The README's examples run as written: the command-line quick start and the Python one."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def block_after(heading: str, language: str) -> str:
    text = README.read_text(encoding="utf-8")
    section = text[text.index(heading):]
    match = re.search(rf"```{language}\n(.*?)```", section, re.S)
    assert match, f"no {language} block after {heading!r}"
    return match.group(1)


def test_the_two_commands_come_first() -> None:
    first = block_after("# cpv", "bash").strip().splitlines()
    assert [line.split("#")[0].strip() for line in first] == ["make demo", "make test"]
    makefile = (README.parent / "Makefile").read_text()
    assert "cpv demo" in makefile and "pytest" in makefile
    assert "make test" in (README.parent / ".ci" / "run").read_text()


def test_command_line_quick_start(tmp_path: Path) -> None:
    script = block_after("## Quick start (command line)", "bash")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    assert "tagged v0.1" in result.stdout
    assert "Tagged v0.3 and data/v0.3" in result.stdout
    assert "trained on: data/v0.3" in result.stdout
    assert (tmp_path / "elsewhere" / "v0.3" / "model.bin").read_bytes() == b"weights"
    assert (tmp_path / "faster-whisper" / "model.bin").read_bytes() == b"weights"


def test_python_quick_start(tmp_path: Path) -> None:
    exec(compile(block_after("## Quick start (Python)", "python"), str(README), "exec"),
         {"workdir": tmp_path})


def test_model_artifacts_section(tmp_path: Path) -> None:
    script = block_after("## Model artifacts", "bash").replace("/tmp/", f"{tmp_path}/")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    whole = tmp_path / "bert-v0.1"
    assert sorted(p.relative_to(whole).as_posix() for p in whole.rglob("*") if p.is_file()) == [
        "config.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
        "tokenizer/tokenizer.json"]
    part = tmp_path / "bert-weights"
    assert sorted(p.name for p in part.iterdir()) == [
        "config.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]


def test_background_uploads_section(tmp_path: Path) -> None:
    exec(compile(block_after("## Background uploads", "python"), str(README), "exec"),
         {"workdir": tmp_path})
