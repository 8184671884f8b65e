"""``cpv model promote/demote/stages/retire/best`` (and the same for data but ``best``): the
commands around stages, retirement and the best version. Presentation only; the library
records and reads the events (``cp_manage.manage.registry``, ``cp_manage.manage.stages``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from cp_manage.cli import output

if TYPE_CHECKING:
    from cp_manage.manage.base import CheckpointManager
    from cp_manage.manage.stages import StageEvent

ManagerFor = Callable[..., "CheckpointManager"]


def printable(text: str | None, width: int = 60) -> str:
    """One line of ``text`` for a table: its first line, control characters dropped, cut to
    ``width``; ``-`` when empty."""
    line = "".join(c for c in (text or "").split("\n", 1)[0] if c.isprintable())
    if len(line) > width:
        line = line[:width - 1] + "…"
    return line or "-"


def when(event: StageEvent) -> str:
    return event.created_at[:19].replace("T", " ")


def add_stage_commands(group: click.Group, kind: str, manager_for: ManagerFor,
                       repo_option: Callable[[Any], Any],
                       without_clone: Callable[[str], Callable[[Any], Any]]) -> None:
    """Add promote, demote, stages, retire (and for models, best) to ``group``."""
    version_help = ("VERSION may be a version, a stage (its current version) or a commit "
                    "that carries a version.")

    @group.command(help=f"Put VERSION in STAGE (production, staging, ...), recorded as an "
                   f"append-only tag pushed at once. {version_help}")
    @click.argument("version")
    @click.argument("stage")
    @click.option("-m", "--message", help="Why (kept in the stage history).")
    @repo_option
    def promote(version: str, stage: str, message: str | None, repo: str | None) -> None:
        result = manager_for(kind, repo).promote(version, stage, message)
        event = result.event
        if result.created:
            replacing = f" (replacing {event.replaced})" if event.replaced else ""
            output.success(f"Promoted {event.version} to {event.stage}{replacing} as "
                           f"{event.tag}")
        else:
            output.info(f"{event.stage} already holds {event.version}; nothing recorded.")

    @group.command(help="Take the version out of STAGE, which then holds none (recorded as an "
                   "append-only tag pushed at once).")
    @click.argument("stage")
    @click.option("-m", "--message", help="Why (kept in the stage history).")
    @repo_option
    def demote(stage: str, message: str | None, repo: str | None) -> None:
        result = manager_for(kind, repo).demote(stage, message)
        event = result.event
        if result.created:
            output.success(f"Demoted {event.stage} (was {event.replaced}) as {event.tag}")
        else:
            output.info(f"{event.stage} holds no version already; nothing recorded.")

    @group.command(help="Withdraw VERSION: hidden from list and best (shown with list --all), "
                   "never promoted again, its storage reclaimable; its tag and history stay.")
    @click.argument("version")
    @click.option("-m", "--message", help="Why (kept in the history).")
    @repo_option
    def retire(version: str, message: str | None, repo: str | None) -> None:
        result = manager_for(kind, repo).retire(version, message)
        event = result.event
        if result.created:
            output.success(f"Retired {event.version} as {event.tag}")
        else:
            output.info(f"{event.version} was already retired ({event.tag}, "
                        f"{when(event)} UTC); nothing recorded.")

    @group.command(help="Which version each stage holds; --history: every promote, demote and "
                   "retire in order (with STAGE, that stage's).")
    @click.argument("stage", required=False)
    @click.option("--history", is_flag=True, help="Every event in order: seq, when, who, "
                  "action, stage, version, replaced, message.")
    @click.option("--at", "at", metavar="DATE", help="The stages as they were at DATE "
                  "(2025-03-03: the end of that day; or 2025-03-03T14:00:00Z), UTC.")
    @click.option("--json", "as_json", is_flag=True, help="Print a JSON array of events.")
    @without_clone("read the stages")
    @repo_option
    def stages(stage: str | None, history: bool, at: str | None, as_json: bool,
               team_name: str | None, model_name: str | None, repo: str | None) -> None:
        from cp_manage.manage.registry import parse_moment
        from cp_manage.manage.stages import validate_stage_name

        if history and at:
            raise click.UsageError("Give --history or --at, not both.")
        if stage is not None:
            validate_stage_name(stage)
        log = manager_for(kind, repo, team=team_name, model=model_name).stage_log()
        if history:
            events = log.history(stage)
            if as_json:
                output.print_json([e.to_dict() for e in events])
            elif not events:
                output.info(f"No stage history of {stage or 'any stage'} yet.")
            else:
                output.table(
                    ["seq", "when (UTC)", "who", "action", "stage", "version", "replaced",
                     "message"],
                    [[str(e.seq), when(e), printable(e.author, 40), e.action, e.stage or "-",
                      e.version or "-", e.replaced or "-", printable(e.message)]
                     for e in events])
            return
        held = log.at(parse_moment(at)) if at else log.current()
        rows = [e for name, e in held.items() if stage is None or name == stage]
        if as_json:
            output.print_json([e.to_dict() for e in rows])
        elif not rows:
            output.info(f"No stage held a {kind} version then." if at else
                        f"No stage holds a {kind} version. Run 'cpv {kind} promote VERSION "
                        "STAGE'.")
        else:
            output.table(["stage", "version", "since (UTC)", "by", "message"],
                         [[str(e.stage), str(e.version), when(e), printable(e.author, 40),
                           printable(e.message)] for e in rows])

    if kind != "model":
        return

    @group.command(help="Print the best version by METRIC (lowest with --min, highest with "
                   "--max) among those not retired; versions without the metric are skipped "
                   "and named on stderr. Scripts: cpv model promote \"$(cpv model best wer "
                   "--min)\" production")
    @click.argument("metric")
    @click.option("--min", "mode", flag_value="min", help="The lowest value is best.")
    @click.option("--max", "mode", flag_value="max", help="The highest value is best.")
    @click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
    @without_clone("pick")
    @repo_option
    def best(metric: str, mode: str | None, as_json: bool, team_name: str | None,
             model_name: str | None, repo: str | None) -> None:
        if mode is None:
            raise click.UsageError("Give --min or --max.")
        result = manager_for(kind, repo, team=team_name, model=model_name).best(
            metric, "min" if mode == "min" else "max")
        if result.skipped:
            named = ", ".join(f"{v} ({why})" for v, why in result.skipped.items())
            output.warning(f"skipped {len(result.skipped)} version(s) without a usable "
                           f"{metric}: {named}")
        if as_json:
            output.print_json(result.to_dict())
        else:
            output.info(result.version)
