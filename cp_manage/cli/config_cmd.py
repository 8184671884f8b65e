"""``cpv config ...``: show and change settings."""

from __future__ import annotations

import click

from cp_manage.cli import output


@click.group(help="Show and change cpv's settings ($CPV_HOME/config.json).")
def config() -> None:
    pass


@config.command(help="Show the effective settings.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
def show(as_json: bool) -> None:
    from cp_manage.config import CPVConfig

    cfg = CPVConfig()
    settings = cfg.get_config()
    settings.setdefault("git_url_template", None)
    settings.setdefault("storage_url_template", None)
    if as_json:
        output.print_json(settings)
        return
    output.info(f"config file: {cfg.path}")
    for key in sorted(settings):
        value = settings[key]
        output.info(f"{key:>22}: {value if value is not None else '(embedded default)'}")


@config.command(name="set", help="Set KEY to VALUE (e.g. git_url_template).")
@click.argument("key")
@click.argument("value")
def set_(key: str, value: str) -> None:
    from cp_manage.config import CPVConfig

    CPVConfig().set(key, value)
    output.success(f"Set {key}")
