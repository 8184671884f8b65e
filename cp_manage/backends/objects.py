"""Object ids and where an object lives, in DVC's content-addressed layout.

An object with md5 ``abcdef...`` lives at ``files/md5/ab/cdef...`` below a cache or storage
remote's root (a directory listing has the suffix ``.dir``), exactly where DVC puts it. This
module imports nothing of cpv's, so every backend can use it.
"""

from __future__ import annotations


def object_key(oid: str) -> str:
    """The path of object ``oid`` below the remote's (or cache's) root."""
    return f"files/md5/{oid[:2]}/{oid[2:]}"
