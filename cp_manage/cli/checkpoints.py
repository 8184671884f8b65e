"""``cpv model ...`` and ``cpv data ...``: one set of commands for both kinds of checkpoint."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from cp_manage.cli import output
from cp_manage.cli.gc_cmd import make_du, make_gc
from cp_manage.cli.stages_cmd import add_stage_commands, printable

if TYPE_CHECKING:
    from cp_manage.manage.base import CheckpointManager
    from cp_manage.manage.combined import CombinedCheckpointsManage
    from cp_manage.manage.registry import ListEntry

Command = TypeVar("Command", bound=Callable[..., Any])


@dataclass(frozen=True)
class Wording:
    """How the commands of one group speak of their artifact: presentation only; what differs
    in behaviour is the artifact's ``ArtifactSpec``, in the library."""

    noun: str
    what: str
    default_path: str
    head: str
    list_help: str
    list_columns: tuple[str, str]
    diff_help: str
    has_metrics: bool
    download_infix: str


WORDING = {
    "model": Wording(
        noun="checkpoint", what="model checkpoint (a file, or a folder chosen with 'cpv init "
        "--artifact NAME/')", default_path="the repository's model artifact (model.bin, or "
        "the NAME given to 'cpv init --artifact')", head="HEAD", list_help="metrics.",
        list_columns=("data", "metrics"), diff_help="metrics with deltas (for a folder, also "
        "the files added, removed, modified, with their sizes).", has_metrics=True,
        download_infix=""),
    "data": Wording(
        noun="dataset", what="training data (the data/ folder)", default_path="data/",
        head="HEAD's dataset", list_help="file and sample counts.",
        list_columns=("files", "samples"), diff_help="counts with deltas, and the files "
        "added, removed, modified.", has_metrics=False, download_infix="data-"),
}


def without_clone(verb: str) -> Callable[[Command], Command]:
    """The options ``--team`` and ``--model`` (parameters ``team_name``, ``model_name``):
    ``verb`` from the configured remotes alone when there is no clone (``./MODEL``, ``--repo``).
    """

    def apply(command: Command) -> Command:
        command = click.option("--model", "model_name", help="With --team: the model.")(command)
        return click.option("--team", "team_name", help=f"With --model: {verb} without a "
                            "clone, from the configured remotes.")(command)

    return apply


def repo_start(repo: str | None, team: str | None, model: str | None) -> Path:
    """Where to look for the repository: ``repo``, else ``./MODEL`` when a model is named,
    else the current directory."""
    if (team is None) != (model is None):
        raise click.UsageError("Give --team and --model together.")
    return Path(repo) if repo else (Path.cwd() / model if model else Path.cwd())


def _manager(kind: str, repo: str | None, *, team: str | None = None,
             model: str | None = None) -> CheckpointManager:
    """The manager for the repository holding ``repo`` (or the current directory); with team
    and model and no ``repo``, the clone at ``./MODEL`` or, without one, the remotes alone."""
    from cp_manage.config import CPVConfig

    start = repo_start(repo, team, model)
    config = CPVConfig()
    from cp_manage.manage.data import DataCheckpointsManage
    from cp_manage.manage.models import ModelsCheckpointsManage

    manager_class: type[CheckpointManager] = {
        "model": ModelsCheckpointsManage, "data": DataCheckpointsManage}[kind]
    return manager_class(team_name=team, model_name=model, repo_path=start, config=config)


def parse_metric(text: str) -> tuple[str, Any]:
    """``K=V``: V as a number (``nan``, ``inf`` and ``-inf`` included, as the API takes
    ``float("nan")``), else as JSON when it parses (true/false, a quoted string), else as text,
    with a warning: ``accuracy=0,81`` is most likely a typo for a number."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise click.BadParameter(f"{text!r} is not KEY=VALUE", param_hint="--metric")
    try:
        number = float(raw)  # also reads nan, inf, -inf, Infinity, in any case
    except ValueError:
        number = 0.0
    if not math.isfinite(number):
        return key, number
    try:
        value = json.loads(raw)
    except ValueError:
        hint = (f"Write {raw.replace(',', '.')} for a number" if
                re.fullmatch(r"\s*[-+]?\d+,\d+\s*", raw) else
                f"Quote it ({key}='\"{raw}\"') to record text on purpose")
        output.warning(f"metric {key}: {raw!r} is not a number; recorded as text. {hint}.")
        value = raw
    return key, value


def _load_metrics(metric: tuple[str, ...], metrics_file: str | None) -> dict[str, Any] | None:
    if not metric and not metrics_file:
        return None
    values: dict[str, Any] = {}
    if metrics_file:
        from cp_manage.errors import CPVError

        try:
            loaded = json.loads(Path(metrics_file).read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise CPVError(f"Cannot read metrics from {metrics_file}: {e}",
                           hint="Pass a JSON file holding one object.") from e
        if not isinstance(loaded, dict):
            raise CPVError(f"{metrics_file} must hold a JSON object")
        values.update(loaded)
    given: set[str] = set()
    for text in metric:
        key, value = parse_metric(text)
        if key in given or key in values:
            where = "twice" if key in given else f"in {metrics_file} and with --metric"
            raise click.BadParameter(f"metric {key!r} is given {where}; give each metric once",
                                     param_hint="--metric")
        given.add(key)
        values[key] = value
    return values


def _version_row(info: Any, words: Wording) -> list[str]:
    created = (info.created_at or "")[:19].replace("T", " ")
    row = [info.version or "HEAD", created, output.human_size(info.size_bytes), info.md5[:10]]
    if words.has_metrics:
        row += [info.data_version or "-", output.format_metrics(info.metrics)]
    else:
        row += [_fmt(info.file_count), _fmt(info.sample_count)]
    return row


def _entry_row(entry: ListEntry, words: Wording, *, full: bool, staged: bool) -> list[str]:
    """A listing's row: the version (``(retired)`` when it is), with ``full`` its commit and
    message, and its stages when any version has one."""
    info = entry.info
    row = _version_row(info, words)
    row[0] = (info.version or "-") + (" (retired)" if entry.retired else "")
    if full:
        row.insert(1, (info.commit or "-")[:10])
    if staged:
        row.append(", ".join(entry.stages) or "-")
    if full:
        row.append(printable(info.message))
    return row


def make_group(kind: str) -> click.Group:
    """The command group for ``kind`` ("model" or "data")."""
    words = WORDING[kind]
    noun = words.noun
    repo_option = click.option("--repo", type=click.Path(file_okay=False),
                               help="The repository (default: the one holding the current "
                               "directory).")

    what = words.what
    @click.group(name=kind, help=f"Upload, version, list and fetch the {what}.")
    def group() -> None:
        pass

    default_path = words.default_path

    @group.command(help=f"Store the {noun} and commit it. PATH (default: {default_path}) may "
                   "be any file or folder of the right kind, anywhere: it is only read, and "
                   "the workspace then holds a private copy. Only changed files are sent.")
    @click.argument("path", required=False)
    @click.option("--metric", multiple=True, metavar="K=V", help="A metric; repeatable.")
    @click.option("--metrics-file", type=click.Path(dir_okay=False),
                  help="A JSON file of metrics.")
    @click.option("-m", "--message", help="The commit message.")
    @click.option("--force", is_flag=True, help="Replace workspace changes that were never "
                  "uploaded (when PATH is elsewhere).")
    @repo_option
    def upload(path: str | None, metric: tuple[str, ...], metrics_file: str | None,
               message: str | None, force: bool, repo: str | None) -> None:
        metrics = _load_metrics(metric, metrics_file)
        if metrics is not None and not words.has_metrics:
            raise click.UsageError("A dataset has no metrics; give them to "
                                   "'cpv model upload'.")
        manager = _manager(kind, repo)
        source = Path(path).absolute() if path else None
        with output.transfer_progress(f"uploading {kind}") as progress:
            result = manager.upload(source, metrics=metrics, message=message,
                                    progress=progress, force=force)
        if result.changed:
            output.success(f"Uploaded {kind} {result.md5[:10]} "
                           f"({output.human_size(result.size_bytes)}, "
                           f"{output.human_size(result.uploaded_bytes)} transferred) "
                           f"as commit {result.commit[:10]}")
        else:
            resent = (f"; {output.human_size(result.uploaded_bytes)} missing from storage "
                      "sent again" if result.uploaded_bytes else "")
            output.info(f"The {kind} and its metrics are unchanged; no new commit "
                        f"(HEAD {result.commit[:10]}){resent}.")

    @group.command(help="Give HEAD (or, with --commit, an earlier upload) a version: the next "
                   "minor one, --major, or VERSION.")
    @click.argument("version", required=False)
    @click.option("--major", is_flag=True, help="Bump the major version (v1.3 -> v2.0).")
    @click.option("-m", "--message", help="The tag message.")
    @click.option("--commit", metavar="REV", help="Tag this earlier upload (a commit from "
                  f"'cpv {kind} list --all'); storage must still hold it.")
    @repo_option
    def tag(version: str | None, major: bool, message: str | None, commit: str | None,
            repo: str | None) -> None:
        if version is not None and major:
            raise click.UsageError("Give either VERSION or --major, not both.")
        result = _manager(kind, repo).tag(version, major=major, message=message, commit=commit)
        if result.created:
            output.success(f"Tagged {result.tag}")
        elif commit is not None:
            output.info(f"Commit {commit} is already {result.tag}; nothing to tag.")
        else:
            output.info(f"{words.head} is already {result.tag}; nothing to tag.")

    def sorting(command: Command) -> Command:
        if not words.has_metrics:
            return command
        command = click.option("--desc", is_flag=True, help="With --sort: highest first.")(
            command)
        return click.option("--sort", "sort", metavar="METRIC", help="Order by METRIC, lowest "
                            "first (versions without it last).")(command)

    @group.command(name="list", help=f"Versions, oldest first, with their {words.list_help} "
                   "and stages; retired versions are hidden.")
    @click.option("--all", "show_all", is_flag=True, help="Also retired versions (marked) and "
                  "the uploads no version names (by commit).")
    @sorting
    @click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
    @without_clone("list")
    @repo_option
    def list_(show_all: bool, as_json: bool, team_name: str | None, model_name: str | None,
              repo: str | None, sort: str | None = None, desc: bool = False) -> None:
        if desc and sort is None:
            raise click.UsageError("--desc goes with --sort METRIC.")
        entries = _manager(kind, repo, team=team_name, model=model_name).list_entries(
            all=show_all, sort=sort, descending=desc)
        if as_json:
            output.print_json([entry.to_dict() for entry in entries])
            return
        if not entries:
            output.info(f"No {kind} versions of {team_name}/{model_name} yet." if model_name else
                        f"No {kind} versions yet. Run 'cpv {kind} upload' and 'cpv {kind} tag'.")
            return
        staged = any(entry.stages for entry in entries)
        columns = ["version", *(["commit"] if show_all else []), "created (UTC)", "size", "md5",
                   *words.list_columns, *(["stages"] if staged else []),
                   *(["message"] if show_all else [])]
        output.table(columns, [_entry_row(entry, words, full=show_all, staged=staged)
                               for entry in entries])

    @group.command(help="The metadata of VERSION (a version, a stage such as production, or a "
                   "commit; default: HEAD).")
    @click.argument("version", required=False)
    @click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
    @without_clone("show (no VERSION: the latest one)")
    @repo_option
    def show(version: str | None, as_json: bool, team_name: str | None,
             model_name: str | None, repo: str | None) -> None:
        entry = _manager(kind, repo, team=team_name, model=model_name).describe_version(version)
        info, data = entry.info, entry.to_dict()
        if as_json:
            output.print_json(data)
            return
        for key in ("version", "tag", "commit", "created_at", "author", "message", "path",
                    "md5", "size_bytes", "file_count", "splits", "sample_count",
                    "data_version"):
            if data.get(key) is not None:
                output.info(f"{key:>12}: {data[key]}")
        output.info(f"{'metrics':>12}: {output.format_metrics(info.metrics)}")
        if entry.stages:
            output.info(f"{'stages':>12}: {', '.join(entry.stages)}")
        if entry.retired:
            gone = entry.retired
            output.info(f"{'retired':>12}: {gone.created_at} by {printable(gone.author)} "
                        f"({gone.tag}): {printable(gone.message)}")

    @group.command(help=f"Compare two versions (or stages, or commits) side by side: "
                   f"{words.diff_help}")
    @click.argument("old")
    @click.argument("new")
    @click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
    @without_clone("compare")
    @repo_option
    def diff(old: str, new: str, as_json: bool, team_name: str | None,
             model_name: str | None, repo: str | None) -> None:
        result = _manager(kind, repo, team=team_name, model=model_name).diff(old, new)
        if as_json:
            output.print_json(result)
            return
        a, b = result["old"], result["new"]
        rows = [[name, _fmt(r["old"]), _fmt(r["new"]), _fmt_delta(r["delta"])]
                for name, r in {**result["metrics"], **result.get("stats", {})}.items()]
        rows.append(["size", output.human_size(a["size_bytes"]),
                     output.human_size(b["size_bytes"]),
                     output.human_size_delta(result["size_delta_bytes"])])
        output.table(["", a["version"] or "HEAD", b["version"] or "HEAD", "delta"], rows)
        if result.get("files") is not None:
            output.info(", ".join(f"{len(names)} {change}"
                                  for change, names in result["files"].items()) + " files")
        if result.get("file_changes"):
            output.table(["file", "change", "old size", "new size"], [
                [row["path"], row["change"], _size(row["old_size"]), _size(row["new_size"])]
                for row in result["file_changes"]])

    @group.command(help="Fetch VERSION (a version, a stage such as production, or a commit; "
                   "default: HEAD) into a folder; the working tree and HEAD are never touched.")
    @click.argument("version", required=False)
    @click.option("-o", "--output", "output_dir", type=click.Path(file_okay=False),
                  help="Folder to write into (default: ./{model}-{version}, or beside the "
                  "repository when the current directory is inside it).")
    @click.option("--force", is_flag=True, help="Replace different files already there.")
    @click.option("--team", help="With --model: fetch without a clone, from the configured "
                  "remotes.")
    @click.option("--model", help="With --team: the model to fetch.")
    @click.option("--include", multiple=True, metavar="GLOB", help="For a folder: fetch only "
                  "files whose path, name or folder matches GLOB; repeatable.")
    @click.option("--exclude", multiple=True, metavar="GLOB", help="For a folder: skip files "
                  "whose path, name or folder matches GLOB; repeatable.")
    @repo_option
    def download(version: str | None, output_dir: str | None, force: bool, team: str | None,
                 model: str | None, include: tuple[str, ...], exclude: tuple[str, ...],
                 repo: str | None) -> None:
        manager = _manager(kind, repo, team=team, model=model)
        if output_dir is None:
            output_dir = str(_default_download_dir(kind, manager, version, model))
        with output.transfer_progress(f"downloading {kind}",
                                      resumed_where="received") as progress:
            path, info = manager.download(version, output_dir=output_dir, progress=progress,
                                          include=include, exclude=exclude, force=force)
        output.success(f"Downloaded {kind} {info.version or 'HEAD'} to {path} "
                       f"(md5 {info.md5} verified)")

    @group.command(help="Bring VERSION (a version, a stage or a commit) back into the working "
                   "tree as a new commit.")
    @click.argument("version")
    @click.option("--force", is_flag=True, help="Discard changes that were never uploaded.")
    @repo_option
    def revert(version: str, force: bool, repo: str | None) -> None:
        manager = _manager(kind, repo)
        with output.transfer_progress(f"restoring {kind}",
                                      resumed_where="received") as progress:
            commit = manager.revert(version, force=force, progress=progress)
        if commit is None:
            output.info(f"HEAD already holds {version}; nothing changed.")
        else:
            output.success(f"Reverted {kind} to {version} as commit {commit[:10]}")

    add_stage_commands(group, kind, _manager, repo_option, without_clone)
    group.add_command(make_gc((kind,)))
    group.add_command(make_du((kind,)))

    from cp_manage.cli import pictures

    pictures.add_commands(group, kind, repo_option)
    return group


def _default_download_dir(kind: str, manager: CheckpointManager, version: str | None,
                          model: str | None) -> Path:
    """``./{model}-{version}``, or beside the repository (see ``default_place``)."""
    folder, name = default_place(manager, model)
    label = version or ("latest" if model else "HEAD")
    return folder / f"{name}-{WORDING[kind].download_infix}{label.removeprefix('data/')}"


def default_place(manager: CheckpointManager | CombinedCheckpointsManage,
                  model: str | None) -> tuple[Path, str]:
    """Where what cpv writes for the user goes without ``-o``, and the model's name: the current
    directory, or beside the repository when the current directory is inside its working tree
    (a download or a report never lands in the working tree unasked)."""
    from cp_manage.errors import NotARepositoryError

    try:
        root: Path | None = manager.repo.root
    except NotARepositoryError:
        if model is None:
            raise
        root = None  # no clone: fetched from the remotes
    name = model or manager.repo.model
    here = Path.cwd()
    return (root.parent if root is not None and here.is_relative_to(root) else here), name


def _fmt(value: Any) -> str:
    return "-" if value is None else (f"{value:.6g}" if isinstance(value, float) else str(value))


def _size(value: int | None) -> str:
    return "-" if value is None else output.human_size(value)


def _fmt_delta(value: Any) -> str:
    return "-" if value is None else f"{value:+.6g}"


def extra_commands() -> list[click.Command]:
    from cp_manage.cli.combined_cmd import combined

    return [combined]
