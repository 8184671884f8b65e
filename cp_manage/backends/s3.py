"""S3 storage remotes (AWS S3 or any S3-compatible store), in DVC 3's remote layout.

The object with md5 ``abcdef...`` lives at ``s3://{bucket}/{prefix}/files/md5/ab/cdef...``, the
key ``dvc push`` uses, so stock ``dvc pull`` reads what cpv wrote. This module is the only place
cpv talks to S3, and ``_translated`` is the one place where botocore's failures become
``StorageError``s with advice. botocore is imported on first use, never at import time: every CLI
command would otherwise pay for it.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import hashlib
import http.client
import io
import itertools
import logging
import mmap
import os
import re
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from cp_manage.backends.objects import ObjectId, StoredObject, is_object_id, object_key
from cp_manage.backends.partial import (
    DEFAULT_GRACE,
    DownloadState,
    Leftover,
    PartialMismatch,
    verify_parallel,
)
from cp_manage.backends.s3_watch import ATTEMPTS, EndpointWatch, find_in_chain, is_timeout
from cp_manage.config import timeout_setting
from cp_manage.errors import StorageError
from cp_manage.faults import crash_point, pace, part_size
from cp_manage.fsutil import (
    BufferPool,
    DirectWriter,
    Progress,
    explain_os_error,
    open_direct,
    progress_resumed,
    read_into,
    write_all,
)
from cp_manage.interrupts import check as check_interrupted
from cp_manage.md5state import new_md5

logger = logging.getLogger(__name__)

MiB = 1024 * 1024

# Uploads: parts of UPLOAD_PART sent UPLOAD_WORKERS at a time, each from a buffer of its own.
# The part size doubles for a file that would need more than S3's MAX_PARTS (above ~156 GiB).
UPLOAD_PART = part_size(16 * MiB)
UPLOAD_WORKERS = 8
MAX_PARTS = 10_000
UPLOAD_MEMORY = 128 * MiB
"""Parts held in memory at once, at most; a larger part (a file above ~312 GiB) is sent
straight from the file instead, so memory stays bounded whatever the file's size."""

# Downloads: ranged GETs written in place while the calling thread hashes every chunk in file
# order as it arrives (md5 is sequential, and on a fast link it is the slowest step: it must
# start with the first byte). Chunks wait in memory until hashed: at most DOWNLOAD_WINDOW parts.
DOWNLOAD_PART = part_size(8 * MiB)
DOWNLOAD_WORKERS = 8
DOWNLOAD_WINDOW = 8
DOWNLOAD_START_STREAMS = 2
READ_CHUNK = 4 * MiB

LARGE_AT_ONCE = 1
"""Objects sent in parallel parts go this many at a time, however many threads ask (a folder
of shards): each one already runs up to 8 streams and holds up to ``UPLOAD_MEMORY`` in memory,
so the folder needs no more memory than one shard."""
RANGED_AT_ONCE = 4
"""Objects fetched in ranges go up to this many at a time (a folder of shards), sharing one
window of ``DOWNLOAD_WINDOW`` parts (see ``S3Storage._download_window``): the folder's memory
stays that of one object, while its md5s run on every core and no object's first or last parts
leave the link idle."""

BUFFERS_LINGER = 2.0
"""Seconds the part buffers of a finished multipart upload wait for the next one (a folder's
shards go one after another) before they are unmapped."""

HEAD_WORKERS = 16
LIST_INSTEAD_OF_HEAD = 200
"""Above this many objects, ``missing`` lists the prefix instead of one HEAD per object."""
SMALL_OBJECT = UPLOAD_PART
"""Up to this size an object goes up in one PUT."""
IN_MEMORY_PUT = 1 * MiB
"""Up to this size that PUT is sent from memory (a dataset's many small files): at most
``manage.handlers.WORKERS`` of them are in memory at once."""

_MISSING_CODES = {"404", "NoSuchKey", "NotFound"}
_NO_BUCKET_CODES = {"NoSuchBucket"}
_DENIED_CODES = {
    "403", "AccessDenied", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch",
    "InvalidToken", "ExpiredToken", "TokenRefreshRequired", "AllAccessDisabled",
    "InvalidClientTokenId", "UnrecognizedClientException", "AccountProblem",
}
_REGION_CODES = {"301", "PermanentRedirect", "AuthorizationHeaderMalformed",
                 "IllegalLocationConstraintException"}
# AWS access key ids have a recognisable shape; never let one reach a message.
_ACCESS_KEY_RE = re.compile(r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[A-Z0-9]{12,}\b")


class S3Storage:
    """A DVC remote on S3: ``s3://bucket/prefix``.

    Settings come from, in order: the keyword arguments, ``config`` (a ``CPVConfig``, which
    itself folds in the ``AWS_*`` environment), then botocore's own lookup (environment,
    ``~/.aws``). Only *where* the credentials are is ever held here, never the keys.

    Args:
        url: ``s3://bucket`` or ``s3://bucket/prefix``.
        config: a ``CPVConfig`` (or anything with ``get_config()`` returning a dict).
        endpoint_url: an S3-compatible endpoint, e.g. ``http://127.0.0.1:8333``.
        region: the bucket's region.
        profile: the profile in the credentials file.
        credentials_file: the shared credentials file (default ``~/.aws/credentials``).

    Raises:
        StorageError: the URL is not an ``s3://`` URL with a bucket.
    """

    def __init__(self, url: str, *, config: object | None = None,
                 endpoint_url: str | None = None, region: str | None = None,
                 profile: str | None = None, credentials_file: str | None = None) -> None:
        parsed = urlparse(url)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise StorageError(f"Not an S3 storage URL: {url!r}",
                               hint="Use s3://bucket or s3://bucket/prefix.")
        self.bucket = parsed.netloc
        self.prefix = parsed.path.strip("/")
        self.url = f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"
        settings: dict[str, Any] = {}
        if config is not None:
            settings = dict(config.get_config())  # type: ignore[attr-defined]
        self.endpoint_url: str | None = endpoint_url or settings.get("endpoint_url") or None
        self.region: str | None = region or settings.get("region") or None
        # Keys in the environment beat a configured profile (config.json or AWS_PROFILE), as
        # in the AWS CLI and stock dvc; only a profile passed here beats them. botocore itself
        # would ignore the environment's keys for any profile it is given.
        self.env_keys = bool(os.environ.get("AWS_ACCESS_KEY_ID")
                             and os.environ.get("AWS_SECRET_ACCESS_KEY"))
        self.profile: str | None = profile or (
            None if self.env_keys else settings.get("aws_profile")) or None
        self.credentials_file: str | None = (
            credentials_file or settings.get("aws_credential_path") or None)
        # How long a request waits for an answer (see s3_watch): CPV_S3_TIMEOUT, s3_timeout.
        self.timeout = timeout_setting(settings if config is not None else {
            "s3_timeout": os.environ.get("CPV_S3_TIMEOUT")}, "s3_timeout")
        self.watch = EndpointWatch(self.timeout, self.endpoint_url or "AWS S3")
        self._client: Any = None
        self._session: Any = None
        self._client_lock = threading.Lock()
        self._large = threading.Semaphore(LARGE_AT_ONCE)
        self._upload_buffers = _LingeringBuffers(BUFFERS_LINGER)
        self._ranged = threading.Semaphore(RANGED_AT_ONCE)
        self._ranged_active = 0
        self._ranged_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"S3Storage({self.url!r}, endpoint_url={self.endpoint_url!r})"

    # -- the client and the one place botocore errors are translated ---------------------------

    @property
    def client(self) -> Any:
        """The botocore S3 client, made on first use (thread-safe; shared by all workers)."""
        if self._client is None:
            with self._client_lock, self._translated("connect to"):
                if self._client is None:
                    self._client = self._make_client()
        return self._client

    def warm_up(self) -> None:
        """Make the client now, in a background thread: botocore takes ~0.2 s to start, which
        then overlaps the git work an operation does first. Errors surface on real use."""
        if self._client is not None:
            return

        def make() -> None:
            with contextlib.suppress(Exception):
                _ = self.client

        threading.Thread(target=make, name="cpv-s3-warm-up", daemon=True).start()

    def _make_client(self) -> Any:
        # botocore itself, not boto3: cpv needs no resource layer and no transfer manager (its
        # transfers are its own), and importing boto3 brings both: ~0.05 s more for every
        # command that uses storage.
        import botocore.config
        import botocore.session

        core = botocore.session.Session(profile=self.profile)
        if self.credentials_file:
            core.set_config_variable("credentials_file",
                                     str(Path(self.credentials_file).expanduser()))
        self._session = core
        settings = botocore.config.Config(
            max_pool_connections=max(DOWNLOAD_WORKERS, UPLOAD_WORKERS, HEAD_WORKERS) + 4,
            # A stalled endpoint ends the command about ``timeout`` seconds after it went
            # silent; transient failures are retried (s3_watch).
            connect_timeout=self.timeout,
            read_timeout=self.timeout,
            retries={"mode": "standard", "max_attempts": ATTEMPTS},
            # Bodies go with a CRC32 checksum the server verifies, not a SHA-256 in the
            # signature: botocore already does so over https, and over plain http (an in-house
            # store) the SHA-256 pass costs a CPU-second per GiB that the transfer needs.
            # Nothing is trusted on the checksum alone: every object is named by its md5,
            # hashed before upload and checked again on every download.
            s3={"payload_signing_enabled": False},
            # A single PUT carries the object's md5 as Content-MD5 (see _put), which the server
            # checks, and multipart parts ask for CRC32 explicitly; so botocore need not add a
            # CRC32 of its own to every request, nor check one on the way back, where the md5
            # of every byte is checked anyway.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        client = core.create_client("s3", region_name=self.region,
                                    endpoint_url=self.endpoint_url, config=settings)
        # On the service-wide event, as botocore's own hook that adds the header: a hook on
        # "before-call.s3.PutObject" would run before that one.
        client.meta.events.register_last("before-call.s3", _no_wait_for_small_bodies)
        if self.endpoint_url is None:
            self.watch.endpoint = client.meta.endpoint_url
        self.watch.attach(client)
        return client

    def _key(self, oid: str) -> str:
        return f"{self.prefix}/{object_key(oid)}" if self.prefix else object_key(oid)

    def _where(self) -> str:
        return f"{self.url} (endpoint {self.endpoint_url})" if self.endpoint_url else self.url

    def _redact(self, text: str) -> str:
        secrets: list[str] = []
        with contextlib.suppress(Exception):
            credentials = self._session.get_credentials() if self._session else None
            if credentials is not None:
                frozen = credentials.get_frozen_credentials()
                secrets = [s for s in (frozen.access_key, frozen.secret_key, frozen.token) if s]
        for secret in secrets:
            text = text.replace(secret, "***")
        return _ACCESS_KEY_RE.sub("***", text)

    def _credentials_hint(self) -> str:
        if self.env_keys and self.profile is None:
            return ("Check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (keys in the environment "
                    "take precedence over any profile) and that they may use this bucket; "
                    "'cpv config validate' checks them.")
        where = self.credentials_file or os.environ.get("AWS_SHARED_CREDENTIALS_FILE") or (
            "~/.aws/credentials")
        profile = self.profile or os.environ.get("AWS_PROFILE") or "default"
        if not Path(where).expanduser().is_file():
            where = f"{where} (which does not exist)"
        return (f"Check the keys of profile '{profile}' in {where} (or AWS_ACCESS_KEY_ID / "
                "AWS_SECRET_ACCESS_KEY) and that they may use this bucket; "
                "'cpv config aws' sets the profile, 'cpv config validate' checks it.")

    @contextlib.contextmanager
    def _translated(self, action: str, oid: str | None = None) -> Iterator[None]:
        """Turn any botocore failure inside the block into a ``StorageError``."""
        try:
            yield
        except StorageError:
            raise
        except Exception as e:
            error = self._storage_error(e, action, oid)
            if error is None:
                raise
            raise error from e

    def _storage_error(self, exc: BaseException, action: str,
                       oid: str | None) -> StorageError | None:
        from botocore import exceptions as bx

        subject = f"object {oid} in {self._where()}" if oid else self._where()
        client_error = find_in_chain(exc, bx.ClientError)
        if client_error is not None:
            response = getattr(client_error, "response", {}) or {}
            code = str(response.get("Error", {}).get("Code", ""))
            status = str(response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
            detail = self._redact(str(response.get("Error", {}).get("Message", "")) or code)
            codes = {code, status}
            if codes & _NO_BUCKET_CODES or (oid is None and codes & {"404", "NotFound"}):
                return StorageError(
                    f"Bucket {self.bucket} does not exist at {self._where()}",
                    hint="Create it (teams own their buckets; cpv never creates one) or fix the "
                    "bucket name with 'cpv config aws --bucket NAME'.")
            if oid is not None and codes & _MISSING_CODES:
                return self._missing_error(oid)
            if codes & _DENIED_CODES:
                return StorageError(
                    f"Access denied when trying to {action} {subject} ({code}: {detail})",
                    hint=self._credentials_hint())
            if codes & _REGION_CODES:
                region = self.region or "the default region"
                actual = response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get(
                    "x-amz-bucket-region") or "REGION"
                return StorageError(
                    f"Bucket {self.bucket} is not in {region} ({code}: {detail})",
                    hint=f"Set the bucket's region with 'cpv config aws --region {actual}'.")
            return StorageError(f"Cannot {action} {subject}: {code} {detail}".rstrip(),
                                hint="Run the command again; if it keeps failing, run "
                                "'cpv config validate'.")
        if isinstance(exc, bx.ProfileNotFound):
            return StorageError(
                f"AWS profile '{self.profile}' is not in "
                f"{self.credentials_file or 'the AWS credentials or config file'}",
                hint="Run 'cpv config aws --profile NAME --credentials-file FILE' with a profile "
                "that exists.")
        if isinstance(exc, bx.NoCredentialsError | bx.PartialCredentialsError):
            return StorageError(f"No usable AWS credentials to {action} {subject}",
                                hint=self._credentials_hint())
        if is_timeout(exc):
            self.watch.note_stall(f"trying to {action} {subject}")
            return StorageError(self.watch.message(f"trying to {action} {subject}"),
                                hint=self.watch.hint())
        if isinstance(exc, bx.EndpointConnectionError | bx.ConnectionClosedError
                      | bx.ResponseStreamingError):
            endpoint = self.endpoint_url or (
                self._client.meta.endpoint_url if self._client is not None else "AWS S3")
            return StorageError(
                f"Cannot reach the S3 endpoint {endpoint} to {action} {subject}",
                hint="Check the endpoint URL ('cpv config aws --endpoint-url') and your network, "
                "then run the command again.")
        if isinstance(exc, bx.BotoCoreError):
            return StorageError(f"Cannot {action} {subject}: {self._redact(str(exc))}",
                                hint="Run 'cpv config validate' to check the S3 settings.")
        return None

    # -- the Storage protocol -------------------------------------------------------------------

    def ensure_location(self) -> None:
        """Check that the bucket exists and these credentials may use it.

        S3 has no folders, so the prefix needs no creating; buckets are never created here,
        because a team's bucket (its region, policy, lifecycle) belongs to the team.

        Raises:
            StorageError: the bucket is missing, access is denied, or the endpoint is down.
        """
        self.check_location()

    def check_location(self) -> None:
        """Check that the bucket exists and these credentials may use it (one HEAD).

        Raises:
            StorageError: the bucket is missing, access is denied, or the endpoint is down.
        """
        with self._translated("use bucket"):
            self.client.head_bucket(Bucket=self.bucket)

    def missing(self, oids: Iterable[str]) -> set[str]:
        """Those of ``oids`` not in storage (one HEAD each, several at a time).

        A single object (a model) is first asked about without botocore, when no client is
        made yet: an unchanged upload or a tag then costs one request, not botocore's start-up.

        Raises:
            StorageError: any failure other than "not found".
        """
        wanted = sorted(set(oids))
        if not wanted:
            return set()
        if len(wanted) == 1:
            if self._client is None and self._quick_exists(wanted[0]):
                return set()
            return set() if self._exists(wanted[0]) else set(wanted)
        if len(wanted) > LIST_INSTEAD_OF_HEAD:
            # A dataset: listing the prefix (1,000 keys a request) beats a HEAD per object.
            return set(wanted) - set(self.iter_oids())
        with ThreadPoolExecutor(max_workers=min(HEAD_WORKERS, len(wanted)),
                                thread_name_prefix="cpv-s3-head") as pool:
            found = list(pool.map(self._exists, wanted))
        return {oid for oid, present in zip(wanted, found, strict=True) if not present}

    def _exists(self, oid: str) -> bool:
        return self._head(oid) is not None

    def _quick_exists(self, oid: str) -> bool:
        """True when a HEAD signed without botocore finds the object; False when it cannot
        tell (then botocore asks, and explains any failure)."""
        from cp_manage.backends.s3_head import object_exists

        return bool(object_exists(bucket=self.bucket, key=self._key(oid),
                                  endpoint_url=self.endpoint_url, region=self.region,
                                  profile=self.profile, credentials_file=self.credentials_file,
                                  timeout=self.timeout))

    def _head(self, oid: str, action: str = "check") -> dict[str, Any] | None:
        """The object's metadata, or None when it is not there."""
        from botocore.exceptions import ClientError

        with self._translated(action, oid):
            try:
                return dict(self.client.head_object(Bucket=self.bucket, Key=self._key(oid)))
            except ClientError as e:
                code = str(e.response.get("Error", {}).get("Code", ""))
                status = str(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
                if {code, status} & _MISSING_CODES:
                    return None
                raise

    def _missing_error(self, oid: str) -> StorageError:
        return StorageError(f"Object {oid} is missing from storage {self._where()}",
                            hint="Run 'cpv doctor --repair' on a machine that has it cached.")

    def upload(self, oid: str, source: Path, *, progress: Progress | None = None) -> int:
        """Store ``source`` as object ``oid``; returns the bytes storage already held.

        A single PUT and a completed multipart upload are both atomic in S3: a reader sees the
        whole object or none, so no temporary key is needed. A multipart upload that is
        interrupted (a failure, a signal, a kill) keeps the parts it stored, and the next
        upload of the same object continues it: each stored part whose ETag is the md5 of the
        local bytes is reused, only the others are sent (see ``_PartedUpload``).

        Raises:
            StorageError: the file cannot be read or S3 refused it.
        """
        try:
            total = source.stat().st_size
        except OSError as e:
            raise StorageError(f"Cannot read {source}: {e.strerror or e}") from e
        with self._translated("upload", oid):
            try:
                if total <= SMALL_OBJECT:
                    # One PUT: threads and a multipart upload cost more than the file.
                    if total <= IN_MEMORY_PUT:  # see _no_wait_for_small_bodies
                        with open(source, "rb", buffering=0) as reader:
                            self._put(oid, reader.read())
                    else:
                        with open(source, "rb") as body:
                            self._put(oid, body)
                    if progress:
                        progress(total, total)
                    return 0
                with self._large:
                    return _PartedUpload(self, oid, source, total, progress).run()
            except OSError as e:  # the local side: the file went away or the disk failed
                from botocore.exceptions import BotoCoreError

                if is_timeout(e) or isinstance(e, BotoCoreError):
                    raise  # the remote side (botocore's timeouts are OSErrors too)
                raise StorageError(f"Cannot read {source}: {e.strerror or e}",
                                   hint="Run the command again; nothing was committed.") from e

    def _put(self, oid: str, body: Any) -> None:
        """One PUT of ``body`` (bytes, or a file), with its md5 for the server to check: the
        object is named by its md5, so the server refuses bytes that do not match their name.
        """
        extra: dict[str, str] = {}
        if is_object_id(oid):
            extra["ContentMD5"] = base64.b64encode(
                bytes.fromhex(ObjectId(oid).md5)).decode("ascii")
        self.client.put_object(Bucket=self.bucket, Key=self._key(oid), Body=body, **extra)

    def download(self, oid: str, target: Path, *, progress: Progress | None = None,
                 size: int | None = None, resume: bool = False) -> str:
        """Write object ``oid`` to ``target`` and return its md5.

        An object up to ``2 * DOWNLOAD_PART`` comes in one GET, and nothing else is asked: a
        dataset of small files costs one request per file, as with ``dvc pull``. A larger one
        arrives as parallel ranged GETs written in place while the calling thread hashes the
        contiguous prefix as it completes. ``size``, when the caller knows it (a pointer records
        it), only picks the way: a large object is measured first (HEAD) rather than started
        as one GET.

        Without ``resume``, ``target`` must not exist, and on any failure what was written is
        removed. With it, ``target`` is a partial file (see ``partial.claimed``): a large
        object continues from the bytes its state file records (their md5 state is restored,
        not computed again), records its own progress as it goes, and is left as it is on a
        failure, for the next attempt.

        Raises:
            StorageError: the object is missing, S3 failed, or ``target`` cannot be written.
        """
        head: dict[str, Any] | None = None
        if size is not None and size > 2 * DOWNLOAD_PART:
            head = self._head(oid, "download")
            if head is None:
                self.check_location()  # a missing bucket is the better explanation
                raise self._missing_error(oid)
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_BINARY", 0) | (0 if resume else os.O_EXCL)
        try:
            fd = os.open(target, flags, 0o644)
        except OSError as e:
            raise StorageError(f"Cannot create {target}: {e.strerror or e}",
                               hint="Check that the folder exists, is writable and that the "
                               "file does not exist yet.") from e
        try:
            try:
                with self._translated("download", oid):
                    if head is not None:
                        md5 = self._download_ranged(oid, fd, target, int(head["ContentLength"]),
                                                    progress, resume)
                    else:
                        md5 = self._download_whole(oid, fd, target, progress, resume)
            except StorageError:
                raise
            except OSError as e:  # the local side: disk full, quota, I/O error
                if explain_os_error(e) is not e:
                    raise  # a full, read-only or refused disk: the caller names what it writes
                raise StorageError(f"Cannot write {target}: {e.strerror or e}",
                                   hint="Free some space (or fix the disk), then run the "
                                   "command again.") from e
        except BaseException:
            os.close(fd)
            if not resume:
                with contextlib.suppress(OSError):
                    os.unlink(target)
            raise
        os.close(fd)
        return md5

    def _download_ranged(self, oid: str, fd: int, target: Path, size: int,
                         progress: Progress | None, resume: bool) -> str:
        state = DownloadState(target, fd, oid, size) if resume else None
        with self._ranged:
            with self._ranged_lock:
                self._ranged_active += 1
            try:
                return _RangedDownload(self, oid, fd, size, progress,
                                       direct=_open_direct(target), state=state).run()
            finally:
                with self._ranged_lock:
                    self._ranged_active -= 1

    def _download_window(self) -> int:
        """Parts each ranged download may hold from its hashing on, now: an even share of
        ``DOWNLOAD_WINDOW`` among those running (a download that finds a smaller share than it
        started with holds no more parts until its hashing catches up)."""
        return max(1, DOWNLOAD_WINDOW // max(1, self._ranged_active))

    def _download_whole(self, oid: str, fd: int, target: Path,
                        progress: Progress | None, resume: bool) -> str:
        """One GET; an object that turns out large is fetched in ranges instead."""
        from botocore.exceptions import ClientError

        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._key(oid))
        except ClientError as e:
            codes = {str(e.response.get("Error", {}).get("Code", "")),
                     str(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))}
            if codes & _MISSING_CODES and not codes & _NO_BUCKET_CODES:
                self.ensure_location()  # a missing bucket is the better explanation
                raise self._missing_error(oid) from e
            raise
        body, size = response["Body"], int(response["ContentLength"])
        if size > 2 * DOWNLOAD_PART:
            body.close()  # drops this connection: cheaper than receiving the object in one stream
            return self._download_ranged(oid, fd, target, size, progress, resume)
        if resume:
            os.ftruncate(fd, 0)  # a small object is received whole, whatever was there
        return self._receive(oid, fd, body, size, progress)

    def _receive(self, oid: str, fd: int, body: Any, size: int,
                 progress: Progress | None) -> str:
        digest = hashlib.md5(usedforsecurity=False)
        done = 0
        try:
            while chunk := body.read(READ_CHUNK):
                write_all(fd, chunk, done)
                digest.update(chunk)
                done += len(chunk)
                if progress:
                    progress(done, size)
        finally:
            body.close()
        if done != size:
            raise StorageError(f"Object {oid} in {self._where()} ended after {done} of {size} "
                               "bytes", hint="Run the command again.")
        if progress and size == 0:
            progress(0, 0)
        return digest.hexdigest()

    def iter_oids(self) -> Iterator[str]:
        """Every object id under ``{prefix}/files/md5/``.

        Raises:
            StorageError: the listing failed.
        """
        for stored in self.iter_objects():
            yield stored.oid

    def iter_objects(self) -> Iterator[StoredObject]:
        """Every object under ``{prefix}/files/md5/`` with its size and LastModified.

        Raises:
            StorageError: the listing failed.
        """
        base = f"{self.prefix}/files/md5/" if self.prefix else "files/md5/"
        with self._translated("list"):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=base)
            for page in pages:
                for item in page.get("Contents", []):
                    rest = item["Key"][len(base):]
                    head, _, tail = rest.partition("/")
                    if len(head) == 2 and tail and "/" not in tail:
                        yield StoredObject(head + tail, int(item.get("Size", 0)),
                                           item["LastModified"].timestamp())

    def leftovers(self) -> list[Leftover]:
        """Unfinished multipart uploads of objects under this remote's prefix (what killed
        uploads leave), with the bytes each holds so far.

        Raises:
            StorageError: the listing failed.
        """
        from cp_manage.backends import s3_pending

        base = f"{self.prefix}/files/md5/" if self.prefix else "files/md5/"
        with self._translated("list the unfinished uploads in"):
            return [leftover for leftover, _ in s3_pending.leftovers(self, base)]

    def remove_leftover(self, leftover: Leftover) -> None:
        """Abort one of ``leftovers()`` (nothing happens when it is gone already).

        Raises:
            StorageError: S3 refused.
        """
        from cp_manage.backends import s3_pending

        key = leftover.where.removeprefix(f"s3://{self.bucket}/")
        assert leftover.upload_id is not None
        with self._translated("abort an unfinished upload in"):
            s3_pending.abort(self, s3_pending.PendingUpload(key, leftover.upload_id, 0.0))

    def delete(self, oid: str) -> None:
        """Remove an object (gc; tests). Gone already is fine (S3 says so too)."""
        with self._translated("delete", oid):
            self.client.delete_object(Bucket=self.bucket, Key=self._key(oid))


class _RangedDownload:
    """One parallel download: workers receive ranges straight into part-sized buffers and write
    each whole part from there; the calling thread hashes every chunk, in file order, from those
    buffers as it arrives.

    Hashing starts with the first chunk and never reads the file back. Parts start in order,
    each only while it is fewer than ``DOWNLOAD_WINDOW`` parts ahead of the hashing (its share
    of them when several objects come at once), which bounds the memory to about
    ``DOWNLOAD_WINDOW`` parts whatever the object's size. A part's buffer is reused once it is
    both hashed and written.

    How many GETs run at once adapts: it starts at ``DOWNLOAD_START_STREAMS`` and grows by one,
    up to ``DOWNLOAD_WORKERS``, each time the hashing has to wait for bytes. On a fast link two
    streams outrun md5 and more would only take CPU from it; a slow one gets every stream.

    With a ``state`` (a resumable download into a partial file) it starts where the state
    says the last attempt got to, with the md5 state of those bytes, and records its own
    progress every ``partial.SAVE_EVERY`` bytes: each time, the parts before that point are
    both hashed and written.
    """

    def __init__(self, storage: S3Storage, oid: str, fd: int, size: int,
                 progress: Progress | None, *, direct: int | None = None,
                 state: DownloadState | None = None) -> None:
        self.storage = storage
        self.key = storage._key(oid)
        self.oid = oid
        self.writer = DirectWriter(direct, fd)
        self.pool = BufferPool(DOWNLOAD_PART)
        self.size = size
        self.progress = progress
        self.state = state
        self.start, self.digest, self.checks = (
            state.resume() if state is not None else (0, new_md5(), []))
        # Parts end on multiples of DOWNLOAD_PART wherever the download starts, so a resumed
        # one writes whole aligned blocks (O_DIRECT) as a fresh one does.
        bounds = [self.start, *range(self.start - self.start % DOWNLOAD_PART + DOWNLOAD_PART,
                                     size, DOWNLOAD_PART), size]
        self.parts = [(a, b) for a, b in itertools.pairwise(bounds) if b > a]
        self.crcs = [0] * len(self.parts)  # of each part as received, for the state's record
        self.arrived: list[list[memoryview]] = [[] for _ in self.parts]  # not yet hashed
        self.complete = [False] * len(self.parts)
        self.buffers: list[mmap.mmap | None] = [None] * len(self.parts)
        self.holders = [0] * len(self.parts)  # the hashing and the writing, until each is done
        self.hashing = 0  # the part being hashed; every part before it is hashed
        self.next_start = 0  # the next part a worker may start
        self.fetching = 0
        self.streams = DOWNLOAD_START_STREAMS
        self.error: BaseException | None = None
        self.stop = False
        self.changed = threading.Condition()

    def run(self) -> str:
        digest, hashed = self.digest, self.start
        unrecorded: list[tuple[int, int, int]] = []
        checked: list[bool] = []
        checker: threading.Thread | None = None
        if hashed:
            logger.info("Resuming the download of %s: %d of %d bytes already received",
                        self.oid, hashed, self.size)
            progress_resumed(self.progress, hashed, self.size)
        if self.checks:  # the bytes kept are read back and checked while the rest arrive
            checker = threading.Thread(target=lambda: checked.append(verify_parallel(
                self.writer.ordinary_fd, self.checks)), name="cpv-check", daemon=True)
            checker.start()
        # Parts are taken in order, so the part being hashed has always been started: a worker
        # waiting for the window waits for a later part, never for one the hashing needs.
        pool = ThreadPoolExecutor(max_workers=DOWNLOAD_WORKERS, thread_name_prefix="cpv-s3-get")
        try:
            os.ftruncate(self.writer.ordinary_fd, self.size)
            for index in range(len(self.parts)):
                pool.submit(self._fetch_or_report, index)
            for index in range(len(self.parts)):
                while True:
                    with self.changed:
                        if (not self.arrived[index] and not self.complete[index] and hashed
                                and self.streams < DOWNLOAD_WORKERS):
                            self.streams += 1  # starved: the link, not md5, is the bottleneck
                            self.changed.notify_all()
                        while (not self.arrived[index] and not self.complete[index]
                               and self.error is None):
                            self.changed.wait()
                        if self.error is not None:
                            raise self.error
                        batch, self.arrived[index] = self.arrived[index], []
                        finished = self.complete[index]
                    for chunk in batch:
                        digest.update(chunk)
                        hashed += len(chunk)
                        chunk.release()
                    if batch and self.progress:
                        self.progress(hashed, self.size)
                    if finished and not batch:
                        break
                with self.changed:
                    self.hashing = index + 1
                    self._let_go(index)
                    self.changed.notify_all()
                if self.state is not None:
                    unrecorded.append((*self.parts[index], self.crcs[index]))
                    if self.state.due(hashed) and hashed < self.size:
                        # Every part so far is written: they are on disk before the record.
                        self.state.save(hashed, digest.state(), unrecorded)
                        unrecorded = []
            if checker is not None:
                checker.join()
                if checked != [True]:
                    raise PartialMismatch(f"The partial file of {self.oid} no longer holds "
                                          "the bytes it had received")
        finally:
            with self.changed:
                self.stop = True
                self.changed.notify_all()
            pool.shutdown(wait=True, cancel_futures=True)
            if checker is not None:
                checker.join()  # it reads the file, which the caller closes next
            self.writer.close()
            self.pool.close()
        if hashed != self.size:  # cannot happen unless a part was miscounted
            raise StorageError(f"Hashed {hashed} of {self.size} bytes of {self.oid}")
        return digest.hexdigest()

    def _let_go(self, index: int) -> None:
        """One holder of part ``index``'s buffer is done with it (call with ``changed`` held)."""
        self.holders[index] -= 1
        buffer = self.buffers[index]
        if self.holders[index] == 0 and buffer is not None:
            self.buffers[index] = None
            self.pool.give_back(buffer)

    def _fetch_or_report(self, index: int) -> None:
        try:
            self._fetch(index)
        except BaseException as e:  # handed to the hashing thread, which raises it
            with self.changed:
                if self.error is None:
                    self.error = e
                self.changed.notify_all()

    def _fetch(self, index: int) -> None:
        with self.changed:
            while not self.stop and (index != self.next_start or self.fetching >= self.streams
                                     or index >= self.hashing
                                     + self.storage._download_window()):
                self.changed.wait()
            if self.stop:
                return
            self.next_start += 1
            self.fetching += 1
            self.buffers[index] = self.pool.take()
            self.holders[index] = 2
        try:
            self._get(index)
        finally:
            with self.changed:
                self.fetching -= 1
                self._let_go(index)
                self.changed.notify_all()

    def _get(self, index: int) -> None:
        start, end = self.parts[index]
        buffer = self.buffers[index]
        assert buffer is not None
        pace()
        check_interrupted()
        if self.stop:
            return
        response = self.storage.client.get_object(Bucket=self.storage.bucket, Key=self.key,
                                                  Range=f"bytes={start}-{end - 1}")
        body = response["Body"]
        if not str(response.get("ContentRange", "")).startswith(f"bytes {start}-"):
            body.close()
            raise StorageError(f"The S3 endpoint ignored a byte range of {self.oid} "
                               f"(Content-Range {response.get('ContentRange')!r})",
                               hint="Use an S3 store that supports ranged GETs.")
        received, length = 0, end - start
        read_into, done = _receiver(body)
        try:
            while received < length and not self.stop:
                view = memoryview(buffer)[received:min(length, received + READ_CHUNK)]
                count = read_into(view)
                if not count:
                    view.release()
                    break
                with self.changed:
                    self.arrived[index].append(view[:count] if count < len(view) else view)
                    self.changed.notify_all()
                received += count
            if received == length:
                done()
        finally:
            body.close()
        if self.stop:
            return
        if received != length:
            raise StorageError(f"Object {self.oid} ended early: range {start}-{end - 1} gave "
                               f"{received} bytes", hint="Run the command again.")
        if self.state is not None:
            with memoryview(buffer) as view:
                self.crcs[index] = zlib.crc32(view[:length])
        self.writer.write(buffer, length, start)
        with self.changed:
            self.complete[index] = True
            self.changed.notify_all()


def _receiver(body: Any, *, innermost: bool = True
              ) -> tuple[Callable[[memoryview], int], Callable[[], None]]:
    """How to read a GET's body into a buffer, and what to call once all of it is read.

    botocore's body wraps urllib3's response, which wraps http.client's; only the innermost
    reads from the socket straight into a buffer, each layer above copies (measured here:
    0.7 CPU-seconds per GiB instead of 0.9 to 1.2, on a machine where md5 needs a core). So
    it is used when the layers are the expected ones, and the connection goes back to the pool
    once the body is read; any other body is read the ordinary way and copied.
    """
    raw = getattr(body, "_raw_stream", None)
    inner = getattr(raw, "_fp", None)
    if (innermost and isinstance(inner, http.client.HTTPResponse) and raw is not None
            and not raw.headers.get("content-encoding") and hasattr(raw, "release_conn")):
        return inner.readinto, raw.release_conn

    def copy(view: memoryview) -> int:
        chunk = body.read(len(view))
        view[:len(chunk)] = chunk
        return len(chunk)

    return copy, lambda: None


def _open_direct(target: Path) -> int | None:
    """A second descriptor on ``target`` that writes around the page cache, where possible.

    A multi-GiB download written through the page cache makes the kernel find a fresh page for
    every 4 KiB: measured here, 2.3 CPU-seconds per GiB, as much as md5 itself, while
    ``O_DIRECT`` hands the bytes to the disk for 0.04. Filesystems without it (tmpfs) or
    platforms without it get None, and the download writes the ordinary way.
    """
    return open_direct(target, os.O_WRONLY)


class _LingeringBuffers:
    """The ``BufferPool`` of the multipart upload under way, kept ``linger`` seconds after it
    ends for the next one with the same part size.

    Mapping a part's buffer (its first touch, page by page) and unmapping it cost as much as
    a fraction of a second per upload on a busy machine; a folder's shards, sent one after
    another, pay that once instead of once each. An idle process gives the memory back.
    """

    def __init__(self, linger: float) -> None:
        self.linger = linger
        self.lock = threading.Lock()
        self.idle: BufferPool | None = None
        self.timer: threading.Timer | None = None

    def take(self, size: int) -> BufferPool:
        with self.lock:
            pool, self.idle = self.idle, None
            if self.timer is not None:
                self.timer.cancel()
                self.timer = None
        if pool is not None and pool.size == size:
            return pool
        if pool is not None:
            pool.close()
        return BufferPool(size)

    def give_back(self, pool: BufferPool) -> None:
        with self.lock:
            if self.idle is not None:  # two uploads at once (never, with LARGE_AT_ONCE = 1)
                pool.close()
                return
            self.idle = pool
            if self.timer is not None:
                self.timer.cancel()
            self.timer = threading.Timer(self.linger, self._release, args=(pool,))
            self.timer.daemon = True
            self.timer.start()

    def _release(self, pool: BufferPool) -> None:
        with self.lock:
            if self.idle is not pool:
                return  # taken again meanwhile
            self.idle = self.timer = None
        pool.close()


class _PartedUpload:
    """One multipart upload: up to ``UPLOAD_WORKERS`` parts at once, each read into an aligned
    buffer and sent from it, or, when an interrupted upload of the same object already holds
    that part, checked against it and reused.

    The parts are a function of the file's size alone (``UPLOAD_PART``, doubled while the file
    would need more than ``MAX_PARTS``), so a rerun cuts the file where the interrupted run
    did. On the way out, whatever the reason (a failure, a signal), the upload is left as it
    is: its stored parts are what the next run resumes from, and ``cpv doctor --repair``
    aborts it if no run ever does.

    Parts are read with ``O_DIRECT`` where the filesystem has it: the file is the cache copy,
    itself written around the page cache, and reading a GiB through the page cache would cost
    as much CPU as writing it did (see ``fsutil.copy_file_md5``). The buffers are reused, and
    they never hold more than ``UPLOAD_MEMORY`` whatever the file's size.
    """

    def __init__(self, storage: S3Storage, oid: str, source: Path, size: int,
                 progress: Progress | None) -> None:
        self.storage, self.oid, self.source, self.size = storage, oid, source, size
        self.key = storage._key(oid)
        self.progress = progress
        part = UPLOAD_PART
        while -(-size // part) > MAX_PARTS:
            part *= 2
        self.parts = [(start, min(start + part, size)) for start in range(0, size, part)]
        self.buffered = part * 4 <= UPLOAD_MEMORY  # else too few parts would fit in memory
        self.workers = min(UPLOAD_WORKERS, len(self.parts),
                           max(1, UPLOAD_MEMORY // part) if self.buffered else UPLOAD_WORKERS)
        self.lock = threading.Lock()
        self.pool = storage._upload_buffers.take(part)
        self.sent = 0
        self.reused = 0
        self.failed = False
        self.fd = -1
        self.direct: int | None = None
        self.use_direct = True

    def run(self) -> int:
        """Upload (or finish uploading) the object; returns the bytes storage already held."""
        from botocore.exceptions import ClientError

        from cp_manage.backends import s3_pending

        self.fd = os.open(self.source, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        self.direct = open_direct(self.source, os.O_RDONLY)
        try:
            pending, others = s3_pending.resumable(self.storage, self.key, self.parts)
            stored = pending.usable(self.parts) if pending is not None else {}
            if pending is None:
                upload_id = self.storage.client.create_multipart_upload(
                    Bucket=self.storage.bucket, Key=self.key,
                    ChecksumAlgorithm="CRC32")["UploadId"]
            else:
                upload_id = pending.upload_id
                found = sum(int(part["Size"]) for part in stored.values())
                logger.info("Resuming the upload of %s: %d of %d bytes already in storage",
                            self.oid, found, self.size)
                if found:
                    progress_resumed(self.progress, found, self.size)
            try:
                self._send_all(upload_id, stored)
            except ClientError as e:
                # Another writer of the same object finished (or aborted) this upload first.
                if s3_pending.error_code(e) == "NoSuchUpload" and self.storage._exists(self.oid):
                    return self.reused
                raise
            s3_pending.abort_stale(self.storage, others, grace=DEFAULT_GRACE)
            return self.reused
        finally:
            os.close(self.fd)
            if self.direct is not None:
                os.close(self.direct)
            self.storage._upload_buffers.give_back(self.pool)

    def _send_all(self, upload_id: str, stored: dict[int, dict[str, Any]]) -> None:
        from concurrent.futures import FIRST_EXCEPTION, wait

        # The parts storage lacks go first: sending is the long part, and the stored ones are
        # checked (read and hashed) on the threads left over meanwhile.
        order = sorted(range(len(self.parts)), key=lambda number: number + 1 in stored)
        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="cpv-s3-put") as pool:
            by_number = {number: pool.submit(self._send, upload_id, number,
                                             stored.get(number + 1)) for number in order}
            futures = [by_number[number] for number in range(len(self.parts))]
            try:
                finished, _ = wait(futures, return_when=FIRST_EXCEPTION)
                for future in finished:
                    if (failure := future.exception()) is not None:
                        raise failure
                parts = [future.result() for future in futures]
            except BaseException:
                self.failed = True  # parts not yet started return at once
                raise
        self.storage.client.complete_multipart_upload(
            Bucket=self.storage.bucket, Key=self.key, UploadId=upload_id,
            MultipartUpload={"Parts": parts})

    def _send(self, upload_id: str, index: int, stored: dict[str, Any] | None
              ) -> dict[str, Any]:
        if self.failed:
            return {}
        start, end = self.parts[index]
        length = end - start
        part: dict[str, Any] | None = None
        if not self.buffered:
            if stored is not None:
                part = self._reuse(stored, index, self._digests_from_file(start, length))
            if part is None:
                body = _PartBody(length, lambda at, amount: os.pread(self.fd, amount, start + at))
                part = self._upload_part(upload_id, index, body)
                if part is None:
                    return {}
        else:
            buffer = self.pool.take()
            try:
                if self._read(buffer, start, length) != length:
                    raise StorageError(f"{self.source} shrank while it was being uploaded",
                                       hint="Run the command again.")
                if stored is not None:
                    with memoryview(buffer) as view:
                        part = self._reuse(stored, index, _digests(view[:length]))
                if part is None:
                    crash_point("multipart_part")
                    part = self._upload_part(upload_id, index, _PartBody(
                        length, lambda at, amount: buffer[at:at + amount]))
                    if part is None:
                        return {}
            finally:
                self.pool.give_back(buffer)
        if self.progress:
            with self.lock:
                self.sent += length
                self.progress(self.sent, self.size)
        return part

    def _reuse(self, stored: dict[str, Any], index: int, digests: tuple[str, str]
               ) -> dict[str, Any] | None:
        """The part to complete the upload with when the stored part ``index`` holds exactly
        the local bytes (its ETag is their md5), else None (it is sent again)."""
        md5, crc32 = digests
        if str(stored.get("ETag", "")).strip('"').lower() != md5:
            logger.info("Part %d of %s in storage differs from the local bytes; sending it "
                        "again", index + 1, self.oid)
            return None
        with self.lock:
            self.reused += self.parts[index][1] - self.parts[index][0]
        return {"ETag": stored["ETag"], "PartNumber": index + 1,
                "ChecksumCRC32": stored.get("ChecksumCRC32") or crc32}

    def _digests_from_file(self, start: int, length: int) -> tuple[str, str]:
        md5, crc = hashlib.md5(usedforsecurity=False), 0
        done = 0
        while done < length:
            chunk = os.pread(self.fd, min(READ_CHUNK, length - done), start + done)
            if not chunk:
                raise StorageError(f"{self.source} shrank while it was being uploaded",
                                   hint="Run the command again.")
            md5.update(chunk)
            crc = zlib.crc32(chunk, crc)
            done += len(chunk)
        return md5.hexdigest(), _crc32_header(crc)

    def _upload_part(self, upload_id: str, index: int, body: _PartBody
                     ) -> dict[str, Any] | None:
        """Send one part; None, sending nothing, once the upload has failed or been stopped."""
        pace()
        check_interrupted()
        if self.failed:
            return None
        response = self.storage.client.upload_part(
            Bucket=self.storage.bucket, Key=self.key, UploadId=upload_id, PartNumber=index + 1,
            Body=body, ChecksumAlgorithm="CRC32")
        part = {"ETag": response["ETag"], "PartNumber": index + 1}
        if "ChecksumCRC32" in response:
            part["ChecksumCRC32"] = response["ChecksumCRC32"]
        return part

    def _read(self, buffer: mmap.mmap, offset: int, length: int) -> int:
        if self.direct is not None and self.use_direct:
            try:
                return read_into(self.direct, buffer, length, offset)
            except OSError as e:
                if e.errno != errno.EINVAL:
                    raise
                self.use_direct = False  # only claimed support: read the ordinary way from now on
        return read_into(self.fd, buffer, length, offset)


def _digests(data: memoryview) -> tuple[str, str]:
    """The md5 (hex) and CRC32 (as S3's header carries it) of one part."""
    return (hashlib.md5(data, usedforsecurity=False).hexdigest(),
            _crc32_header(zlib.crc32(data)))


def _crc32_header(value: int) -> str:
    return base64.b64encode(value.to_bytes(4, "big")).decode("ascii")


class _PartBody:
    """One part as the seekable file botocore sends (and rewinds to retry): ``length`` bytes,
    ``read_at(position, amount)`` gives those from ``position``."""

    def __init__(self, length: int, read_at: Callable[[int, int], bytes]) -> None:
        self.length, self.read_at = length, read_at
        self.position = 0

    def __len__(self) -> int:
        return self.length

    def read(self, amount: int | None = -1) -> bytes:
        left = self.length - self.position
        amount = left if amount is None or amount < 0 else min(amount, left)
        if amount <= 0:
            return b""
        data = self.read_at(self.position, amount)
        self.position += len(data)
        return data

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self.position, os.SEEK_END: self.length}[whence]
        self.position = max(0, base + offset)
        return self.position

    def tell(self) -> int:
        return self.position


def _no_wait_for_small_bodies(model: Any, params: dict[str, Any], **_: Any) -> None:
    """botocore event hook: a PutObject of a body in memory goes without ``Expect:
    100-continue``.

    botocore sends every PutObject body behind that header, and waits for the server's interim
    reply (read one byte at a time) before sending it: a round trip that, for a dataset's small
    files, costs more than sending the body. It pays off only for a large body the server might
    refuse, and those are files, which keep it.
    """
    if model.name == "PutObject" and isinstance(params.get("body"),
                                                bytes | bytearray | io.BytesIO):
        params.get("headers", {}).pop("Expect", None)
