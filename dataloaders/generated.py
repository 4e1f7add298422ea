"""Generated-on-first-use datasets: write once, atomically, and never clobber foreign folders.

``ensure_generated`` writes a dataset into a temporary sibling of ``data_dir``, writes a JSON
marker file (``MARKER``) last and renames the folder into place, so a partial folder is never
used (the files inside need no atomic write of their own: nothing reads the folder before the
rename). Folders get the mode ``os.makedirs`` gives (``0755`` under the umask ``022``). The
marker holds the generator's parameters: a folder whose marker matches is used as is, one with
another marker is replaced, one without a marker (and not empty) is refused.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
from collections.abc import Callable
from typing import Any

from utils.io.atomic import unwritable_errno, unwritable_error, write_json

MARKER = ".demo_complete"
_NAME_TRIES = 100


def _make_temporary_dir(target: str, kind: str) -> str:
    """A new empty sibling folder ``.NAME.KIND-<8 random>`` of ``target``, created with mode
    ``0o777`` less the umask (``tempfile.mkdtemp`` would make it ``0700``, and the data unreadable
    to others). A full or read-only disk raises :class:`~utils.io.atomic.UnwritableError`."""
    parent, name = os.path.split(target)
    for _ in range(_NAME_TRIES):
        path = os.path.join(parent, f".{name}.{kind}-{secrets.token_hex(4)}")
        try:
            os.mkdir(path)
            return path
        except FileExistsError:
            continue
        except OSError as err:
            code = unwritable_errno(err)
            if code is None:
                raise
            raise unwritable_error(target, code) from err
    raise FileExistsError(f"no free temporary folder name .{name}.{kind}-* in {parent}")


def _read_marker(folder: str) -> Any:
    """The parsed JSON marker of ``folder``, or None if missing or unreadable."""
    try:
        with open(os.path.join(folder, MARKER)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _is_foreign(folder: str) -> bool:
    """Whether ``folder`` exists and is neither empty nor generated (so must not be replaced)."""
    try:
        return _read_marker(folder) is None and bool(os.listdir(folder))
    except NotADirectoryError:
        return True
    except FileNotFoundError:
        return False


def _fill(folder: str, target: str, expected: dict, generate: Callable[[str], None]) -> None:
    """``generate(folder)``, then the marker. A full or read-only disk raises the one-line
    :class:`~utils.io.atomic.UnwritableError` naming ``target``."""
    try:
        generate(folder)
        write_json(os.path.join(folder, MARKER), expected)
    except OSError as err:
        code = unwritable_errno(err)
        if code is None:
            raise
        raise unwritable_error(target, code) from err


def ensure_generated(
    data_dir: str, expected: dict, generate: Callable[[str], None], what: str
) -> None:
    """Make ``data_dir`` hold the data that ``generate`` writes, with marker content ``expected``.

    Nothing is done if the marker of ``data_dir`` equals ``expected`` (a JSON-serialisable dict
    of the generator version and parameters). Otherwise ``generate(folder)`` fills a new empty
    temporary sibling folder, the marker is written last and the folder is renamed into place;
    generated data with another marker is replaced. If several processes race, the first rename
    wins and the others use its folder. A non-empty folder without the marker is left alone and
    reported, since it is not ours to delete. ``what`` names the data in messages (e.g. "demo":
    "not demo data", "the demo dataset").
    """
    target = os.path.abspath(data_dir)
    if _read_marker(target) == expected:
        return
    if _is_foreign(target):
        raise FileExistsError(
            f"{target} exists but is not {what} data (no {MARKER} file); "
            f"delete it or choose another data_dir for the {what} dataset"
        )
    parent, name = os.path.split(target)
    os.makedirs(parent, exist_ok=True)
    tmp = _make_temporary_dir(target, "tmp")
    try:
        _fill(tmp, target, expected, generate)
        for _ in range(10):
            try:
                os.rename(tmp, target)  # atomic; fails if target is a non-empty folder
                return
            except OSError:
                if _read_marker(target) == expected:
                    return  # another process won the race
            if _is_foreign(target):
                raise FileExistsError(f"{target} was created meanwhile by something else")
            stale = _make_temporary_dir(target, "old")
            with contextlib.suppress(FileNotFoundError):  # another process moved it first
                os.rename(target, os.path.join(stale, name))
            shutil.rmtree(stale, ignore_errors=True)
        raise OSError(f"could not move the generated {what} data into {target}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
