"""Multipart uploads S3 holds without an object yet: the parts an interrupted upload left.

An upload resumes the one of its own key that holds the most usable parts (``resumable``);
``cpv doctor`` lists every one under the storage prefix (``pending_uploads``) and aborts those
older than a grace period (``abort``). S3 keeps unfinished uploads, and bills their parts,
until they are completed or aborted.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from cp_manage.backends.partial import Leftover

if TYPE_CHECKING:
    from cp_manage.backends.s3 import S3Storage

logger = logging.getLogger(__name__)

_NO_UPLOAD_CODES = {"NoSuchUpload", "404", "NotFound"}


@dataclass
class PendingUpload:
    """One unfinished multipart upload of a key: its id, when it began and (once listed) the
    parts it holds, by part number."""

    key: str
    upload_id: str
    initiated: float
    parts: dict[int, dict[str, Any]] = field(default_factory=dict)

    def usable(self, layout: list[tuple[int, int]]) -> dict[int, dict[str, Any]]:
        """The stored parts whose number and size fit ``layout`` (start, end per part)."""
        return {number: part for number, part in self.parts.items()
                if 1 <= number <= len(layout)
                and int(part.get("Size", -1)) == layout[number - 1][1] - layout[number - 1][0]}


def error_code(exc: BaseException) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", "")) or str(
        response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))


def _timestamp(value: Any) -> float:
    return value.timestamp() if isinstance(value, datetime) else time.time()


def uploads_of(storage: S3Storage, prefix: str) -> list[PendingUpload]:
    """Every unfinished multipart upload whose key starts with ``prefix`` (parts not listed).

    Raises:
        botocore's errors (the caller translates them).
    """
    found: list[PendingUpload] = []
    pages = storage.client.get_paginator("list_multipart_uploads").paginate(
        Bucket=storage.bucket, Prefix=prefix)
    for page in pages:
        for item in page.get("Uploads", []) or []:
            found.append(PendingUpload(str(item["Key"]), str(item["UploadId"]),
                                       _timestamp(item.get("Initiated"))))
    return found


def list_parts(storage: S3Storage, upload: PendingUpload) -> None:
    """Fill ``upload.parts`` from S3 (all pages)."""
    pages = storage.client.get_paginator("list_parts").paginate(
        Bucket=storage.bucket, Key=upload.key, UploadId=upload.upload_id)
    for page in pages:
        for part in page.get("Parts", []) or []:
            upload.parts[int(part["PartNumber"])] = dict(part)


def resumable(storage: S3Storage, key: str, layout: list[tuple[int, int]]
              ) -> tuple[PendingUpload | None, list[PendingUpload]]:
    """The unfinished upload of ``key`` to continue (the one with the most usable bytes, the
    newest on a tie), and every other one of that key.

    Listing is an optimisation: when S3 refuses it (a policy without
    ``s3:ListBucketMultipartUploads``) the upload simply starts afresh.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        uploads = [u for u in uploads_of(storage, key) if u.key == key]
    except (ClientError, BotoCoreError) as e:
        logger.debug("Cannot list the unfinished uploads of %s (%s); starting afresh", key, e)
        return None, []
    best: PendingUpload | None = None
    best_bytes = -1
    for upload in sorted(uploads, key=lambda u: u.initiated):
        try:
            list_parts(storage, upload)
        except ClientError as e:
            if error_code(e) not in _NO_UPLOAD_CODES:
                logger.debug("Cannot list the parts of upload %s: %s", upload.upload_id, e)
            continue  # finished or aborted meanwhile
        usable = sum(int(p["Size"]) for p in upload.usable(layout).values())
        if usable >= best_bytes:
            best, best_bytes = upload, usable
    return best, [u for u in uploads if u is not best]


def abort(storage: S3Storage, upload: PendingUpload) -> bool:
    """Abort ``upload``; False when it was already gone.

    Raises:
        botocore's errors other than "no such upload".
    """
    from botocore.exceptions import ClientError

    try:
        storage.client.abort_multipart_upload(Bucket=storage.bucket, Key=upload.key,
                                              UploadId=upload.upload_id)
    except ClientError as e:
        if error_code(e) in _NO_UPLOAD_CODES:
            return False
        raise
    return True


def abort_stale(storage: S3Storage, uploads: list[PendingUpload], *, grace: float) -> None:
    """Abort those of ``uploads`` begun more than ``grace`` seconds ago; younger ones may
    belong to another writer's running upload and are left to it. Failures are only logged:
    the object they were for is stored already."""
    from botocore.exceptions import BotoCoreError, ClientError

    now = time.time()
    for upload in uploads:
        if now - upload.initiated < grace:
            continue
        try:
            abort(storage, upload)
            logger.info("Aborted the abandoned upload %s of %s", upload.upload_id, upload.key)
        except (ClientError, BotoCoreError) as e:
            logger.debug("Cannot abort the upload %s of %s: %s", upload.upload_id, upload.key, e)


def leftovers(storage: S3Storage, prefix: str) -> list[tuple[Leftover, PendingUpload]]:
    """Every unfinished upload below ``prefix``, with its size so far (ListParts each).

    Raises:
        botocore's errors (the caller translates them).
    """
    from botocore.exceptions import ClientError

    now = time.time()
    found = []
    for upload in uploads_of(storage, prefix):
        try:
            list_parts(storage, upload)
        except ClientError as e:
            if error_code(e) in _NO_UPLOAD_CODES:
                continue
            raise
        size = sum(int(p.get("Size", 0)) for p in upload.parts.values())
        where = f"s3://{storage.bucket}/{upload.key}"
        found.append((Leftover("multipart upload", where, size, max(0.0, now - upload.initiated),
                               upload_id=upload.upload_id), upload))
    return found
