"""Generated-on-first-use datasets: write once, atomically, and never clobber foreign folders.

``ensure_generated`` writes a dataset into a temporary sibling of ``data_dir``, writes a JSON
marker file (``MARKER``) last and renames the folder into place, so a partial folder is never
used. The marker holds the generator's parameters: a folder whose marker matches is used as is,
one with another marker is replaced, one without a marker (and not empty) is refused.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from typing import Any

MARKER = ".demo_complete"


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
    tmp = tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=parent)
    try:
        generate(tmp)
        with open(os.path.join(tmp, MARKER), "w") as f:
            json.dump(expected, f)
        for _ in range(10):
            try:
                os.rename(tmp, target)  # atomic; fails if target is a non-empty folder
                return
            except OSError:
                if _read_marker(target) == expected:
                    return  # another process won the race
            if _is_foreign(target):
                raise FileExistsError(f"{target} was created meanwhile by something else")
            stale = tempfile.mkdtemp(prefix=f".{name}.old-", dir=parent)
            with contextlib.suppress(FileNotFoundError):  # another process moved it first
                os.rename(target, os.path.join(stale, name))
            shutil.rmtree(stale, ignore_errors=True)
        raise OSError(f"could not move the generated {what} data into {target}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
