"""MAE and F-measure, computed from per-image histograms of the 256 levels (numpy)."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from utils.metrics.base import CurveAccumulator, MeanScoreAccumulator

BETA = 0.3
"""Weight ``beta^2`` of the precision in the F-measure (PySODMetrics' ``beta``)."""


class MAEAccumulator(MeanScoreAccumulator):
    """Mean absolute error: mean over images of ``mean(|pred - gt|)``."""

    HIGHER_IS_BETTER: ClassVar[dict[str, bool]] = {"MAE": False}

    def scores(self, batch: Any) -> np.ndarray:
        """Per-image MAE (B, float64), from the level histograms ``batch.stats``."""
        # |pred - gt| is pred on the background and 1 - pred on the foreground (pred <= 1).
        stats = batch.stats
        counts, lut = stats.counts, stats.lut
        error = (counts[:, 0] * lut).sum(axis=1) + (counts[:, 1] * (1.0 - lut)).sum(axis=1)
        return error / float(stats.num_pixels)


def f_beta(precision: np.ndarray, recall: np.ndarray) -> np.ndarray:
    """``(1 + b) * P * R / (b * P + R)`` with ``b = BETA``, 0 where ``P * R == 0`` (float64, any
    shape; PySODMetrics' operation order)."""
    numerator = (1 + BETA) * precision * recall
    denominator = np.where(numerator == 0, 1.0, BETA * precision + recall)
    return numerator / denominator


class FmeasureAccumulator(CurveAccumulator):
    """F-measure (``beta^2 = 0.3``): adaptive, and the 256-threshold dynamic curves.

    Per image, as PySODMetrics' ``Fmeasure``:

    * adaptive F: binarise with ``pred >= min(2 * mean(pred), 1)``; F is 0 when the binary map and
      the ground truth do not intersect;
    * dynamic curves: ``q = trunc(pred * 255)`` (uint8); for every threshold ``t`` the pixels with
      ``q >= t`` are positive. Index ``i`` of a curve is threshold ``t = 255 - i`` (index 0 is the
      strictest threshold 255, index 255 is threshold 0, where every pixel is positive).
      Precision is 0 where nothing is positive, recall uses ``max(#gt, 1)``, and F is 0 where
      precision * recall is 0.

    The dataset curves are the means of the per-image curves; ``maxF`` and ``meanF`` are the
    maximum and the mean of the dataset F curve.
    """

    HIGHER_IS_BETTER: ClassVar[dict[str, bool]] = {"maxF": True, "meanF": True, "adpF": True}
    CURVES: ClassVar[tuple[str, ...]] = ("precision", "recall", "fmeasure")
    SUMMARY_CURVE: ClassVar[str] = "fmeasure"

    def scores(self, batch: Any) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Per-image adaptive F (B) and ``precision``, ``recall``, ``fmeasure`` curves (B x 256,
        index i: threshold 255 - i), float64, from the level histograms ``batch.stats``."""
        stats = batch.stats
        gt_count = np.maximum(stats.gt_count, 1).astype(np.float64)

        selected = stats.adaptive_counts  # B x 2: background, foreground
        intersection = selected[:, 1].astype(np.float64)
        positives = selected.sum(axis=1).astype(np.float64)
        precision = intersection / np.maximum(positives, 1.0)
        recall = intersection / gt_count
        adaptive = np.where(intersection == 0, 0.0, f_beta(precision, recall))

        cumulative = stats.cumulative_counts  # B x 2 x 256
        true_pos = cumulative[:, 1].astype(np.float64)
        pred_pos = np.maximum(cumulative[:, 0] + cumulative[:, 1], 1).astype(np.float64)
        precision = true_pos / pred_pos
        recall = true_pos / gt_count[:, None]
        curves = {"precision": precision, "recall": recall, "fmeasure": f_beta(precision, recall)}
        return adaptive, curves
