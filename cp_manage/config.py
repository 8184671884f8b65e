"""CPVConfig: where cpv keeps its settings and how it finds the two remotes.

Precedence for every setting: explicit argument, then environment (``CPV_HOME``, ``CPV_*``
and the standard ``AWS_*`` variables), then ``$CPV_HOME/config.json``, then the embedded
default. The file names *where* things are (credentials file, profile, bucket, key file, URL
templates); secrets stay in the files their own tools own.
"""

from __future__ import annotations

import json
import logging
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from cp_manage.errors import ConfigError
from cp_manage.fsutil import atomic_write_bytes
from cp_manage.versions import validate_name

logger = logging.getLogger(__name__)

# Every key config.json may hold, with the environment variable that overrides it.
KEYS: dict[str, str | None] = {
    "aws_credential_path": "AWS_SHARED_CREDENTIALS_FILE",
    "aws_profile": "AWS_PROFILE",
    "bucket": "CPV_BUCKET",
    "endpoint_url": "AWS_ENDPOINT_URL",
    "region": "AWS_DEFAULT_REGION",
    "bitbucket_ssh_keyfile": None,
    "ssh_host": None,
    "git_url_template": "CPV_GIT_URL_TEMPLATE",
    "storage_url_template": "CPV_STORAGE_URL_TEMPLATE",
    "s3_timeout": "CPV_S3_TIMEOUT",
    "git_timeout": "CPV_GIT_TIMEOUT",
    "last_updated": None,
}

# The keys a user sets ('last_updated' is cpv's own record of the last change).
SETTABLE = tuple(key for key in KEYS if key != "last_updated")

DEFAULT_S3_TEMPLATE = "s3://{bucket}/{team}/{model}"
DEFAULT_TIMEOUT = 30.0
"""Seconds cpv waits for a remote that does not answer (the S3 endpoint, the git host) before
it gives up on it: ``s3_timeout`` / ``CPV_S3_TIMEOUT`` and ``git_timeout`` /
``CPV_GIT_TIMEOUT``. With it every command ends within about twice that (a minute) when a
remote stops answering."""

Source = Literal["argument", "env", "config file", "default"]


@dataclass(frozen=True)
class Setting:
    """One setting as it is in force: its value and where that value comes from.

    ``origin`` names the environment variable, the file, or what a default follows from
    (``"bucket is set"``); ``value`` is None when the setting has no value at all.
    """

    key: str
    value: str | None
    source: Source
    origin: str | None = None


def cpv_home(explicit: str | os.PathLike[str] | None = None) -> Path:
    """``explicit``, else ``$CPV_HOME``, else ``~/.cpv``."""
    if explicit is not None:
        return Path(explicit).expanduser().absolute()
    env = os.environ.get("CPV_HOME")
    return Path(env).expanduser().absolute() if env else Path.home() / ".cpv"


class CPVConfig:
    """cpv's settings: ``$CPV_HOME/config.json`` (mode 0600) plus environment overrides.

    Args:
        home: the cpv home folder; defaults to ``$CPV_HOME`` or ``~/.cpv``.
    """

    def __init__(self, home: str | os.PathLike[str] | None = None) -> None:
        self.home = cpv_home(home)
        self._explicit_home = home is not None
        self.path = self.home / "config.json"

    # -- reading -------------------------------------------------------------------------------

    def _load_file(self) -> dict[str, Any]:
        try:
            info = self.path.stat()
        except FileNotFoundError:
            return {}
        if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise ConfigError(
                f"{self.path} is writable by other users, so anyone could redirect your uploads",
                hint=f"Run 'chmod 600 {self.path}'.",
            )
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ConfigError(
                f"{self.path} is not valid JSON ({e})",
                hint=f"Fix or delete {self.path}, then run 'cpv config ...' again.",
            ) from e
        if not isinstance(data, dict):
            raise ConfigError(f"{self.path} must hold a JSON object",
                              hint=f"Fix or delete {self.path}.")
        for key, value in data.items():
            if key in KEYS and not isinstance(value, str):
                raise ConfigError(
                    f"{self.path}: {key} must be a string, not {type(value).__name__}",
                    hint=f"Run 'cpv config set {key} VALUE' or edit {self.path}.",
                )
        return data

    def get_config(self, key: str | None = None) -> Any:
        """The effective configuration (file plus environment), or one value of it.

        Args:
            key: one setting; None for all of them.

        Returns:
            A dict of every set key, or the value of ``key`` (None when unset).

        Raises:
            ConfigError: config.json is corrupt or unsafe, or ``key`` is unknown.
        """
        merged = self._load_file()
        for name, env in KEYS.items():
            if env and os.environ.get(env):
                merged[name] = os.environ[env]
        if key is None:
            merged.setdefault("cpv_home", str(self.home))
            return merged
        if key not in KEYS and key != "cpv_home":
            raise ConfigError(f"Unknown setting {key!r}", hint=f"Known: {', '.join(KEYS)}.")
        if key == "cpv_home":
            return str(self.home)
        return merged.get(key)

    def effective_settings(self) -> dict[str, Setting]:
        """Every setting in force, with where its value comes from: argument, environment,
        config.json or the embedded default (which may follow from another setting).

        Raises:
            ConfigError: config.json is corrupt or unsafe.
        """
        file = self._load_file()
        source: Source = "default"
        if self._explicit_home:
            source = "argument"
        elif os.environ.get("CPV_HOME"):
            source = "env"
        found = {"cpv_home": Setting("cpv_home", str(self.home), source,
                                     "CPV_HOME" if source == "env" else None)}
        for key, env in KEYS.items():
            if env and os.environ.get(env):
                found[key] = Setting(key, os.environ[env], "env", env)
            elif file.get(key):  # as everywhere else, an empty value means the default
                found[key] = Setting(key, file[key], "config file", str(self.path))
        values = {key: setting.value for key, setting in found.items()}
        for key in SETTABLE:
            if key not in found:
                value, because = self._default(key, values)
                found[key] = Setting(key, value, "default", because)
        order = ["cpv_home", *KEYS]
        return {key: found[key] for key in sorted(found, key=order.index)}

    def _default(self, key: str, settings: Mapping[str, Any]) -> tuple[str | None, str | None]:
        """The embedded default of ``key`` given the other settings, and what it follows from."""
        home = str(self.home).replace("{", "{{").replace("}", "}}")  # the URL templates format
        if key == "git_url_template":
            return os.path.join(home, "remotes", "git", "{team}", "{model}.git"), None
        if key == "storage_url_template":
            if settings.get("bucket"):
                return DEFAULT_S3_TEMPLATE, "bucket is set"
            return os.path.join(home, "remotes", "storage", "{team}", "{model}"), None
        if key == "aws_credential_path":
            return str(Path.home() / ".aws" / "credentials"), None
        if key == "aws_profile":
            return "default", None
        if key.endswith("_timeout"):
            return f"{DEFAULT_TIMEOUT:g}", None
        return None, None

    # -- writing -------------------------------------------------------------------------------

    def update(self, values: Mapping[str, str | None]) -> None:
        """Set (or, with None, remove) settings in config.json, atomically and mode 0600.

        Raises:
            ConfigError: an unknown key, a value that is not a string, or a bad template.
        """
        data = self._load_file()
        for key, value in values.items():
            check_key(key)
            if value is None:
                data.pop(key, None)
                continue
            if not isinstance(value, str):
                raise ConfigError(f"{key} must be a string")
            if key.endswith("_template"):
                check_template(key, value)
            if key.endswith("_timeout"):
                parse_timeout(key, value, origin=key)
            data[key] = value
        data["last_updated"] = datetime.now(timezone.utc).isoformat()
        self.home.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode(),
                           mode=0o600)

    def set(self, key: str, value: str) -> None:
        """Set one setting in config.json."""
        self.update({key: value})

    def unset(self, key: str) -> bool:
        """Return ``key`` to its default: remove it from config.json.

        An environment variable that sets the key still wins over the default afterwards.

        Returns:
            Whether config.json held the key (when not, nothing is written).

        Raises:
            ConfigError: an unknown key, or config.json is corrupt or unsafe.
        """
        check_key(key)
        if key not in self._load_file():
            return False
        self.update({key: None})
        return True

    # -- one-time setup (the seed's names) --------------------------------------------------

    def setup_aws_profile(self, credential_path: str | os.PathLike[str] | None = None,
                          aws_profile: str = "default", **options: Any) -> dict[str, Any]:
        """Record the AWS credentials file and profile (plus bucket, endpoint_url, region).

        See ``cp_manage.credentials.setup_aws_profile``.
        """
        from cp_manage.credentials import setup_aws_profile

        return setup_aws_profile(self, credential_path, aws_profile, **options)

    def setup_bitbucket_ssh(self, keygen_filename: str | os.PathLike[str] | None = None,
                            bitbucket_user: str = "git", **options: Any) -> dict[str, Any]:
        """Create the SSH key when missing and keep one marked block in ~/.ssh/config.

        See ``cp_manage.credentials.setup_git_ssh``.
        """
        from cp_manage.credentials import setup_git_ssh

        return setup_git_ssh(self, keygen_filename, bitbucket_user, **options)

    def validate_credentials(self, **options: Any) -> Any:
        """Check each part of the setup; returns a ``ValidationReport`` (``.ok``, findings)."""
        from cp_manage.credentials import validate_credentials

        return validate_credentials(self, **options)

    # -- the two remotes -----------------------------------------------------------------------

    def git_url(self, team: str, model: str, explicit: str | None = None) -> str:
        """The git remote URL of (team, model): explicit, else the template, else embedded."""
        if explicit:
            return explicit
        validate_name(team, "team")
        validate_name(model, "model")
        settings = self.get_config()
        template = settings.get("git_url_template") or self._default(
            "git_url_template", settings)[0]
        return str(template).format(team=team, model=model, workspace=team)

    def storage_url(self, team: str, model: str, explicit: str | None = None) -> str:
        """The DVC storage URL of (team, model): explicit, else the template, else embedded."""
        if explicit:
            return explicit
        validate_name(team, "team")
        validate_name(model, "model")
        settings = self.get_config()
        template = str(settings.get("storage_url_template") or self._default(
            "storage_url_template", settings)[0])
        bucket = settings.get("bucket")
        if "{bucket}" in template and not bucket:
            raise ConfigError("storage_url_template needs a bucket but none is configured",
                              hint="Run 'cpv config aws --bucket NAME ...'.")
        return template.format(bucket=bucket or "", team=team, model=model)


def timeout_setting(settings: Mapping[str, Any], key: str) -> float:
    """The timeout ``key`` (``s3_timeout``, ``git_timeout``) in seconds, from ``settings`` (what
    ``get_config()`` returns, environment folded in), else ``DEFAULT_TIMEOUT``.

    Raises:
        ConfigError: the value is not a number of seconds above 0.
    """
    value = settings.get(key)
    if value is None or value == "":
        return DEFAULT_TIMEOUT
    env = KEYS.get(key)
    origin = env if env and os.environ.get(env) else f"{key} in config.json"
    return parse_timeout(key, value, origin=origin)


def parse_timeout(key: str, value: Any, *, origin: str) -> float:
    """``value`` as seconds above 0 (at most a day).

    Raises:
        ConfigError: naming ``origin`` (where the value came from).
    """
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = float("nan")
    if not 0 < seconds <= 86400:
        raise ConfigError(f"{origin} must be a number of seconds above 0, not {value!r}",
                          hint=f"Give {key} in seconds, for example {DEFAULT_TIMEOUT:g} (the "
                          "default).")
    return seconds


def check_key(key: str) -> None:
    """Raise ConfigError unless ``key`` is a setting a user may set or unset."""
    if key not in SETTABLE:
        raise ConfigError(f"Unknown setting {key!r}", hint=f"Known: {', '.join(SETTABLE)}.")


def check_template(key: str, template: str) -> None:
    """Raise ConfigError unless ``template`` uses only the placeholders allowed for ``key``."""
    allowed = {"team", "model", "workspace"} if key == "git_url_template" else {
        "bucket", "team", "model"}
    try:
        template.format(**{name: "x" for name in allowed})
    except (KeyError, IndexError, ValueError) as e:
        raise ConfigError(
            f"{key} {template!r} has an unknown or malformed placeholder ({e})",
            hint=f"Use only {', '.join('{' + n + '}' for n in sorted(allowed))}.",
        ) from e
    if "{model}" not in template:
        raise ConfigError(f"{key} {template!r} must contain {{model}}",
                          hint="Each model needs its own remote.")
