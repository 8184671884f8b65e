"""``cpv init``: create, clone or adopt a model's repository."""

from __future__ import annotations

from pathlib import Path

import click

from cp_manage.cli import output


@click.command(help="Create the repository of a model (or clone it when the team has one).")
@click.option("--team", required=True, help="The team, e.g. AI-Convo.")
@click.option("--model", required=True, help="The model, e.g. faster-whisper.")
@click.option("--path", type=click.Path(file_okay=False),
              help="Where the repository goes (default: ./MODEL).")
@click.option("--git-url", help="The git remote (default: from git_url_template, else a local "
              "bare repository under CPV_HOME).")
@click.option("--storage-url", help="The DVC storage remote (default: from "
              "storage_url_template, else a folder under CPV_HOME).")
@click.option("--artifact", metavar="NAME", help="The model artifact: a file name (default "
              "model.bin; e.g. model.safetensors) or a folder name ending in '/' (e.g. "
              "checkpoint/). Chosen once per repository.")
@click.option("--force", is_flag=True, help="Initialise inside a non-empty folder.")
def init(team: str, model: str, path: str | None, git_url: str | None,
         storage_url: str | None, artifact: str | None, force: bool) -> None:
    from cp_manage.manage.models import ModelsCheckpointsManage

    repo_path = Path(path) if path else Path.cwd() / model
    manager = ModelsCheckpointsManage(team_name=team, model_name=model, repo_path=repo_path)
    result = manager.import_model_init(force=force, git_url=git_url, storage_url=storage_url,
                                       artifact=artifact)
    if not result.created:
        output.info(f"{result.path} is already initialised for {team}/{model}; nothing changed.")
        return
    verb = "Cloned" if result.cloned else "Initialised"
    output.success(f"{verb} {team}/{model} in {result.path}")
    output.info(f"  git remote:     {result.git_url}")
    output.info(f"  storage remote: {result.storage_url}")
    output.info(f"  model artifact: {manager.spec.name}")
