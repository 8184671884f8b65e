"""``cpv config ...``: show and change settings."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from cp_manage.cli import output

if TYPE_CHECKING:
    from cp_manage.config import Setting


@click.group(help="Show and change cpv's settings ($CPV_HOME/config.json).")
def config() -> None:
    pass


@config.command(help="Show each setting in force and where it comes from (argument, env, "
                "config file or default).")
@click.option("--json", "as_json", is_flag=True,
              help="Print a JSON object: key -> {value, source, origin}.")
def show(as_json: bool) -> None:
    from cp_manage.config import CPVConfig

    cfg = CPVConfig()
    settings = cfg.effective_settings()
    if as_json:
        output.print_json({key: {"value": s.value, "source": s.source, "origin": s.origin}
                           for key, s in settings.items()})
        return
    output.info(f"config file: {cfg.path}")
    for key, setting in settings.items():
        output.info(f"{key:>22}: {_describe(setting)}")


def _describe(setting: Setting) -> str:
    """``value  (where it comes from)``."""
    value = setting.value if setting.value is not None else "(not set)"
    if setting.source == "env":
        return f"{value}  (env {setting.origin})"
    if setting.source == "default" and setting.origin:
        return f"{value}  (default, since {setting.origin})"
    return f"{value}  ({setting.source})"


def _settable_key(_ctx: click.Context, _param: click.Parameter, key: str) -> str:
    from cp_manage.config import SETTABLE

    if key not in SETTABLE:
        raise click.BadParameter(f"unknown setting {key!r}; known: {', '.join(SETTABLE)}")
    return key


@config.command(name="set", help="Set KEY to VALUE (e.g. git_url_template).")
@click.argument("key", callback=_settable_key)
@click.argument("value")
def set_(key: str, value: str) -> None:
    from cp_manage.config import CPVConfig

    CPVConfig().set(key, value)
    output.success(f"Set {key}")


@config.command(help="Return KEY to its default (remove it from config.json).")
@click.argument("key", callback=_settable_key)
def unset(key: str) -> None:
    from cp_manage.config import CPVConfig

    cfg = CPVConfig()
    removed = cfg.unset(key)
    now = _describe(cfg.effective_settings()[key])
    if removed:
        output.success(f"Unset {key}; in force now: {now}")
    else:
        output.info(f"{key} was not set in {cfg.path}; nothing changed. In force: {now}")


@config.command(help="Record the AWS credentials file, profile and bucket (no secrets stored).")
@click.option("--credentials-file", type=click.Path(dir_okay=False),
              help="The AWS credentials file (default: ~/.aws/credentials).")
@click.option("--profile", default="default", show_default=True, help="The AWS profile.")
@click.option("--bucket", help="The S3 bucket holding the team's storage.")
@click.option("--endpoint-url", help="For S3-compatible stores (MinIO, SeaweedFS, Ceph...).")
@click.option("--region", help="The bucket's region.")
def aws(credentials_file: str | None, profile: str, bucket: str | None,
        endpoint_url: str | None, region: str | None) -> None:
    from cp_manage.config import CPVConfig

    CPVConfig().setup_aws_profile(credentials_file, profile, bucket=bucket,
                                  endpoint_url=endpoint_url, region=region)
    output.success(f"AWS profile {profile!r} recorded" + (f", bucket {bucket}" if bucket else ""))


@config.command(help="Create the git host's SSH key when missing and add it to ~/.ssh/config.")
@click.option("--key", required=True, type=click.Path(dir_okay=False),
              help="The private key file (created with ssh-keygen when missing).")
@click.option("--host", default="bitbucket.org", show_default=True)
@click.option("--hostname", default="altssh.bitbucket.org", show_default=True)
@click.option("--port", default=443, show_default=True, type=click.IntRange(1, 65535))
@click.option("--user", default="git", show_default=True)
@click.option("--ssh-config", type=click.Path(dir_okay=False),
              help="The SSH config file to edit (default: ~/.ssh/config).")
def ssh(key: str, host: str, hostname: str, port: int, user: str, ssh_config: str | None) -> None:
    from cp_manage.config import CPVConfig

    result = CPVConfig().setup_bitbucket_ssh(key, user, host=host, hostname=hostname, port=port,
                                             ssh_config_path=ssh_config)
    if result["block_written"]:
        output.success(f"{result['ssh_config']}: Host {host} -> {hostname}:{port} uses {key}")
    else:
        output.info(f"{result['ssh_config']} already has its own 'Host {host}' entry; kept it.")
    if result["public_key"]:
        output.info(f"Add this public key to your account on the git host:\n"
                    f"{result['public_key']}")


@config.command(help="Check credentials, bucket, SSH key and git host, each separately.")
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
@click.option("--team", help="Check this model's git remote (with --model).")
@click.option("--model", help="Check this model's git remote (with --team).")
@click.option("--repo", type=click.Path(file_okay=False), help="Check this repository's remote.")
def validate(as_json: bool, team: str | None, model: str | None, repo: str | None) -> None:
    from pathlib import Path

    from cp_manage.cli.doctor_cmd import print_findings
    from cp_manage.config import CPVConfig
    from cp_manage.errors import CPVError
    from cp_manage.manage.repository import Repository

    cfg = CPVConfig()
    git_url, root = None, None
    if team and model:
        git_url = cfg.git_url(team, model)
    else:
        try:
            root = Repository.find_root(Path(repo) if repo else Path.cwd())
            repository = Repository.open(root, config=cfg)
            git_url = repository.git.remote_url()
        except CPVError:
            if repo:
                raise
    report = cfg.validate_credentials(git_url=git_url, repo_root=root)
    print_findings(report.findings, as_json)
    if not report.ok:
        raise SystemExit(1)
