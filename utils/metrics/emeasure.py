"""E-measure (enhanced-alignment measure), computed from per-image histograms of the 256 levels."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch

from utils.metrics.base import Accumulator
from utils.metrics.prepare import NUM_THRESHOLDS, PreparedBatch, divide

EPS = 2.0**-52
"""PySODMetrics' ``EPS = np.spacing(1)`` (MATLAB's ``eps``)."""


def enhanced_alignment(
    true_pos: torch.Tensor, false_pos: torch.Tensor, gt_count: torch.Tensor, num_pixels: int
) -> torch.Tensor:
    """E-measure of binary maps given their confusion counts (int64, B x T) and ``#gt`` (B).

    Closed form of PySODMetrics' ``cal_em_with_threshold``, with its operation order: the
    enhanced alignment ``((2 a b / (a^2 + b^2 + eps) + 1)^2 / 4`` of the demeaned binary values
    ``a`` (prediction) and ``b`` (ground truth) is constant on each of the four confusion cells;
    their count-weighted sum is divided by ``N - 1 + eps``. An empty (full) ground truth gives
    ``#negatives / (N - 1 + eps)`` (``#positives / (N - 1 + eps)``).
    """
    device = true_pos.device
    gt_count = gt_count[:, None]
    pred_pos = true_pos + false_pos
    pred_neg = num_pixels - pred_pos
    false_neg = gt_count - true_pos
    true_neg = pred_neg - false_neg

    n = torch.tensor(float(num_pixels), dtype=torch.float64, device=device)
    mean_pred = divide(pred_pos.to(torch.float64), n)
    mean_gt = divide(gt_count.to(torch.float64), n)
    pred_fg, pred_bg = 1.0 - mean_pred, 0.0 - mean_pred
    gt_fg, gt_bg = 1.0 - mean_gt, 0.0 - mean_gt

    total = torch.zeros_like(mean_pred)
    cells = (
        (true_pos, pred_fg, gt_fg),
        (false_pos, pred_fg, gt_bg),
        (false_neg, pred_bg, gt_fg),
        (true_neg, pred_bg, gt_bg),
    )
    for count, a, b in cells:
        align = divide(2.0 * (a * b), a * a + b * b + EPS)
        shifted = align + 1.0
        total = total + shifted * shifted / 4.0 * count.to(torch.float64)

    total = torch.where(gt_count == 0, pred_neg.to(torch.float64), total)
    total = torch.where(gt_count == num_pixels, pred_pos.to(torch.float64), total)
    denominator = torch.tensor((num_pixels - 1) + EPS, dtype=torch.float64, device=device)
    return divide(total, denominator)


class EmeasureAccumulator(Accumulator):
    """E-measure: adaptive, and the 256-threshold dynamic curve.

    Per image, as PySODMetrics' ``Emeasure`` (see :func:`enhanced_alignment`):

    * adaptive E: binarise with ``pred >= min(2 * mean(pred), 1)`` (the same threshold as the
      adaptive F-measure, with numpy's rounding of the mean near ties);
    * dynamic curve: ``q = trunc(pred * 255)``; for every threshold ``t`` the pixels with
      ``q >= t`` are positive. Index ``i`` of the curve is threshold ``t = 255 - i`` (index 0 is
      the strictest threshold 255, index 255 is threshold 0, where every pixel is positive), the
      order of PySODMetrics' curve.

    The dataset curve is the mean of the per-image curves; ``maxE`` and ``meanE`` are its maximum
    and its mean, ``adpE`` the mean of the per-image adaptive E. The values are finite for every
    input (a 1x1 image divides by ``eps``, as PySODMetrics does).
    """

    HIGHER_IS_BETTER: ClassVar[dict[str, bool]] = {"maxE": True, "meanE": True, "adpE": True}

    def _init_state(self) -> None:
        self.adaptive_sum = self._zeros()
        self.curve_sum = self._zeros(NUM_THRESHOLDS)
        self.count = self._zeros()

    def state_tensors(self) -> list[torch.Tensor]:
        return [self.adaptive_sum, self.curve_sum, self.count]

    def scores(self, batch: PreparedBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-image adaptive E (B) and E curve (B x 256, index i: threshold 255 - i)."""
        counts = batch.level_counts  # B x 2 x 256 (background, foreground) per 8-bit level
        lut = batch.lut
        gt_count = batch.gt_count

        # Adaptive: the binarisation selects whole 8-bit levels.
        threshold = (2.0 * batch.mean).clamp(max=1.0)
        selected = (lut >= threshold[:, None]).to(torch.int64)
        true_pos = (counts[:, 1] * selected).sum(dim=1, keepdim=True)
        false_pos = (counts[:, 0] * selected).sum(dim=1, keepdim=True)
        adaptive = enhanced_alignment(true_pos, false_pos, gt_count, batch.num_pixels)[:, 0]

        # Curve: histogram of q = trunc(pred * 255), cumulated from bin 255 down, so that
        # [..., i] counts the pixels with q >= 255 - i (levels absent from the image are clamped
        # into range; they have no pixels).
        bins = (lut * 255.0).to(torch.int64).clamp_(0, NUM_THRESHOLDS - 1)
        bins = bins[:, None, :].expand_as(counts)
        hist = torch.zeros_like(counts).scatter_add_(2, bins, counts)
        cumulative = hist.flip(-1).cumsum(-1)
        curve = enhanced_alignment(cumulative[:, 1], cumulative[:, 0], gt_count, batch.num_pixels)
        return adaptive, curve

    def update(self, batch: PreparedBatch) -> None:
        adaptive, curve = self.scores(batch)
        self.adaptive_sum += adaptive.sum().to(self.device)
        self.curve_sum += curve.sum(0).to(self.device)
        self.count += batch.batch_size

    def curves(self) -> dict[str, np.ndarray]:
        """Dataset-mean E curve under ``"emeasure"`` (index i: threshold 255 - i); raises
        RuntimeError when no image was added."""
        self._check_not_empty()
        return {"emeasure": (self.curve_sum / self.count).cpu().numpy()}

    def compute(self) -> dict[str, float]:
        self._check_not_empty()
        curve = self.curve_sum / self.count
        return {
            "maxE": curve.max().item(),
            "meanE": curve.mean().item(),
            "adpE": (self.adaptive_sum / self.count).item(),
        }
