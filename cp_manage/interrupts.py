"""Stopping on SIGINT and SIGTERM at a safe point, and saying truthfully what was kept.

The CLI calls ``install()``: from then on SIGINT raises ``Interrupted`` (a KeyboardInterrupt)
and SIGTERM, which SLURM and Kubernetes send before they kill a job, raises ``Terminated``, in
the main thread, wherever it is. Everything cpv writes is cleaned up by ``finally`` and
``except BaseException`` blocks on the way out (temporary files, multipart uploads), so a rerun
of the same command finds nothing half-made.

A few steps must not be cut in half: pushing a commit or tags to the git remote and the
bookkeeping right after it. The library wraps them in ``critical()``: a signal arriving inside
is remembered, the step finishes (git runs in a session of its own, so the terminal's Ctrl-C
does not reach it, and every push has a timeout), and the interruption is raised when the
section ends. ``record_kept`` notes what reached the remote, and every interruption raised
afterwards carries that list, so the CLI can say exactly what was kept. ``record_resumable``
notes what a transfer has put where a rerun finds it (files already in storage), which the
interruption names too, as it stands once the transfer has stopped. Transfers running on
worker threads call ``check()`` between chunks and parts: once the main thread is interrupted
they stop there too, keeping what they wrote, rather than finishing their files first.

The library never installs handlers itself (a program embedding it owns its signals): without
``install()`` a critical section changes nothing and SIGINT raises Python's own
KeyboardInterrupt. After the first interruption is raised, further signals are ignored, so a
second Ctrl-C cannot cut the clean-up short (every step of it is bounded by a timeout).
Before the CLI has installed its handlers (while Python starts and imports cpv, a few tenths
of a second) a signal has the default effect, and nothing has been done yet.

A signal can land while Python runs a finalizer (an object's ``__del__``, a weakref callback),
and Python swallows any exception raised there ("Exception ignored in ..."): the command would
go on and finish while stderr said it had stopped and changed nothing. ``install()`` therefore
also catches what finalizers swallow: an interruption among them is not printed but delivered
again, so it is raised in the command's own code a moment later.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)


Resumable = Callable[[], str | None]
"""Says what a rerun will not have to do again ("3 of 4 files … are in storage"), or None."""


class Interruption(BaseException):
    """A signal stopped cpv. ``kept`` names what had already reached the git remote (empty:
    nothing had); ``resumable`` says what a rerun will not redo. ``exit_code`` is the
    shell's convention, 128 + the signal's number."""

    def __init__(self, signum: int, kept: tuple[str, ...] = (),
                 resumable: Resumable | None = None) -> None:
        super().__init__(signum, kept)
        self.signum = signum
        self.kept = kept
        self._resumable = resumable

    @property
    def resumable(self) -> str | None:
        """What a rerun will not redo, as it stands now (read once the transfer stopped)."""
        return self._resumable() if self._resumable is not None else None

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name

    def __str__(self) -> str:
        resumable = self.resumable
        if not self.kept:
            return (f"Interrupted by {self.signal_name}; nothing was changed (no commit or tag "
                    "reached the git remote)" + (
                        f"; {resumable}. Run the same command again to resume (what storage "
                        "holds is not sent again)." if resumable
                        else ". Run the same command again to do it."))
        return (f"Interrupted by {self.signal_name} after the git remote received "
                f"{_join(self.kept)}, which is kept" + (f"; {resumable}" if resumable else "")
                + ". Run the same command again to finish anything left.")


class Interrupted(Interruption, KeyboardInterrupt):
    """SIGINT (Ctrl-C); still a KeyboardInterrupt for code that catches that."""


class Terminated(Interruption):
    """SIGTERM: what batch schedulers and container runtimes send before they kill."""


def interruption(signum: int) -> Interruption:
    """The exception for ``signum``, carrying what has been kept so far."""
    kind = Interrupted if signum == signal.SIGINT else Terminated
    return kind(signum, tuple(_state.kept), _state.resumable)


class _State:
    installed = False
    held = False  # install(hold=True) and no release() yet
    depth = 0  # nested critical sections entered and not yet left
    pending: int | None = None  # a signal that arrived inside a critical section
    stopping = False  # an interruption was raised: ignore further signals
    kept: list[str]
    resumable: Resumable | None = None
    previous: dict[int, Any]
    previous_unraisable: Callable[[Any], object] | None = None

    def __init__(self) -> None:
        self.kept = []
        self.previous = {}


_state = _State()


def _handle(signum: int, _frame: FrameType | None) -> None:
    # Runs in the main thread between two bytecodes: no locks (the interrupted code may hold
    # them), no I/O.
    if _state.stopping:
        return
    if _state.depth > 0:
        if _state.pending is None:
            _state.pending = signum
        return
    _state.stopping = True
    raise interruption(signum)


def _unraisable(unraisable: Any) -> None:
    """``sys.unraisablehook`` while installed: an interruption raised inside a finalizer was
    swallowed by Python, so deliver its signal again (see ``_redeliver``); anything else goes to
    the previous hook."""
    error = unraisable.exc_value
    if isinstance(error, Interruption) and _state.installed:
        threading.Thread(target=_redeliver, args=(error.signum,), daemon=True,
                         name="cpv-redeliver-signal").start()
        return
    (_state.previous_unraisable or sys.__unraisablehook__)(unraisable)


def _redeliver(signum: int) -> None:
    """Send ``signum`` to this process again once the main thread has left the hook (a signal
    handled inside the hook would be swallowed too). Until then ``stopping`` keeps the handler
    quiet; if the signal lands in a finalizer again, the hook sends it once more."""
    main = threading.main_thread().ident
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if not _in_hook(sys._current_frames().get(main or 0)):
            break
        time.sleep(0.001)
    _state.stopping = False
    os.kill(os.getpid(), signum)


def _in_hook(frame: FrameType | None) -> bool:
    while frame is not None:
        if frame.f_code is _unraisable.__code__:
            return True
        frame = frame.f_back
    return False


def install(*, hold: bool = False) -> None:
    """Make SIGINT and SIGTERM raise an ``Interruption`` (call from the main thread).

    With ``hold``, a signal waits until ``release()``, as in a critical section: the CLI holds
    them while click parses the arguments, since click would turn a KeyboardInterrupt there
    into its own "Aborted!".
    """
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("signal handlers can only be installed from the main thread")
    for signum in SIGNALS:
        _state.previous.setdefault(signum, signal.getsignal(signum))
        signal.signal(signum, _handle)
    if sys.unraisablehook is not _unraisable:
        _state.previous_unraisable = sys.unraisablehook
        sys.unraisablehook = _unraisable
    _state.installed = True
    if hold and not _state.held:
        _state.held = True
        _state.depth += 1


def release() -> None:
    """End the hold ``install(hold=True)`` began; a signal that came meanwhile is raised now."""
    if _state.held:
        _state.held = False
        _state.depth -= 1
        _raise_pending(None)


def uninstall() -> None:
    """Put back the handlers ``install`` replaced and forget what was recorded."""
    for signum, handler in _state.previous.items():
        signal.signal(signum, handler)
    _state.previous.clear()
    if sys.unraisablehook is _unraisable:
        sys.unraisablehook = _state.previous_unraisable or sys.__unraisablehook__
        _state.previous_unraisable = None
    _state.installed = False
    if _state.held:
        _state.held = False
        _state.depth -= 1
    _state.pending = None
    _state.stopping = False
    _state.kept.clear()
    _state.resumable = None


class Stopped(BaseException):
    """Raised by ``check`` in a transfer's worker thread: the command is being interrupted, so
    the thread stops here too instead of finishing its file first."""


def check() -> None:
    """In a worker thread of a transfer, between two chunks or parts: raise ``Stopped`` once
    the main thread is raising an interruption, so the thread stops at this safe point (what it
    wrote so far is kept for the rerun, as in the main thread) instead of running its file to
    the end, which for a shard of many GiB would outlast a scheduler's grace period. Nothing
    happens in the main thread (its signal does that), nor without ``install()``."""
    if _state.stopping and threading.current_thread() is not threading.main_thread():
        raise Stopped


def pending() -> int | None:
    """The signal a critical section is holding back, if any."""
    return _state.pending


def record_kept(what: str) -> None:
    """Note that ``what`` (e.g. "tag v0.3") reached the git remote; later interruptions say so."""
    if _state.installed:
        _state.kept.append(what)


def record_resumable(describe: Resumable | None) -> None:
    """Let an interruption say what a rerun will not redo: ``describe()`` is asked when the
    interruption is reported, after the transfer has stopped (None forgets it)."""
    if _state.installed:
        _state.resumable = describe


@contextmanager
def critical() -> Iterator[None]:
    """A step that must not be cut in half: a signal arriving inside waits for its end.

    When the outermost section ends, a held-back signal is raised as an ``Interruption`` (from
    the section's own error, when it failed). Sections nest. Only the main thread is ever
    interrupted, so elsewhere a section changes nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _state.depth += 1
    try:
        yield
    except Exception as error:
        _state.depth -= 1
        _raise_pending(error)
        raise
    except BaseException:
        _state.depth -= 1
        raise
    _state.depth -= 1
    _raise_pending(None)


def _raise_pending(cause: Exception | None) -> None:
    if _state.depth or _state.pending is None:
        return
    signum, _state.pending = _state.pending, None
    _state.stopping = True
    raise interruption(signum) from cause


def _join(items: tuple[str, ...]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]
