"""Object ids and where an object lives, in DVC's content-addressed layout.

An object is named by the md5 of its bytes: ``abcdef...`` (32 lowercase hex digits). A folder's
listing (a JSON list of relpath and md5, see ``manage.dataset``) is an object too, named by its
md5 plus the suffix ``.dir``. Object ``abcdef...`` lives at ``files/md5/ab/cdef...`` below a
cache's or storage remote's root, exactly where DVC puts it. This is the one place that knows
the suffix and the layout.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cp_manage.errors import InvalidObjectIdError

_LISTING_SUFFIX = ".dir"
_OBJECT_ID_RE = re.compile(r"[0-9a-f]{32}(?:\.dir)?")


class ObjectId(str):
    """The id of one object: an md5, with ``.dir`` for a folder's listing.

    A ``str``, so it goes wherever an object id went before and compares equal to its text.

    Raises:
        InvalidObjectIdError: (on construction) the text is not of that form.
    """

    __slots__ = ()

    def __new__(cls, text: str) -> ObjectId:
        if isinstance(text, ObjectId):
            return text
        if not isinstance(text, str) or not _OBJECT_ID_RE.fullmatch(text):
            raise InvalidObjectIdError(text)
        return super().__new__(cls, text)

    @classmethod
    def listing(cls, md5: str) -> ObjectId:
        """The id of the listing whose bytes hash to ``md5``."""
        return cls(md5 + _LISTING_SUFFIX)

    @classmethod
    def of(cls, md5: str, *, listing: bool) -> ObjectId:
        """The id of a file's object (``listing=False``) or a folder's listing, by its md5."""
        return cls.listing(md5) if listing else cls(md5)

    @property
    def is_listing(self) -> bool:
        """Whether this names a folder's listing (a ``.dir`` object) rather than a file."""
        return self.endswith(_LISTING_SUFFIX)

    @property
    def md5(self) -> str:
        """The md5 the object's bytes hash to (the id without ``.dir``)."""
        return self.removesuffix(_LISTING_SUFFIX)

    @property
    def key(self) -> str:
        """Where the object lives below a cache's or storage remote's root."""
        return object_key(self)


def is_object_id(text: str) -> bool:
    """Whether ``text`` has the form of an object id (see ``ObjectId``)."""
    return _OBJECT_ID_RE.fullmatch(text) is not None


def object_key(oid: str) -> str:
    """The path of object ``oid`` below the remote's (or cache's) root."""
    return f"files/md5/{oid[:2]}/{oid[2:]}"


@dataclass(frozen=True)
class StoredObject:
    """One object as storage lists it: its id, its size in bytes and when storage last wrote
    it (seconds since the epoch: a file's mtime, an S3 object's LastModified)."""

    oid: str
    size: int
    modified: float
