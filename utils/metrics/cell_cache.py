"""The benchmark's cache of one method on one dataset: the metric state of its scored pairs and
its file report, keyed by everything the numbers depend on.

The key is a SHA-256 over the cache format, the metric names, the shapes of the metric state
and every pair's two paths, sizes and modification times (ns). Adding a method, or touching the
files of one, thus recomputes that method only; a cache whose key differs is ignored and
replaced. Files are written atomically (:func:`utils.io.atomic.write_json`), so a run stopped
half-way keeps every cell it finished. State arrays are stored as JSON lists of floats, which
round-trip float64 exactly.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from utils.io.atomic import write_json
from utils.metrics.scoring import Pair

CACHE_FORMAT = 1
"""Version of the cache file layout; part of the key."""


@dataclass
class CellResult:
    """One method on one dataset: the metric ``state`` (the
    :meth:`~utils.metrics.metric_set.MetricSet.state_arrays` summed over its pairs) and the file
    report of :func:`utils.metrics.folders.evaluate_folders` (``num_pairs``,
    ``missing_predictions``, ``unmatched_predictions``, ``resized_predictions``, ``unreadable``,
    ``binary_01_masks``)."""

    state: list[np.ndarray]
    num_pairs: int
    missing_predictions: list[str] = field(default_factory=list)
    unmatched_predictions: list[str] = field(default_factory=list)
    resized_predictions: int = 0
    unreadable: list[str] = field(default_factory=list)
    binary_01_masks: int = 0

    def report(self) -> dict[str, Any]:
        """The file report (everything but the state), JSON-ready."""
        return {k: v for k, v in asdict(self).items() if k != "state"}


def cache_key(pairs: Sequence[Pair], metrics: Sequence[str], shapes: Sequence[Any]) -> str:
    """The hex SHA-256 key of a cell: :data:`CACHE_FORMAT`, ``metrics``, the state ``shapes``
    and each pair's paths, sizes and mtimes. Raises OSError when a file cannot be stat'ed."""
    digest = hashlib.sha256(json.dumps([CACHE_FORMAT, list(metrics), list(shapes)]).encode())
    for pair in pairs:
        for path in pair:
            info = os.stat(path)
            digest.update(f"{path}\0{info.st_size}\0{info.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def load_cell(path: Path, key: str) -> CellResult | None:
    """The cached cell at ``path`` if it exists, is readable and has ``key``; else None."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("key") != key:
            return None
        state = [np.asarray(values, dtype=np.float64) for values in data.pop("state")]
        data.pop("key")
        return CellResult(state=state, **data)
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None  # absent, unreadable or of another layout: recomputed


def save_cell(path: Path, key: str, cell: CellResult) -> None:
    """Write ``cell`` with ``key`` to ``path`` atomically (parent folders created)."""
    write_json(path, {"key": key, "state": [a.tolist() for a in cell.state], **cell.report()})
