"""What guards a run folder while a process trains in it: a lock file that refuses a second
training process, and termination signals (SIGINT, SIGTERM, SIGHUP) that end the run with an
exception, waiting for a save in progress to finish first.

The lock is ``run.lock`` in the run folder, held with ``flock`` (the kernel releases it when its
process dies, so a lock file left by a killed process is stale and is taken over) and holding the
PID of its holder, which a refused process names.
"""

from __future__ import annotations

import errno
import fcntl
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from types import FrameType

LOCK_NAME = "run.lock"
TERMINATION_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class RunLockedError(RuntimeError):
    """Another process holds the lock of the run folder."""


class RunLock:
    """The lock of a run folder (``run.lock``): :meth:`acquire` it before writing there,
    :meth:`release` it at the end (also after an error)."""

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.path = Path(run_dir) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> int | None:
        """Take the lock and write this process's PID into it; returns the PID a stale lock file
        names (its process is gone: the lock is taken over), else None.

        Raises :class:`RunLockedError` naming the holder's PID while another process holds it.
        """
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                # a POSIX record lock: unlike flock, forked children (DataLoader workers) do not
                # inherit it, so it ends with this process even while orphaned workers linger
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                if err.errno not in (errno.EACCES, errno.EAGAIN):
                    os.close(fd)
                    raise
                holder = _read_pid(fd)
                os.close(fd)
                raise RunLockedError(
                    f"{self.path.parent} is in use: process {holder or '(PID unknown)'} is "
                    f"training in it (lock file {self.path}); wait for it to end or stop it, "
                    "then resume"
                ) from None
            if _same_file(fd, self.path):
                break
            os.close(fd)  # the holder removed the file between our open and flock: again
        stale = _read_pid(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return stale

    def release(self) -> None:
        """Remove the lock file and release the lock (nothing when not held)."""
        if self._fd is None:
            return
        with suppress(OSError):  # the run folder may be gone (a run that saved nothing)
            self.path.unlink()
        os.close(self._fd)
        self._fd = None


def _read_pid(fd: int) -> int | None:
    """The PID written in the lock file open as ``fd``, or None (empty or unreadable)."""
    try:
        return int(os.pread(fd, 32, 0).decode().strip())
    except (OSError, ValueError):
        return None


def _same_file(fd: int, path: Path) -> bool:
    """Whether ``path`` still names the file open as ``fd``."""
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


class Terminated(KeyboardInterrupt):
    """The process received a termination signal: ``signum`` (SIGINT, SIGTERM or SIGHUP). A
    ``KeyboardInterrupt``, so code that cleans up after Ctrl-C cleans up after it too."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


_deferral = threading.local()


def _handle(signum: int, frame: FrameType | None) -> None:
    if getattr(_deferral, "depth", 0):
        _deferral.pending = signum  # raised when the save ends
        return
    raise Terminated(signum)


@contextmanager
def termination_signals() -> Iterator[None]:
    """While inside, SIGINT, SIGTERM and SIGHUP raise :class:`Terminated` in the main thread (or
    after the end of a :func:`signals_deferred` block); the previous handlers are restored on
    exit. Does nothing outside the main thread (only it may install handlers)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _handle) for s in TERMINATION_SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


@contextmanager
def signals_deferred() -> Iterator[None]:
    """Let the block (a save) finish before a termination signal received inside it raises
    :class:`Terminated`; it raises when the block ends without an error of its own. A signal
    interrupting ``torch.save`` would otherwise surface as torch's ``RuntimeError``."""
    _deferral.depth = getattr(_deferral, "depth", 0) + 1
    pending = None
    try:
        yield
    finally:
        _deferral.depth -= 1
        if _deferral.depth == 0:
            pending, _deferral.pending = getattr(_deferral, "pending", None), None
    if pending is not None:  # not reached when the block raised: its error ends the run
        raise Terminated(pending)
