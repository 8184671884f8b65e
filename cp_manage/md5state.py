"""An md5 whose running state can be saved and restored: what lets a download resume without
hashing again the bytes it had already received.

Python's ``hashlib`` cannot export a hash's state, but OpenSSL's legacy ``MD5_CTX`` is a plain
struct: ``MD5_Init`` / ``MD5_Update`` / ``MD5_Final`` from the libcrypto Python itself already
loads (for ``hashlib``) run the same code as ``hashlib.md5``, at the same speed, and the
context's bytes can be written next to a partial file with the offset they cover. Where that
library or those functions are missing (or fail a self-test), ``new_md5`` falls back to
``hashlib``, whose state cannot be saved: a resumed transfer then hashes its prefix again.
"""

from __future__ import annotations

import functools
import hashlib
import mmap
import sys
from typing import Any, Protocol


class MD5(Protocol):
    """What transfers need of an md5."""

    def update(self, data: bytes | bytearray | memoryview | mmap.mmap) -> None:
        """Hash ``data`` next."""

    def hexdigest(self) -> str:
        """The md5 of everything hashed so far (hashing may go on afterwards)."""

    def state(self) -> bytes | None:
        """The running state, to restore later with ``md5_from_state``; None when it cannot
        be saved."""


STATE_SIZE = 23 * 4
"""Bytes of OpenSSL's ``MD5_CTX``: ``A, B, C, D, Nl, Nh``, ``data[16]`` and ``num``, all 32
bits (``MD5_LONG`` is 32 bits on every platform OpenSSL 1.1 and 3 build on)."""
_ROOM = 256
"""The buffer a context lives in: room to spare, so a library whose context were larger
than ``STATE_SIZE`` would fail the self-test (its saved state cut short) instead of writing
past the end."""


class _LibcryptoMD5:
    """md5 through libcrypto's ``MD5_*`` functions (they release the GIL, as hashlib does)."""

    def __init__(self, api: _Api, state: bytes | None = None) -> None:
        self._api = api
        if state is None:
            self._context = api.ctypes.create_string_buffer(_ROOM)
            api.library.MD5_Init(self._context)
        else:
            self._context = api.ctypes.create_string_buffer(state, _ROOM)

    def update(self, data: bytes | bytearray | memoryview | mmap.mmap) -> None:
        update = self._api.library.MD5_Update
        if isinstance(data, bytes):
            update(self._context, data, len(data))
            return
        with memoryview(data) as view:
            if len(view) == 0:
                return
            if view.readonly:
                chunk = view.tobytes()
                update(self._context, chunk, len(chunk))
                return
            flat = view.cast("B")
            try:
                array = (self._api.ctypes.c_char * len(flat)).from_buffer(flat)
                update(self._context, array, len(flat))
                del array  # the buffer's export ends here, so the caller may release it
            finally:
                flat.release()

    def hexdigest(self) -> str:
        copy = self._api.ctypes.create_string_buffer(self._context.raw, _ROOM)
        out = self._api.ctypes.create_string_buffer(16)
        self._api.library.MD5_Final(out, copy)
        return bytes(out.raw).hex()

    def state(self) -> bytes | None:
        return bytes(self._context.raw[:STATE_SIZE])


class _HashlibMD5:
    def __init__(self) -> None:
        self._digest = hashlib.md5(usedforsecurity=False)

    def update(self, data: bytes | bytearray | memoryview | mmap.mmap) -> None:
        self._digest.update(data)

    def hexdigest(self) -> str:
        return self._digest.hexdigest()

    def state(self) -> bytes | None:
        return None


class _Api:
    """ctypes (imported only when an md5 state is first needed: every command would pay
    for it otherwise) and the libcrypto it found."""

    def __init__(self, ctypes_module: Any, library: Any) -> None:
        self.ctypes, self.library = ctypes_module, library


def _libcrypto_path() -> str | None:
    """The libcrypto this process already has loaded (hashlib's), else the system's."""
    if sys.platform.startswith("linux"):
        try:
            with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
                for line in maps:
                    path = line.rsplit(None, 1)[-1]
                    if "/libcrypto" in path and ".so" in path:
                        return path
        except OSError:
            pass
    import ctypes.util

    return ctypes.util.find_library("crypto")


@functools.cache
def _load() -> _Api | None:
    """libcrypto with working ``MD5_*`` functions, or None (looked up once)."""
    import ctypes

    try:
        path = _libcrypto_path()
        if path is None:
            return None
        library = ctypes.CDLL(path)
        library.MD5_Init.argtypes = [ctypes.c_void_p]
        library.MD5_Update.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
        library.MD5_Final.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        for function in (library.MD5_Init, library.MD5_Update, library.MD5_Final):
            function.restype = ctypes.c_int
        api = _Api(ctypes, library)
        return api if _self_test(api) else None
    except (OSError, AttributeError):
        return None


def _self_test(api: _Api) -> bool:
    """The context's layout is right: a state saved halfway and restored gives hashlib's md5."""
    data = bytes(range(256)) * 5
    first = _LibcryptoMD5(api)
    first.update(data[:333])
    saved = first.state()
    assert saved is not None
    second = _LibcryptoMD5(api, saved)
    second.update(memoryview(bytearray(data[333:])))
    return second.hexdigest() == hashlib.md5(data, usedforsecurity=False).hexdigest()


def new_md5() -> MD5:
    """A fresh md5 whose state can be saved where libcrypto allows it."""
    api = _load()
    return _LibcryptoMD5(api) if api is not None else _HashlibMD5()


def md5_from_state(state: bytes) -> MD5 | None:
    """The md5 saved as ``state``; None when it cannot be restored here."""
    api = _load()
    if api is None or len(state) != STATE_SIZE:
        return None
    return _LibcryptoMD5(api, state)


def can_save_state() -> bool:
    """Whether md5 states can be saved here (libcrypto's ``MD5_*`` are usable)."""
    return _load() is not None
