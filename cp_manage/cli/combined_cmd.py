"""``cpv combined ...``: release, restore and show a model together with its data."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from cp_manage.cli import output
from cp_manage.cli.checkpoints import repo_start, without_clone

if TYPE_CHECKING:
    from cp_manage.manage.combined import CombinedCheckpointsManage

repo_option = click.option("--repo", type=click.Path(file_okay=False),
                           help="The repository (default: the one holding the current "
                           "directory).")


def _manager(repo: str | None, team: str | None = None,
             model: str | None = None) -> CombinedCheckpointsManage:
    from cp_manage.config import CPVConfig
    from cp_manage.manage.combined import CombinedCheckpointsManage

    return CombinedCheckpointsManage(team_name=team, model_name=model,
                                     repo_path=repo_start(repo, team, model), config=CPVConfig())


@click.group(name="combined", help="Release, restore and show a model with its data "
             "(vX.Y and data/vX.Y on one commit, pushed atomically).")
def combined() -> None:
    pass


@combined.command(help="Tag HEAD's model vX.Y and data data/vX.Y in one atomic push: the next "
                  "version free in both sequences, --major, or VERSION.")
@click.argument("version", required=False)
@click.option("--major", is_flag=True, help="Bump the major version (v1.3 -> v2.0).")
@click.option("-m", "--message", help="The tag message (both tags).")
@click.option("--data-message", help="Another message for the data tag.")
@repo_option
def tag(version: str | None, major: bool, message: str | None, data_message: str | None,
        repo: str | None) -> None:
    if version is not None and major:
        raise click.UsageError("Give either VERSION or --major, not both.")
    result = _manager(repo).tag(version, major=major, model_message=message,
                                data_message=data_message)
    if result.created:
        output.success(f"Tagged {result.model_tag} and {result.data_tag}")
    else:
        output.info(f"HEAD is already {result.model_tag} and {result.data_tag}; nothing to tag.")


@combined.command(help="Bring back VERSION's model and its data in one new commit.")
@click.argument("version")
@click.option("--force", is_flag=True, help="Discard changes that were never uploaded.")
@repo_option
def revert(version: str, force: bool, repo: str | None) -> None:
    manager = _manager(repo)
    with output.transfer_progress("restoring model and data",
                                  resumed_where="received") as progress:
        commit = manager.revert_model_and_data(version, force, progress=progress)
    if commit is None:
        output.info(f"HEAD already holds {version}'s model and data; nothing changed.")
    else:
        output.success(f"Reverted model and data to {version} as commit {commit[:10]}")


@combined.command(help="The model and data of VERSION (default: HEAD) and their lineage.")
@click.argument("version", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
@without_clone("show (no VERSION: the latest one)")
@repo_option
def show(version: str | None, as_json: bool, team_name: str | None, model_name: str | None,
         repo: str | None) -> None:
    result = _manager(repo, team_name, model_name).get_combined_metadata(version, record=True)
    if as_json:
        output.print_json(result)
        return
    model, data, lineage = result["model"], result["data"], result["lineage"]
    rows = [_row("version", model.get("version") or "HEAD",
                 data.get("version") or "HEAD" if data else "-")]
    for key in ("tag", "commit", "created_at", "md5", "size_bytes", "file_count",
                "sample_count"):
        rows.append(_row(key, model.get(key), data.get(key) if data else None))
    rows.append(_row("metrics", output.format_metrics(model.get("metrics") or {}), None))
    output.table(["", "model", "data"], rows)
    output.info(f"trained on: {lineage['data_version'] or '-'}"
                + ("" if lineage["trained_on_this_data"] or data is None else
                   " (not the data shown: the model's commit holds other data)"))


@combined.command(help="Write one self-contained HTML report of the model and data versions "
                  "(charts, tables, stages, lineage, files changed), built from git alone; "
                  "it opens offline. Prints its path.")
@click.option("-o", "--output", "output_file", type=click.Path(dir_okay=False),
              help="The HTML file (default: ./MODEL-combined-report.html, or beside the "
              "repository when run inside it).")
@without_clone("report")
@repo_option
def report(output_file: str | None, team_name: str | None, model_name: str | None,
           repo: str | None) -> None:
    from cp_manage.cli.pictures import write_and_say

    write_and_say(_manager(repo, team_name, model_name), output_file, "combined", model_name)


def _row(name: str, model: Any, data: Any) -> list[str]:
    def text(value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, str) and len(value) == 40 and name == "commit":
            return value[:10]
        if name == "size_bytes" and isinstance(value, int):
            return output.human_size(value)
        return str(value)

    return [name, text(model), text(data)]
