"""What a git remote URL names, decided by git's own rules (``connect.c``, ``transport.c``).

- ``<helper>::<address>`` goes to a remote helper;
- a URL with ``scheme://`` uses its scheme (``file://`` is local, ``ssh://`` is SSH);
- otherwise a colon before any slash makes it SSH in scp style (``host:path``,
  ``user@host:path``, where ``host`` may be an alias from ``~/.ssh/config``);
- anything else (no colon, or a slash before the first colon) is a local path.

Pure: nothing here touches the file system or the network.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Literal
from urllib.parse import unquote, urlsplit

GitURLKind = Literal["local", "ssh", "other"]

_SCHEME = re.compile(r"^([A-Za-z0-9][A-Za-z0-9+.-]*)://")
_HELPER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9+.-]*::")
_SSH_SCHEMES = {"ssh", "git+ssh", "ssh+git"}


@dataclass(frozen=True)
class GitURL:
    """A git remote URL taken apart.

    ``kind`` is ``local`` (``path`` is the file-system path), ``ssh`` (``host`` is what ssh
    is given: a host name, an address or a ``Host`` alias; ``user`` and ``port`` when the URL
    names them), or ``other`` (https, git://, a remote helper, or something git rejects).
    """

    url: str
    kind: GitURLKind
    scheme: str = ""
    host: str | None = None
    user: str | None = None
    port: int | None = None
    path: str = ""


def parse_git_url(url: str) -> GitURL:
    """Classify ``url`` the way ``git push``/``git clone`` would."""
    if _HELPER.match(url):
        return GitURL(url, "other", scheme=url.split("::", 1)[0].lower())
    if "://" in url:
        match = _SCHEME.match(url)
        if match is None:  # git refuses these ("protocol ... is not supported")
            return GitURL(url, "other")
        return _parse_scheme_url(url, match.group(1).lower())
    if _is_local_path(url):
        return GitURL(url, "local", path=url)
    return _parse_scp_like(url)


def is_local_git_url(url: str) -> bool:
    """Whether ``url`` names a repository on this machine's file system."""
    return parse_git_url(url).kind == "local"


def _is_local_path(url: str) -> bool:
    """git's ``url_is_local_not_ssh``: no colon, or a slash before the first colon."""
    if os.name == "nt" and re.match(r"^[A-Za-z]:[\\/]", url):
        return True
    colon, slash = url.find(":"), url.find("/")
    return colon < 0 or 0 <= slash < colon


def _parse_scheme_url(url: str, scheme: str) -> GitURL:
    parts = urlsplit(url)
    if scheme == "file":
        return GitURL(url, "local", scheme=scheme, path=unquote(parts.path))
    try:
        port = parts.port
    except ValueError:
        port = None
    kind: GitURLKind = "ssh" if scheme in _SSH_SCHEMES else "other"
    return GitURL(url, kind, scheme=scheme, host=parts.hostname or None,
                  user=unquote(parts.username) if parts.username else None, port=port,
                  path=parts.path)


def _parse_scp_like(url: str) -> GitURL:
    """``[user@]host:path``, ``[user@][host]:path`` or ``[[user@]host:port]:path``."""
    bracket = url.find("@[")
    start = bracket + 1 if bracket >= 0 else 0
    end = url.find("]", start) if url.startswith("[", start) else -1
    colon = url.find(":", end + 1 if end >= 0 else 0)
    if end >= 0:  # git drops the brackets: what they held may still carry user@ and :port
        address = url[:start] + url[start + 1:end]
    else:
        address = url[:colon]
    user, _, host = address.rpartition("@")
    port = None
    if end >= 0 and host.count(":") == 1:  # [host:port], never an IPv6 address
        name, _, digits = host.partition(":")
        if digits.isdigit():
            host, port = name, int(digits)
    return GitURL(url, "ssh", host=host, user=user or None, port=port, path=url[colon + 1:])
