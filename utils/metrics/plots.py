"""The benchmark's curves: per dataset, precision-recall and F-measure-vs-threshold, one line per
method, as PNG and PDF (matplotlib with its headless ``Agg`` backend).

The curves are :meth:`~utils.metrics.metric_set.MetricSet.curves`: dataset means over images of the
256 thresholds of PySODMetrics (index ``i``: a pixel is positive when its 8-bit stretched value is
at least ``255 - i``), as PySODEvalToolkit plots them.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from utils.io.atomic import write_bytes
from utils.metrics import BETA

if TYPE_CHECKING:
    from matplotlib.figure import Figure

FIGURE_SIZE = (5.0, 4.2)
"""Inches; with :data:`DPI` a PNG of 500 x 420 pixels."""
DPI = 100

Curves = Mapping[str, Mapping[str, np.ndarray]]
"""Method name to its ``precision``, ``recall`` and ``fmeasure`` curves (256 values each)."""


def _figures(dataset: str, curves: Curves) -> dict[str, Figure]:
    """The two figures of ``dataset``: ``pr`` and ``fmeasure``."""
    import matplotlib

    matplotlib.use("Agg")  # headless: no display needed, never opens a window
    from matplotlib import pyplot as plt

    thresholds = np.arange(255, -1, -1)
    pr, pr_axes = plt.subplots(figsize=FIGURE_SIZE, dpi=DPI)
    fm, fm_axes = plt.subplots(figsize=FIGURE_SIZE, dpi=DPI)
    for method, curve in curves.items():
        pr_axes.plot(curve["recall"], curve["precision"], label=method, linewidth=1.5)
        fm_axes.plot(thresholds, curve["fmeasure"], label=method, linewidth=1.5)
    pr_axes.set(xlabel="recall", ylabel="precision", title=f"{dataset}: precision-recall")
    fm_axes.set(
        xlabel="threshold (8-bit)",
        ylabel=f"F-measure ($\\beta^2$ = {BETA:g})",
        title=f"{dataset}: F-measure vs threshold",
    )
    for axes, xlim in ((pr_axes, (0, 1)), (fm_axes, (0, 255))):
        axes.set_xlim(*xlim)
        axes.set_ylim(0, 1)
        axes.grid(True, alpha=0.3)
        axes.legend(loc="best")
    for figure in (pr, fm):
        figure.tight_layout()
    return {"pr": pr, "fmeasure": fm}


def write_curves(dataset: str, curves: Curves, folder: Path) -> list[Path]:
    """Write ``<dataset>_pr.png|pdf`` and ``<dataset>_fmeasure.png|pdf`` into ``folder``
    (atomically); returns the paths written (none when ``curves`` is empty)."""
    if not curves:
        return []
    from matplotlib import pyplot as plt

    written = []
    for kind, figure in _figures(dataset, curves).items():
        for suffix in ("png", "pdf"):
            buffer = io.BytesIO()
            figure.savefig(buffer, format=suffix)
            path = folder / f"{dataset}_{kind}.{suffix}"
            write_bytes(path, buffer.getvalue())
            written.append(path)
        plt.close(figure)
    return written
