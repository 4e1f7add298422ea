"""Atomic file writes (a temporary file in the target's folder, synced, then renamed), the one
JSON writer, the clear error of a full disk, and the clean-up of interrupted writes."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, BinaryIO

TEMPORARY_PATTERN = re.compile(r"^\.(?P<name>.+)\.[A-Za-z0-9_]{8}\.tmp$")
"""The name of :func:`atomic_write`'s temporary file of ``NAME``: ``.NAME.<8 random>.tmp``."""


class DiskFullError(OSError):
    """A write failed for lack of space (``errno`` is ``ENOSPC``); the message names the folder,
    the file, the free space and the size being written."""

    def __str__(self) -> str:
        return str(self.strerror)


def is_disk_full(err: BaseException) -> bool:
    """Whether ``err``, or an exception it was raised from or during, is an ``ENOSPC`` error
    (``torch.save`` into a file object wraps it in a ``RuntimeError``)."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno == errno.ENOSPC:
            return True
        current = current.__cause__ or current.__context__
    return False


def format_size(n: int) -> str:
    """``n`` bytes for a message: ``512 B``, ``3.4 MB``, ``1.2 GB``."""
    size = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")


def disk_full_error(
    path: str | os.PathLike, size: int | None = None, written: int | None = None
) -> DiskFullError:
    """The error of a write to ``path`` that ran out of space: folder, file, free space, and the
    size being written (``size``) or, when unknown, how much was written before it failed."""
    path = Path(path)
    try:
        free = f"{format_size(shutil.disk_usage(path.parent).free)} free"
    except OSError:
        free = "free space unknown"
    if size is not None:
        need = f"{format_size(size)} to write"
    elif written:
        need = f"more than {format_size(written)} to write"
    else:
        need = "size to write unknown"
    return DiskFullError(
        errno.ENOSPC,
        f"no space left on the device of {path.parent} while writing {path.name} "
        f"({free}, {need}); free some space and resume from the last checkpoint (the previous "
        f"{path.name}, if any, is intact)",
    )


@contextmanager
def atomic_write(path: str | os.PathLike, size: int | None = None) -> Iterator[BinaryIO]:
    """Open a temporary binary file beside ``path``; on success it is synced and renamed to it.

    A crash, exception or Ctrl-C before the rename removes the temporary file and leaves any
    previous file at ``path`` untouched, so readers never see a partial file (a killed process
    leaves its temporary file: :func:`remove_stale_temporaries`). A full disk raises
    :class:`DiskFullError` (an ``OSError`` with ``errno.ENOSPC``) naming the folder, the file and
    the free space against ``size``, the number of bytes being written, when given.
    """
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        if err.errno == errno.ENOSPC:
            raise disk_full_error(path, size) from err
        raise
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        written = None
        with suppress(OSError):
            written = Path(tmp).stat().st_size
        Path(tmp).unlink(missing_ok=True)
        if is_disk_full(err) and not isinstance(err, DiskFullError):
            raise disk_full_error(path, size, written) from err
        raise


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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = text.encode()
    with atomic_write(path, size=len(data)) as f:
        f.write(data)
