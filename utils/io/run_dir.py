"""Run folders: ``<save_dir>/runs/<name>/<MMDD_HHMMSS>/`` with the config, checkpoints, TensorBoard
events and ``metrics.jsonl``."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

from utils.io.atomic import write_text

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


class MetricsLog:
    """``metrics.jsonl``: one JSON object per epoch."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, record: dict[str, Any]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")

    def truncate_after(self, epoch: int) -> None:
        """Drop the lines of epochs after ``epoch`` (a resumed run writes them again)."""
        if not self.path.exists():
            return
        lines = [line for line in self.path.read_text().splitlines() if line.strip()]
        kept = [line for line in lines if json.loads(line)["epoch"] <= epoch]
        write_text(self.path, "".join(line + "\n" for line in kept))
