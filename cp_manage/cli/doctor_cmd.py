"""``cpv doctor``: do the clone, the git remote and storage agree?"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from cp_manage.cli import output


def print_findings(findings: list, as_json: bool) -> None:  # type: ignore[type-arg]
    if as_json:
        output.print_json([f.to_dict() for f in findings])
        return
    marks = {"passed": click.style("ok  ", fg="green"), "failed": click.style("FAIL", fg="red"),
             "skipped": click.style("skip", fg="yellow")}
    for finding in findings:
        output.info(f"{marks[finding.status]} {finding.check:<17} {finding.detail}")
        for item in (finding.items or [])[:SHOWN_ITEMS]:
            output.info(f"     {'':<17} - {_describe(item)}")
        if len(finding.items or []) > SHOWN_ITEMS:
            output.info(f"     {'':<17} - ... and {len(finding.items or []) - SHOWN_ITEMS} more "
                        "(--json lists them all)")
        if finding.fix:
            output.info(f"     {'':<17} fix: {finding.fix}")


SHOWN_ITEMS = 10


def _describe(item: dict[str, Any]) -> str:
    """One partial transfer: where, how big, how old, and whether a process holds it."""
    age = float(item.get("age_seconds", 0))
    ago = (f"{age / 86400:.1f} d" if age >= 86400 else f"{age / 3600:.1f} h" if age >= 3600
           else f"{age / 60:.0f} min" if age >= 60 else f"{age:.0f} s")
    held = ", in use" if item.get("in_use") else ""
    return (f"{item.get('kind')} {item.get('where')} ({output.human_size(int(item['size']))}, "
            f"{ago} old{held})")


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class Duration(click.ParamType[float]):
    """``90s``, ``30m``, ``24h``, ``2d`` (a bare number is seconds) → seconds."""

    name = "DURATION"

    def convert(self, value: object, param: click.Parameter | None,
                ctx: click.Context | None) -> float:
        if isinstance(value, int | float):
            return float(value)
        text = str(value).strip().lower()
        unit = _UNITS.get(text[-1:]) if text else None
        number = text[:-1] if unit else text
        try:
            seconds = float(number) * (unit or 1)
        except ValueError:
            seconds = -1.0
        if not seconds >= 0 or seconds == float("inf"):
            self.fail(f"{value!r} is not a duration such as 90s, 30m, 24h or 2d", param, ctx)
        return seconds


@click.command(help="Check that every version's commits, tags and objects are where they "
               "belong, and look for partial transfers left by interrupted runs; --repair "
               "mends what it can.")
@click.option("--repair", is_flag=True, help="Push missing commits, tags and objects; remove "
              "corrupt cache entries and temporary files; abort unfinished uploads and remove "
              "partial files older than --grace.")
@click.option("--grace", type=Duration(), default="24h", show_default=True,
              help="Partial transfers younger than this may belong to a transfer still "
              "running elsewhere: they are listed, never removed.")
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
@click.option("--repo", type=click.Path(file_okay=False),
              help="The repository (default: the one holding the current directory).")
def doctor(repair: bool, grace: float, as_json: bool, repo: str | None) -> None:
    from cp_manage.config import CPVConfig
    from cp_manage.manage.doctor import run_doctor
    from cp_manage.manage.repository import Repository

    repository = Repository.open(Path(repo) if repo else Path.cwd(), config=CPVConfig())
    report = run_doctor(repository, repair=repair, grace=grace)
    print_findings(report.findings, as_json)
    if not report.ok:
        raise SystemExit(1)
