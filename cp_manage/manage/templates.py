"""The files a new model repository starts with (the seed's "Local Structure")."""

from __future__ import annotations

from cp_manage.spec import ArtifactSpec

DVCIGNORE = """# Add patterns of files dvc should ignore, which could improve
# the performance. Learn more at
# https://dvc.org/doc/user-guide/dvcignore
"""


def readme(team: str, model: str, spec: ArtifactSpec) -> str:
    what = "folder" if spec.tree else "file"
    return f"""# {model}

Checkpoints of the model **{model}** of team **{team}**, versioned with
[cpv](https://pypi.org/project/cpv/).

- `{spec.name}` (the model {what}) and `data/` live in the team's storage through DVC
  (`{spec.pointer_file}`, `data.dvc`).
- `metrics.log` holds one JSON object per upload; the last line is the current metrics.
- Versions are git tags: `v0.1`, `v0.2`, `v1.0`, ... for the model, `data/v1.0`, ... for data.

```bash
cpv model list                 # versions with their metrics
cpv model download v1.0 -o out # fetch one version
git clone <this repo> && dvc pull  # plain git + DVC work too
```
"""


def train_script(team: str, model: str, spec: ArtifactSpec) -> str:
    if spec.tree:
        save = f'''    folder = REPO / "{spec.path}"
    folder.mkdir(exist_ok=True)
    (folder / "weights.bin").write_bytes(b"weights")  # e.g. model.save_pretrained(folder)'''
    else:
        save = f'''    # e.g. torch.save(model, REPO / "{spec.path}")
    (REPO / "{spec.path}").write_bytes(b"weights")'''
    return f'''"""Train {model} and version each checkpoint with cpv."""

from pathlib import Path

from cp_manage import ModelsCheckpointsManage

REPO = Path(__file__).resolve().parent


def train() -> dict[str, float]:
    """Replace with your training loop; write the checkpoint to {spec.name}."""
{save}
    return {{"accuracy": 0.0}}


if __name__ == "__main__":
    metrics = train()
    manager = ModelsCheckpointsManage(team_name="{team}", model_name="{model}", repo_path=REPO)
    manager.upload_model_checkpoint(model_path=REPO / "{spec.path}", metrics=metrics)
    print("tagged", manager.tag_model_checkpoint())
'''
