"""Helpers for the model-artifact tests: a Hugging Face style checkpoint folder, a repository
whose model is a folder, and a fingerprint proving a source was left exactly as it was.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from helpers import ModelRepo

from cp_manage import ModelsCheckpointsManage

SHARDS = [f"model-0000{i}-of-00004.safetensors" for i in range(1, 5)]
SHARD_SIZE = 64 * 1024


def write_hf_folder(root: Path, *, seed: int = 0) -> Path:
    """A ``save_pretrained``-style folder: config, 4 shards and their index, tokenizer files, a
    nested folder, a name with a space, a non-ASCII name, and a symlink to a file beside it."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text(json.dumps({"model_type": "bert", "seed": seed}))
    for index, name in enumerate(SHARDS):
        (root / name).write_bytes(bytes([index + 1]) * SHARD_SIZE + seed.to_bytes(4, "big"))
    index_map = {f"layer.{i}": name for i, name in enumerate(SHARDS)}
    (root / "model.safetensors.index.json").write_text(json.dumps({"weight_map": index_map}))
    (root / "tokenizer.json").write_text('{"version": "1.0"}')
    (root / "tokenizer" / "vocab").mkdir(parents=True, exist_ok=True)
    (root / "tokenizer" / "vocab" / "merges.txt").write_text("a b\nc d\n")
    (root / "special tokens.json").write_text('{"pad": "[PAD]"}')
    (root / "caf\u00e9-\u6570\u636e.json").write_text('{"unicode": true}')
    (root / "generation_config.json").symlink_to("config.json")
    return root


def file_bytes(root: Path) -> dict[str, bytes]:
    """Every file below ``root`` (following links), relative path → content."""
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


def fingerprint(root: Path) -> dict[str, Any]:
    """Everything about a source tree an upload must not change: each entry's type, bytes (or
    link target), mode, mtime and link count, and the parent folder's list of names."""
    entries: dict[str, Any] = {"..": sorted(os.listdir(root.parent))}
    for path in sorted([root, *root.rglob("*")]):
        info = os.lstat(path)
        key = path.relative_to(root).as_posix()
        content: bytes | str | None = None
        if path.is_symlink():
            content = os.readlink(path)
        elif path.is_file():
            content = path.read_bytes()
        entries[key] = (info.st_mode, info.st_mtime_ns, info.st_nlink, info.st_ino, content)
    return entries


def init_folder_repo(root: Path, cpv_home: Path, artifact: str = "checkpoint/") -> ModelRepo:
    ModelsCheckpointsManage(team_name="AI-Convo", model_name="bert-large",
                            repo_path=root).import_model_init(artifact=artifact)
    return ModelRepo(root=root, cpv_home=cpv_home, model="bert-large")
