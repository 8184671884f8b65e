"""One signed HEAD request to S3 without botocore: does this object exist?

An unchanged upload and a tag must ask storage whether the artifact's object is there, and
loading botocore and building a client for that single request costs more than the whole
rest of the command (~0.4 CPU-seconds). Most set-ups need nothing botocore alone knows to
sign one request: keys in the environment or in a credentials file, a region, an endpoint. So
this module signs that one request itself (AWS Signature Version 4, standard library only).

Only a ``200`` is believed: the object is there. Anything else (404, 403, a redirect, a
timeout, a set-up this module does not understand) returns None and the caller asks botocore,
which is right in every case and explains every failure. So this path can make a check
faster, never wrong.
"""

from __future__ import annotations

import configparser
import contextlib
import hashlib
import hmac
import http.client
import os
import re
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import quote, urlparse

TIMEOUT = 5.0
"""Seconds for the connection and for each read of the answer, at most (less when the S3
timeout setting is smaller); after that botocore asks instead."""

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy",
                    "all_proxy")
_DNS_BUCKET = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")


def object_exists(*, bucket: str, key: str, endpoint_url: str | None, region: str | None,
                  profile: str | None, credentials_file: str | None,
                  timeout: float = TIMEOUT) -> bool | None:
    """True when a signed HEAD of ``bucket/key`` answers 200; None when it cannot tell.

    ``profile`` None means botocore's own choice: keys in the environment, else the profile
    ``AWS_PROFILE`` names, else ``default``. ``timeout`` (the S3 timeout setting) bounds the
    connection and each read, and never beyond ``TIMEOUT``. Never raises; never returns False.
    """
    try:
        return _head(bucket, key, endpoint_url, region, profile, credentials_file,
                     min(timeout, TIMEOUT))
    except Exception:  # any surprise: botocore asks instead, and explains
        return None


def _head(bucket: str, key: str, endpoint_url: str | None, region: str | None,
          profile: str | None, credentials_file: str | None, timeout: float) -> bool | None:
    if any(os.environ.get(name) for name in _PROXY_VARIABLES) or _enabled(
            "AWS_USE_FIPS_ENDPOINT") or _enabled("AWS_USE_DUALSTACK_ENDPOINT"):
        return None  # botocore knows how to go through a proxy or to those endpoints
    keys = _credentials(profile, credentials_file)
    if keys is None:
        return None
    region = region or os.environ.get("AWS_REGION") or os.environ.get(
        "AWS_DEFAULT_REGION") or "us-east-1"
    if endpoint_url:
        parsed = urlparse(endpoint_url)
        scheme, host = parsed.scheme, parsed.netloc
        path = f"{parsed.path.rstrip('/')}/{bucket}/{key}"  # path style: any S3 store has it
    elif _DNS_BUCKET.match(bucket) and "--" not in bucket:
        scheme, host, path = "https", f"{bucket}.s3.{region}.amazonaws.com", f"/{key}"
    else:
        return None
    if scheme not in ("http", "https") or not host:
        return None
    path = quote(path, safe="/~")
    headers = _signed_headers(host, path, region, keys)
    if scheme == "https":
        import ssl

        context = ssl.create_default_context(cafile=os.environ.get("AWS_CA_BUNDLE") or None)
        connection: http.client.HTTPConnection = http.client.HTTPSConnection(
            host, timeout=timeout, context=context)
    else:
        connection = http.client.HTTPConnection(host, timeout=timeout)
    try:
        connection.request("HEAD", path, headers=headers)
        status = connection.getresponse().status
    finally:
        connection.close()
    return True if status == 200 else None


def _enabled(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() == "true"


def _credentials(profile: str | None, credentials_file: str | None
                 ) -> tuple[str, str, str | None] | None:
    """(access key, secret key, session token) as botocore would find them first, when they
    are plain keys; None for anything else (SSO, roles, processes, instance metadata)."""
    if profile is None:
        access, secret = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get(
            "AWS_SECRET_ACCESS_KEY")
        if access and secret:
            return access, secret, os.environ.get("AWS_SESSION_TOKEN") or None
        profile = os.environ.get("AWS_PROFILE") or "default"
    where = Path(credentials_file or os.environ.get("AWS_SHARED_CREDENTIALS_FILE")
                 or "~/.aws/credentials").expanduser()
    parser = configparser.RawConfigParser()
    with contextlib.suppress(OSError, configparser.Error):
        parser.read(where, encoding="utf-8")
    if not parser.has_section(profile):
        return None
    section = parser[profile]
    access, secret = section.get("aws_access_key_id"), section.get("aws_secret_access_key")
    if not access or not secret:
        return None
    return access.strip(), secret.strip(), (section.get("aws_session_token") or "").strip() or None


def _signed_headers(host: str, path: str, region: str, keys: tuple[str, str, str | None]
                    ) -> dict[str, str]:
    """The headers of a HEAD of ``path`` on ``host``, signed with Signature Version 4."""
    access, secret, token = keys
    now = datetime.now(timezone.utc)
    stamp, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    headers = {"host": host, "x-amz-content-sha256": EMPTY_SHA256, "x-amz-date": stamp}
    if token:
        headers["x-amz-security-token"] = token
    names = sorted(headers)
    canonical = "\n".join(["HEAD", path, "", *(f"{n}:{headers[n]}" for n in names), "",
                           ";".join(names), EMPTY_SHA256])
    scope = f"{day}/{region}/s3/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", stamp, scope,
                         hashlib.sha256(canonical.encode()).hexdigest()])
    signing_key = f"AWS4{secret}".encode()
    for part in (day, region, "s3", "aws4_request"):
        signing_key = hmac.new(signing_key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(signing_key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["Authorization"] = (f"AWS4-HMAC-SHA256 Credential={access}/{scope}, "
                                f"SignedHeaders={';'.join(names)}, Signature={signature}")
    return headers  # with "host": http.client then sends that one, exactly as signed
