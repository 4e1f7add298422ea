"""Run folders: ``<save_dir>/runs/<name>/<MMDD_HHMMSS>/`` with the config, checkpoints, TensorBoard
events and ``metrics.jsonl``."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

from utils.io.atomic import disk_full_error, write_text

CHECKPOINT_PATTERN = re.compile(r"checkpoint-epoch(\d+)\.pth$")


def new_run_dir(save_dir: str | Path, name: str) -> Path:
    """Create a fresh, uniquely named run folder."""
    parent = Path(save_dir) / "runs" / name
    parent.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%m%d_%H%M%S")
    for n in range(1000):
        run = parent / (stamp if n == 0 else f"{stamp}_{n}")
        try:
            run.mkdir()
            return run
        except FileExistsError:
            continue
    raise RuntimeError(f"could not create a new run folder in {parent}")


def periodic_checkpoints(run_dir: Path) -> list[Path]:
    """``checkpoint-epochN.pth`` files of a run, oldest epoch first."""
    found = [
        (int(m.group(1)), p) for p in run_dir.iterdir() if (m := CHECKPOINT_PATTERN.match(p.name))
    ]
    return [p for _, p in sorted(found)]


LAST_CHECKPOINT = "checkpoint-last.pth"
"""The iteration checkpoint (``trainer.save_every_iters``), rewritten in place."""


def run_dirs(save_dir: str | Path, name: str) -> list[Path]:
    """The run folders of the run ``name`` under ``save_dir`` (``<save_dir>/runs/<name>/*``)."""
    parent = Path(save_dir) / "runs" / name
    return sorted(p for p in parent.iterdir() if p.is_dir()) if parent.is_dir() else []


def newest_checkpoint(folders: list[Path]) -> Path | None:
    """The latest written ``checkpoint-epochN.pth`` or ``checkpoint-last.pth`` in ``folders``,
    or None. Checkpoints are written atomically, so every one found is complete. Raises
    ``FileNotFoundError`` for a folder that does not exist."""
    for folder in folders:
        if not folder.is_dir():
            raise FileNotFoundError(f"run folder {folder} does not exist")
    found = [
        path
        for folder in folders
        for path in (*periodic_checkpoints(folder), folder / LAST_CHECKPOINT)
        if path.is_file()
    ]
    return max(found, key=lambda path: path.stat().st_mtime_ns, default=None)


def has_results(run_dir: Path) -> bool:
    """Whether a run saved anything worth keeping: a checkpoint or a ``metrics.jsonl`` line."""
    metrics = run_dir / "metrics.jsonl"
    return any(run_dir.glob("*.pth")) or (metrics.is_file() and metrics.stat().st_size > 0)


def remove_run_dir(run_dir: Path) -> None:
    """Delete ``run_dir`` and then its ``runs/<name>`` and ``runs`` parents if they are empty."""
    shutil.rmtree(run_dir, ignore_errors=True)
    for parent in (run_dir.parent, run_dir.parent.parent):
        try:
            parent.rmdir()
        except OSError:  # not empty (other runs), or already gone
            break


class MetricsLog:
    """``metrics.jsonl``: one JSON object per epoch, appended as complete, synced lines."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, record: dict[str, Any]) -> None:
        """Append ``record`` as one line in one write, synced. A write that fails part-way (a
        full disk) is cut off again, so the file holds complete lines only; a full disk raises
        :class:`~utils.io.atomic.DiskFullError`."""
        data = (json.dumps(record) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            start = os.fstat(fd).st_size
            try:
                written = os.write(fd, data)
                if written != len(data):  # a short write: the disk filled up
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                os.fsync(fd)
            except OSError as err:
                with suppress(OSError):
                    os.ftruncate(fd, start)
                if err.errno == errno.ENOSPC:
                    raise disk_full_error(self.path, len(data)) from err
                raise
        finally:
            os.close(fd)

    def first_epoch_with(self, key: str, value: float) -> int | None:
        """The first epoch whose record has ``value`` under ``key`` (e.g. the epoch that reached
        a checkpoint's ``monitor_best``: a later equal value is no improvement), or None;
        unreadable lines are passed over."""
        if not self.path.exists():
            return None
        for line in self.path.read_text(errors="replace").splitlines():
            with suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict) and record.get(key) == value:
                    return record.get("epoch")
        return None

    def truncate_after(self, epoch: int) -> list[int]:
        """Drop the lines of epochs after ``epoch`` (a resumed run writes them again), and any
        torn or unreadable line (e.g. of a crash or a full disk while appending); returns the
        numbers (from 1) of the lines dropped as unreadable."""
        if not self.path.exists():
            return []
        kept, unreadable = [], []
        text = self.path.read_bytes().decode("utf-8", errors="replace")
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                line_epoch = record["epoch"]
                if not isinstance(line_epoch, int):
                    raise TypeError(f"epoch {line_epoch!r}")
            except (ValueError, TypeError, KeyError):
                unreadable.append(number)
                continue
            if line_epoch <= epoch:
                kept.append(line)
        write_text(self.path, "".join(line + "\n" for line in kept))
        return unreadable
