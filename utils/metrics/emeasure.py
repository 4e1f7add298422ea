"""E-measure (enhanced-alignment measure), computed from per-image histograms of the 256 levels
(numpy)."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from utils.metrics.base import CurveAccumulator
from utils.metrics.levels import EPS


def enhanced_alignment(
    true_pos: np.ndarray, false_pos: np.ndarray, gt_count: np.ndarray, num_pixels: int
) -> np.ndarray:
    """E-measure of binary maps given their confusion counts (int64, B x T) and ``#gt`` (B).

    Closed form of PySODMetrics' ``cal_em_with_threshold``, with its operation order: the
    enhanced alignment ``((2 a b / (a^2 + b^2 + eps) + 1)^2 / 4`` of the demeaned binary values
    ``a`` (prediction) and ``b`` (ground truth) is constant on each of the four confusion cells;
    their count-weighted sum is divided by ``N - 1 + eps``. An empty (full) ground truth gives
    ``#negatives / (N - 1 + eps)`` (``#positives / (N - 1 + eps)``).
    """
    gt_count = gt_count[:, None]
    pred_pos = true_pos + false_pos
    pred_neg = num_pixels - pred_pos
    false_neg = gt_count - true_pos
    true_neg = pred_neg - false_neg

    n = float(num_pixels)
    mean_pred = pred_pos / n
    mean_gt = gt_count / n
    pred_fg, pred_bg = 1.0 - mean_pred, 0.0 - mean_pred
    gt_fg, gt_bg = 1.0 - mean_gt, 0.0 - mean_gt

    total = np.zeros_like(mean_pred)
    cells = (
        (true_pos, pred_fg, gt_fg),
        (false_pos, pred_fg, gt_bg),
        (false_neg, pred_bg, gt_fg),
        (true_neg, pred_bg, gt_bg),
    )
    for count, a, b in cells:
        align = 2.0 * (a * b) / (a * a + b * b + EPS)
        shifted = align + 1.0
        total = total + shifted * shifted / 4.0 * count

    total = np.where(gt_count == 0, pred_neg, total)
    total = np.where(gt_count == num_pixels, pred_pos, total)
    return total / ((num_pixels - 1) + EPS)


class EmeasureAccumulator(CurveAccumulator):
    """E-measure: adaptive, and the 256-threshold dynamic curve.

    Per image, as PySODMetrics' ``Emeasure`` (see :func:`enhanced_alignment`):

    * adaptive E: binarise with ``pred >= min(2 * mean(pred), 1)`` (the same threshold as the
      adaptive F-measure, with numpy's rounding of the mean near ties);
    * dynamic curve: ``q = trunc(pred * 255)``; for every threshold ``t`` the pixels with
      ``q >= t`` are positive. Index ``i`` of the curve is threshold ``t = 255 - i`` (index 0 is
      the strictest threshold 255, index 255 is threshold 0, where every pixel is positive), the
      order of PySODMetrics' curve.

    The dataset curve (``"emeasure"``) is the mean of the per-image curves; ``maxE`` and
    ``meanE`` are its maximum and its mean, ``adpE`` the mean of the per-image adaptive E. The
    values are finite for every input (a 1x1 image divides by ``eps``, as PySODMetrics does).
    """

    HIGHER_IS_BETTER: ClassVar[dict[str, bool]] = {"maxE": True, "meanE": True, "adpE": True}
    CURVES: ClassVar[tuple[str, ...]] = ("emeasure",)
    SUMMARY_CURVE: ClassVar[str] = "emeasure"

    def scores(self, batch: Any) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Per-image adaptive E (B) and ``emeasure`` curve (B x 256, index i: threshold
        255 - i), float64, from the level histograms ``batch.stats``."""
        stats = batch.stats
        gt_count, n = stats.gt_count, stats.num_pixels
        selected = stats.adaptive_counts  # B x 2: background, foreground
        true_pos, false_pos = selected[:, 1:], selected[:, :1]  # B x 1: a single threshold
        adaptive = enhanced_alignment(true_pos, false_pos, gt_count, n)[:, 0]
        cumulative = stats.cumulative_counts  # B x 2 x 256
        curve = enhanced_alignment(cumulative[:, 1], cumulative[:, 0], gt_count, n)
        return adaptive, {"emeasure": curve}
