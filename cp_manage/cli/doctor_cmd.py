"""``cpv doctor``: do the clone, the git remote and storage agree?"""

from __future__ import annotations

from pathlib import Path

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
        if finding.fix:
            output.info(f"     {'':<17} fix: {finding.fix}")


@click.command(help="Check that every version's commits, tags and objects are where they "
               "belong; --repair mends what it can.")
@click.option("--repair", is_flag=True, help="Push missing commits, tags and objects; remove "
              "corrupt cache entries and temporary files.")
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
@click.option("--repo", type=click.Path(file_okay=False),
              help="The repository (default: the one holding the current directory).")
def doctor(repair: bool, as_json: bool, repo: str | None) -> None:
    from cp_manage.config import CPVConfig
    from cp_manage.manage.doctor import run_doctor
    from cp_manage.manage.repository import Repository

    repository = Repository.open(Path(repo) if repo else Path.cwd(), config=CPVConfig())
    report = run_doctor(repository, repair=repair)
    print_findings(report.findings, as_json)
    if not report.ok:
        raise SystemExit(1)
