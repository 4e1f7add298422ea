"""Atomic file writes (a temporary file in the target's folder, synced, then renamed), the one
JSON writer, the clear errors of a full or read-only disk, and the clean-up of interrupted writes.

Every file the project writes goes through :func:`atomic_write` (a file object) or
:func:`atomic_path` (a path, for writers that open the file themselves, such as
``torch.onnx.export``). Files are created like ``open(path, "w")`` creates them: mode ``0o666``
less the umask (``0644`` under the usual umask ``022``), not ``mkstemp``'s ``0600``.
"""

from __future__ import annotations

import errno
import json
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, BinaryIO, cast

TEMPORARY_PATTERN = re.compile(r"^\.(?P<name>.+)\.[A-Za-z0-9_]{8}\.tmp$")
"""The name of :func:`atomic_write`'s temporary file of ``NAME``: ``.NAME.<8 random>.tmp``."""
FILE_MODE = 0o666
"""The mode files are created with, less the umask (as ``open(path, "w")`` does)."""
NEARLY_FULL = 2**20
"""Free bytes under which a write that failed without an errno (``torch.save``'s ``RuntimeError:
... unexpected pos``) is taken for a full disk."""
_NAME_TRIES = 100


class UnwritableError(OSError):
    """A write failed because of the disk, not of the data: it is full (:class:`DiskFullError`)
    or read-only (:class:`ReadOnlyFileSystemError`). ``str()`` is the one-line message, naming the
    file, its folder and the free space; ``errno`` and ``filename`` are set."""

    def __str__(self) -> str:
        return str(self.strerror)


class DiskFullError(UnwritableError):
    """A write failed for lack of space (``errno`` is ``ENOSPC``, or ``EDQUOT`` for a quota)."""


class ReadOnlyFileSystemError(UnwritableError):
    """A write failed because the file system is read-only (``errno`` is ``EROFS``)."""


_UNWRITABLE = {  # errno: (class, what the message says)
    errno.ENOSPC: (DiskFullError, "no space left"),
    errno.EDQUOT: (DiskFullError, "disk quota exceeded"),
    errno.EROFS: (ReadOnlyFileSystemError, "read-only file system"),
}


def unwritable_errno(err: BaseException) -> int | None:
    """The ``ENOSPC``, ``EDQUOT`` or ``EROFS`` of ``err`` or of an exception it was raised from or
    during (``torch.save`` into a file object wraps it in a ``RuntimeError``), else None."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _UNWRITABLE:
            return current.errno
        current = current.__cause__ or current.__context__
    return None


def is_disk_full(err: BaseException) -> bool:
    """Whether ``err``, or an exception it was raised from or during, is an ``ENOSPC`` error."""
    return unwritable_errno(err) == errno.ENOSPC


def format_size(n: int) -> str:
    """``n`` bytes for a message: ``512 B``, ``3.4 MB``, ``1.2 GB``."""
    size = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")


def _free_bytes(folder: Path) -> int | None:
    """Bytes free for this user in ``folder``'s file system, or None if unknown."""
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def unwritable_error(
    path: str | os.PathLike,
    code: int = errno.ENOSPC,
    size: int | None = None,
    written: int | None = None,
) -> UnwritableError:
    """The one-line error of a write to ``path`` that failed with ``code`` (``ENOSPC``, ``EDQUOT``
    or ``EROFS``): the problem, the folder, the file, the free space, and the size being written
    (``size``) or, when unknown, how much was written before it failed (``written``)."""
    path = Path(path)
    cls, problem = _UNWRITABLE[code]
    free = _free_bytes(path.parent)
    parts = [f"{format_size(free)} free" if free is not None else "free space unknown"]
    if size is not None:
        parts.append(f"{format_size(size)} to write")
    elif written:
        parts.append(f"more than {format_size(written)} to write")
    elif code != errno.EROFS:
        parts.append("size to write unknown")
    advice = "write to another folder" if code == errno.EROFS else "free some space and try again"
    message = (
        f"{problem} on the device of {path.parent} while writing {path.name} "
        f"({', '.join(parts)}); {advice} (the previous {path.name}, if any, is intact)"
    )
    return cls(code, message, str(path))


def disk_full_error(
    path: str | os.PathLike, size: int | None = None, written: int | None = None
) -> DiskFullError:
    """:func:`unwritable_error` of ``ENOSPC``: the error of a write to ``path`` out of space."""
    return cast(DiskFullError, unwritable_error(path, errno.ENOSPC, size, written))


def _create_temporary(path: Path, size: int | None) -> tuple[int, Path]:
    """A new empty temporary file beside ``path`` (``.NAME.<8 random>.tmp``, created with
    :data:`FILE_MODE` less the umask): its open descriptor and path. Raises
    :class:`UnwritableError` for a full or read-only disk."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(_NAME_TRIES):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(tmp, flags, FILE_MODE), tmp
        except FileExistsError:
            continue
        except OSError as err:
            if err.errno in _UNWRITABLE:
                raise unwritable_error(path, err.errno, size) from err
            raise
    raise FileExistsError(errno.EEXIST, f"no free temporary name for {path}", str(path))


def _disk_problem(err: BaseException, folder: Path) -> int | None:
    """The unwritable errno behind ``err``, raised while writing into ``folder``: a chained one,
    else ``ENOSPC`` when a writer error without an errno (torch's ``RuntimeError``) coincides
    with less than :data:`NEARLY_FULL` bytes free (None otherwise, and for an ``err`` that is
    already an :class:`UnwritableError`). Call it before the temporary file is removed."""
    if isinstance(err, UnwritableError):
        return None
    code = unwritable_errno(err)
    no_errno = isinstance(err, RuntimeError) or (isinstance(err, OSError) and err.errno is None)
    if code is None and no_errno:
        free = _free_bytes(folder)
        if free is not None and free < NEARLY_FULL:
            code = errno.ENOSPC
    return code


def _discard(tmp: Path, path: Path, size: int | None, err: BaseException) -> None:
    """Remove the temporary file of a failed write, then raise the clear error of a full or
    read-only disk (from ``err``) if that is why it failed; else return (the caller re-raises)."""
    code = _disk_problem(err, path.parent)
    written = None
    with suppress(OSError):
        written = tmp.stat().st_size
    tmp.unlink(missing_ok=True)
    if code is not None:
        raise unwritable_error(path, code, size, written) from err


@contextmanager
def atomic_write(path: str | os.PathLike, size: int | None = None) -> Iterator[BinaryIO]:
    """Open a temporary binary file beside ``path``; on success it is synced and renamed to it.

    A crash, exception or Ctrl-C before the rename removes the temporary file and leaves any
    previous file at ``path`` untouched, so readers never see a partial file (a killed process
    leaves its temporary file: :func:`remove_stale_temporaries`). The file gets the mode
    ``open(path, "w")`` would give it (:data:`FILE_MODE` less the umask). A full disk raises
    :class:`DiskFullError` and a read-only one :class:`ReadOnlyFileSystemError` (both
    :class:`UnwritableError`, an ``OSError``) naming the folder, the file and the free space
    against ``size``, the number of bytes being written, when given.
    """
    path = Path(path)
    fd, tmp = _create_temporary(path, size)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        _discard(tmp, path, size, err)
        raise


@contextmanager
def atomic_path(path: str | os.PathLike, size: int | None = None) -> Iterator[Path]:
    """A temporary file beside ``path`` (empty, closed) for a writer that takes a file name; on
    success it is synced and renamed to ``path``.

    For writers that open the file themselves (``torch.onnx.export``); a check of the written
    file can run on the temporary path inside the ``with`` block, so that a file failing it never
    replaces ``path``. Failures are handled as by :func:`atomic_write`.
    """
    path = Path(path)
    fd, tmp = _create_temporary(path, size)
    os.close(fd)
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException as err:
        _discard(tmp, path, size, err)
        raise


def check_writable(path: str | os.PathLike) -> None:
    """Check now, before long work, that a file can be written at ``path`` later: its folder is
    created as the writers create it, then the temporary file a write would use is made and
    removed. Raises ``IsADirectoryError`` when ``path`` is a folder, :class:`UnwritableError`
    for a full or read-only disk, ``OSError`` (e.g. ``PermissionError``) naming the path for
    anything else."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "a folder, not a file name", str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temporary(path, None)
    os.close(fd)
    tmp.unlink()


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporary files that interrupted :func:`atomic_write` calls left in ``folder``
    (``.NAME.<random>.tmp``, e.g. of a process killed during a checkpoint save); returns them.

    Call it only while nothing writes into ``folder``."""
    removed = []
    for p in sorted(Path(folder).iterdir()):
        if TEMPORARY_PATTERN.match(p.name) and p.is_file():
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Write ``data`` as indented JSON (2 spaces, trailing newline) to ``path`` atomically,
    creating the parent folders. Raises ``OSError`` (e.g. a full disk) with ``path`` intact."""
    write_text(path, json.dumps(data, indent=2) + "\n")


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically, creating the parent folders."""
    write_bytes(path, text.encode())


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, creating the parent folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, size=len(data)) as f:
        f.write(data)
