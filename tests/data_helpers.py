"""Helpers for the dataset and combined-release tests: building datasets on disk, the managers
of a test repository, and snapshots proving an operation changed nothing.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from helpers import ModelRepo, files_under

from cp_manage import CombinedCheckpointsManage, DataCheckpointsManage
from cp_manage.backends.storage import LocalStorage

# The seed's layout: train/, validation/, test/. Samples: 3 + 2 + 2 jsonl lines, 2 csv rows
# (a header line is not a sample), 1 image file.
SEED_DATASET: dict[str, bytes] = {
    "train/part-0.jsonl": b'{"text": "a"}\n{"text": "b"}\n{"text": "c"}\n',
    "train/labels.csv": b"id,label\n1,cat\n2,dog\n",
    "train/images/0001.png": bytes(range(256)) * 4,
    "validation/part-0.jsonl": b'{"text": "d"}\n{"text": "e"}\n',
    "test/part-0.jsonl": b'{"text": "f"}\n\n{"text": "g"}',
}
SEED_SAMPLES = 3 + 2 + 1 + 2 + 2
SEED_SPLITS = {"test": 1, "train": 3, "validation": 1}

# Names that must round-trip through cpv and through stock `dvc pull`.
ODD_NAMES: dict[str, bytes] = {
    "train/with space.txt": b"space\n",
    "train/new\nline.txt": b"newline\n",
    "train/caf\u00e9-\u6570\u636e-\U0001f600.txt": b"unicode\n",
    "train/sub dir/\u00fcber.jsonl": b'{"x": 1}\n',
    "odd \u2014 top.txt": b"top\n",
}


def write_dataset(root: Path, files: dict[str, bytes]) -> Path:
    """Create ``root`` holding ``files`` (relative path → bytes); returns ``root``."""
    for relpath, content in files.items():
        path = root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    root.mkdir(parents=True, exist_ok=True)
    return root


def data_manager(repo: ModelRepo) -> DataCheckpointsManage:
    return DataCheckpointsManage(repo_path=repo.root)


def combined_manager(repo: ModelRepo) -> CombinedCheckpointsManage:
    return CombinedCheckpointsManage(repo_path=repo.root)


def storage_oids(repo: ModelRepo) -> set[str]:
    return set(LocalStorage(repo.storage).iter_oids())


def data_snapshot(repo: ModelRepo) -> dict[str, Any]:
    """``repo.snapshot()`` plus the dataset in the working tree and its pointer."""
    snapshot = repo.snapshot()
    snapshot["data"] = files_under(repo.root / "data")
    pointer = repo.root / "data.dvc"
    snapshot["data.dvc"] = pointer.read_bytes() if pointer.exists() else None
    snapshot["leftovers"] = sorted(name for name in os.listdir(repo.root)
                                   if ".cpv-" in name)
    return snapshot


def upload_model(repo: ModelRepo, metrics: dict[str, Any] | None = None, *,
                 seed: int | None = None) -> str:
    """Write fresh weights and upload them; returns the commit."""
    return repo.upload(metrics, seed=seed)[1]
