"""How long cpv waits on S3, and what it does when a request fails: the stall bound and retries.

Every request has ``timeout`` seconds to connect and then to deliver each next piece of its
answer (botocore's ``connect_timeout`` and ``read_timeout``). A request that gets no answer in
that time is not retried: the endpoint has stalled, the wait the user allowed is spent, and
``EndpointWatch`` remembers it for another ``timeout``, so the requests that would follow
(the other parts of a multipart upload, the clean-up after it) fail at once instead of waiting
again. The command so ends about ``timeout`` seconds after the endpoint went silent, whatever
its threads; a program that keeps the storage open gives the endpoint another chance later.

Transient failures, 503 SlowDown, throttling, 500s, a reset connection, are retried by
botocore's "standard" retry mode with exponential backoff and jitter, up to ``ATTEMPTS``
attempts in all; cpv wraps botocore's retry handler to log each retry (INFO: ``--verbose``).
"""

from __future__ import annotations

import logging
import re
import socket
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

logger = logging.getLogger(__name__)

ATTEMPTS = 5
"""Attempts per request, the first one included (botocore's ``max_attempts``)."""
_RETRY_HANDLER_ID = "retry-config-s3"
"""The unique id botocore registers its standard retry handler of an S3 client under."""

_OBJECT_KEY = re.compile(r"files/md5/([0-9a-f]{2})/([0-9a-f]{30}(?:\.dir)?)$")
_VERBS = {
    "PutObject": "uploading", "UploadPart": "uploading", "CreateMultipartUpload": "starting "
    "the upload of", "CompleteMultipartUpload": "completing the upload of",
    "AbortMultipartUpload": "abandoning the upload of", "ListParts": "listing the parts of",
    "GetObject": "downloading", "HeadObject": "checking", "DeleteObject": "deleting",
}


class EndpointStalled(Exception):
    """Raised instead of sending a request once the endpoint has stalled (see the module)."""


class EndpointWatch:
    """The stall bound and the retry log of one S3 storage's client.

    Args:
        timeout: seconds a request waits for an answer (connecting, then each read).
        endpoint: how to name the endpoint in messages (its URL, or "AWS S3").
    """

    def __init__(self, timeout: float, endpoint: str) -> None:
        self.timeout = timeout
        self.endpoint = endpoint
        self.stalled: str | None = None
        """What cpv was waiting for when the endpoint last stopped answering (None: it has
        not, or that was more than ``timeout`` ago)."""
        self._stalled_at = 0.0

    def attach(self, client: Any) -> None:
        """Hook into ``client`` (made with retries in standard mode and ``ATTEMPTS``): no
        request after a stall, botocore's retry decision wrapped to log and to never retry a
        request that got no answer."""
        from botocore.retries import standard

        events = client.meta.events
        events.register_first("before-send.s3", self._refuse_after_stall)
        # botocore's own handler is replaced by the same handler wrapped: registering it again
        # returns it (its unique id must be free first, then again for the wrapper).
        events.unregister("needs-retry.s3", unique_id=_RETRY_HANDLER_ID)
        decide = standard.register_retry_handler(client, max_attempts=ATTEMPTS).needs_retry
        events.unregister("needs-retry.s3", unique_id=_RETRY_HANDLER_ID)
        events.register("needs-retry.s3", self._retry_or_not(decide),
                        unique_id=_RETRY_HANDLER_ID)

    def _refuse_after_stall(self, **_: Any) -> None:
        if self.is_stalled():
            raise EndpointStalled(self.stalled)

    def is_stalled(self) -> bool:
        """Whether the endpoint stopped answering less than ``timeout`` seconds ago."""
        if self.stalled is not None and time.monotonic() - self._stalled_at > self.timeout:
            self.stalled = None  # long enough ago: the endpoint gets another chance
        return self.stalled is not None

    def _retry_or_not(self, decide: Callable[..., float | None]) -> Callable[..., Any]:
        def needs_retry(**kwargs: Any) -> float | bool | None:
            error = kwargs.get("caught_exception")
            what = describe(kwargs.get("operation"), kwargs.get("request_dict"))
            if error is not None and is_timeout(error):
                self.note_stall(what)
                return False  # a request that got no answer in time is not sent again
            if self.is_stalled():
                return False
            delay = decide(**kwargs)
            if delay:  # False and None both mean no retry
                logger.info("S3 request failed (%s) while %s; retrying in %.1f s "
                            "(attempt %d of %d)", failure(error, kwargs.get("response")),
                            what, delay, int(kwargs.get("attempts") or 1) + 1, ATTEMPTS)
            return delay

        return needs_retry

    def note_stall(self, what: str) -> None:
        """Remember that the endpoint did not answer while cpv was doing ``what`` (the first
        stall is the one reported)."""
        if not self.is_stalled():
            self.stalled, self._stalled_at = what, time.monotonic()
            logger.info("The S3 endpoint %s did not answer for %g s while %s; no further "
                        "requests are sent to it", self.endpoint, self.timeout, what)

    def message(self, action_in_progress: str) -> str:
        """The error message for a stall (the first one noted, else ``action_in_progress``)."""
        return (f"The S3 endpoint {self.endpoint} did not answer for {self.timeout:g} s while "
                f"{self.stalled or action_in_progress}")

    def hint(self) -> str:
        return ("Check that the endpoint is up and reachable (and its URL: 'cpv config aws "
                "--endpoint-url'), then run the same command again (what storage already holds "
                "is not sent again). CPV_S3_TIMEOUT (or 'cpv config set s3_timeout SECONDS') "
                "sets how long cpv waits for an answer.")


def is_timeout(error: BaseException) -> bool:
    """Whether ``error`` (or what it was raised from) is a connection or read that timed out."""
    from botocore.exceptions import ConnectTimeoutError, ReadTimeoutError

    kinds: tuple[type[BaseException], ...] = (ConnectTimeoutError, ReadTimeoutError,
                                              socket.timeout, TimeoutError, EndpointStalled)
    try:
        # Not urllib3's TimeoutError: its NewConnectionError (a refused connection) is one.
        from urllib3.exceptions import ReadTimeoutError as Urllib3ReadTimeout

        kinds = (*kinds, Urllib3ReadTimeout)
    except ImportError:  # pragma: no cover - urllib3 comes with botocore
        pass
    return find_in_chain(error, kinds) is not None


def find_in_chain(exc: BaseException, kind: type[BaseException] | tuple[type[BaseException], ...]
                  ) -> BaseException | None:
    """``exc`` or the exception it was raised from or during, if one is a ``kind``."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, kind):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def describe(operation: Any, request: dict[str, Any] | None) -> str:
    """What a request does, in words: "uploading part 3 of object 1a2b…" (an object is named
    by its id, found in the URL's path whether the bucket is in the host name or the path)."""
    name = str(getattr(operation, "name", "") or "an S3 request")
    url = urlparse(str((request or {}).get("url", "")))
    found = _OBJECT_KEY.search(unquote(url.path))
    subject = f"object {found.group(1)}{found.group(2)}" if found else "the bucket"
    verb = _VERBS.get(name)
    if verb is None or found is None:
        return f"{name} of {subject}"
    part = parse_qs(url.query).get("partNumber")
    if name == "UploadPart" and part:
        return f"{verb} part {part[0]} of {subject}"
    return f"{verb} {subject}"


def failure(error: BaseException | None, response: Any) -> str:
    """Why a request failed: the exception, or the service's error code and HTTP status."""
    if error is not None:
        return f"{type(error).__name__}: {error}"
    try:
        http, parsed = response
        code = str(parsed.get("Error", {}).get("Code") or "")
        status = str(http.status_code)
    except (TypeError, ValueError, AttributeError):
        return "an error"
    return f"HTTP {status}" if code in ("", status) else f"{code}, HTTP {status}"
