"""MAE and F-measure, computed from per-image histograms of the 256 levels."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch

from utils.metrics.base import Accumulator
from utils.metrics.prepare import NUM_THRESHOLDS, PreparedBatch, divide

BETA = 0.3
"""Weight ``beta^2`` of the precision in the F-measure (PySODMetrics' ``beta``)."""


class MAEAccumulator(Accumulator):
    """Mean absolute error: mean over images of ``mean(|pred - gt|)``."""

    HIGHER_IS_BETTER: ClassVar[dict[str, bool]] = {"MAE": False}

    def _init_state(self) -> None:
        self.mae_sum = self._zeros()
        self.count = self._zeros()

    def state_tensors(self) -> list[torch.Tensor]:
        return [self.mae_sum, self.count]

    def update(self, batch: PreparedBatch) -> None:
        # |pred - gt| is pred on the background and 1 - pred on the foreground (pred <= 1).
        counts = batch.level_counts.to(torch.float64)
        lut = batch.lut
        error = (counts[:, 0] * lut).sum(dim=1) + (counts[:, 1] * (1.0 - lut)).sum(dim=1)
        per_image = divide(error, float(batch.num_pixels))
        self.mae_sum += per_image.sum().to(self.device)
        self.count += batch.batch_size

    def compute(self) -> dict[str, float]:
        self._check_not_empty()
        return {"MAE": (self.mae_sum / self.count).item()}


class FmeasureAccumulator(Accumulator):
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

    def _init_state(self) -> None:
        self.adaptive_sum = self._zeros()
        self.precision_sum = self._zeros(NUM_THRESHOLDS)
        self.recall_sum = self._zeros(NUM_THRESHOLDS)
        self.fmeasure_sum = self._zeros(NUM_THRESHOLDS)
        self.count = self._zeros()

    def state_tensors(self) -> list[torch.Tensor]:
        return [
            self.adaptive_sum,
            self.precision_sum,
            self.recall_sum,
            self.fmeasure_sum,
            self.count,
        ]

    @staticmethod
    def _f_beta(precision: torch.Tensor, recall: torch.Tensor) -> torch.Tensor:
        """``(1 + b) * P * R / (b * P + R)``, 0 where ``P * R == 0`` (same operation order)."""
        numerator = (1 + BETA) * precision * recall
        denominator = torch.where(numerator == 0, 1.0, BETA * precision + recall)
        return numerator / denominator

    def update(self, batch: PreparedBatch) -> None:
        counts = batch.level_counts  # B x 2 x 256 (background, foreground) per 8-bit level
        lut = batch.lut
        gt_count = batch.gt_count.to(torch.float64).clamp(min=1.0)

        # Adaptive F-measure: the binarisation selects whole 8-bit levels.
        threshold = (2.0 * batch.mean).clamp(max=1.0)
        selected = (lut >= threshold[:, None]).to(torch.int64)  # B x 256
        intersection = (counts[:, 1] * selected).sum(dim=1).to(torch.float64)
        positives = (counts.sum(dim=1) * selected).sum(dim=1).to(torch.float64)
        precision = intersection / positives.clamp(min=1.0)
        recall = intersection / gt_count
        adaptive = torch.where(intersection == 0, 0.0, self._f_beta(precision, recall))

        # Dynamic curves: histogram of q = trunc(pred * 255) (as numpy's astype(np.uint8)), then
        # cumulative sums from bin 255 down, so that [..., i] counts the pixels with q >= 255 - i.
        # (Levels outside the image's [min, max] have no pixels; clamp their bins into range.)
        bins = (lut * 255.0).to(torch.int64).clamp_(0, NUM_THRESHOLDS - 1)
        bins = bins[:, None, :].expand_as(counts)
        hist = torch.zeros_like(counts).scatter_add_(2, bins, counts)
        cumulative = hist.flip(-1).cumsum(-1)
        true_pos = cumulative[:, 1].to(torch.float64)
        pred_pos = (cumulative[:, 0] + cumulative[:, 1]).clamp(min=1).to(torch.float64)
        precision = true_pos / pred_pos
        recall = true_pos / gt_count[:, None]
        fmeasure = self._f_beta(precision, recall)

        self.adaptive_sum += adaptive.sum().to(self.device)
        self.precision_sum += precision.sum(0).to(self.device)
        self.recall_sum += recall.sum(0).to(self.device)
        self.fmeasure_sum += fmeasure.sum(0).to(self.device)
        self.count += batch.batch_size

    def curves(self) -> dict[str, np.ndarray]:
        """Dataset-mean ``precision``, ``recall`` and ``fmeasure`` curves (index i: threshold
        255 - i); raises RuntimeError when no image was added."""
        self._check_not_empty()
        return {
            "precision": (self.precision_sum / self.count).cpu().numpy(),
            "recall": (self.recall_sum / self.count).cpu().numpy(),
            "fmeasure": (self.fmeasure_sum / self.count).cpu().numpy(),
        }

    def compute(self) -> dict[str, float]:
        self._check_not_empty()
        curve = self.fmeasure_sum / self.count
        return {
            "maxF": curve.max().item(),
            "meanF": curve.mean().item(),
            "adpF": (self.adaptive_sum / self.count).item(),
        }
