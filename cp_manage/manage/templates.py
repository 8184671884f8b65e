"""The files a new model repository starts with (the seed's "Local Structure")."""

from __future__ import annotations

DVCIGNORE = """# Add patterns of files dvc should ignore, which could improve
# the performance. Learn more at
# https://dvc.org/doc/user-guide/dvcignore
"""


def readme(team: str, model: str) -> str:
    return f"""# {model}

Checkpoints of the model **{model}** of team **{team}**, versioned with
[cpv](https://pypi.org/project/cpv/).

- `model.bin` and `data/` live in the team's storage through DVC (`model.bin.dvc`, `data.dvc`).
- `metrics.log` holds one JSON object per upload; the last line is the current metrics.
- Versions are git tags: `v0.1`, `v0.2`, `v1.0`, ... for the model, `data/v1.0`, ... for data.

```bash
cpv model list                 # versions with their metrics
cpv model download v1.0 -o out # fetch one version
git clone <this repo> && dvc pull  # plain git + DVC work too
```
"""


def train_script(team: str, model: str) -> str:
    return f'''"""Train {model} and version each checkpoint with cpv."""

from pathlib import Path

from cp_manage import ModelsCheckpointsManage

REPO = Path(__file__).resolve().parent


def train() -> dict[str, float]:
    """Replace with your training loop; write the weights to model.bin."""
    (REPO / "model.bin").write_bytes(b"weights")
    return {{"accuracy": 0.0}}


if __name__ == "__main__":
    metrics = train()
    manager = ModelsCheckpointsManage(team_name="{team}", model_name="{model}", repo_path=REPO)
    manager.upload_model_checkpoint(model_path=REPO / "model.bin", metrics=metrics)
    print("tagged", manager.tag_model_checkpoint())
'''
