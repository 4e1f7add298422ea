"""S-measure (structure measure), computed from per-image and per-quadrant level histograms
(numpy)."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from utils.metrics.base import MeanScoreAccumulator, as_numpy
from utils.metrics.levels import EPS

ALPHA = 0.5
"""Weight of the object term (``1 - ALPHA`` weighs the region term), PySODMetrics' ``alpha``."""


def _object_similarity(counts: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Object score ``2 m / (m^2 + 1 + s + eps)`` of the pixels of one class, from a histogram.

    ``counts`` (B x 256, float64) is the number of pixels at each level and ``values`` (B x 256)
    the value of that level; ``m`` is their mean and ``s`` their standard deviation with
    ``ddof=1`` (0 for a single pixel). Images without such pixels give a meaningless value.
    """
    n = counts.sum(axis=1)
    mean = (counts * values).sum(axis=1) / np.maximum(n, 1.0)
    deviation = values - mean[:, None]
    variance = (counts * deviation * deviation).sum(axis=1) / np.maximum(n - 1.0, 1.0)
    std = np.where(n > 1, np.sqrt(variance), 0.0)
    return 2.0 * mean / (mean * mean + 1.0 + std + EPS)


class SmeasureAccumulator(MeanScoreAccumulator):
    """S-measure: mean over images of ``max(0, alpha * object + (1 - alpha) * region)``.

    Per image, as PySODMetrics' ``Smeasure`` (``alpha = 0.5``):

    * empty ground truth: ``1 - mean(pred)``; full ground truth: ``mean(pred)``;
    * object term: ``s_fg * y + s_bg * (1 - y)`` where ``y`` is the foreground fraction,
      ``s_fg`` the object score of ``pred`` on the foreground and ``s_bg`` that of ``1 - pred`` on
      the background (see :func:`_object_similarity`);
    * region term: the image is split at ``(cy, cx) = round(centroid of the foreground) + 1``
      (row/column means of the foreground pixel indices, rounded half to even) into the
      quadrants ``[:cy, :cx]``, ``[:cy, cx:]``, ``[cy:, :cx]``, ``[cy:, cx:]``, weighted by their
      area fractions; each contributes the SSIM-like score ``a / (b + eps)`` with
      ``a = 4 x y s_xy`` and ``b = (x^2 + y^2) (s_x + s_y)`` (moments divided by ``N - 1 + eps``),
      1 when ``a == b == 0``, 0 when only ``a == 0``.

    Everything is computed from 256-level histograms (per image split by ground truth for the
    object term, per quadrant for the region term), all images of the batch at once.

    Degenerate case: when the foreground centroid rounds to the last row (column), the bottom
    (right) quadrants are empty and PySODMetrics returns NaN (mean of an empty slice, times a zero
    weight), which makes its dataset mean NaN. Here an empty quadrant contributes 0, i.e. the
    region term is the area-weighted mean over the non-empty quadrants. This happens only for
    foreground concentrated on the last row or column (e.g. an object inside the last two rows)
    and for images one pixel high or wide with a partial foreground.

    Exactness: where a quadrant's ground truth is uniform, the score is 1 or 0 depending on
    whether ``np.mean`` of its prediction values is exactly their common value; for a constant
    value other than 0 and 1 this is decided by ``np.mean`` on the quadrant of the numpy image,
    like PySODMetrics does (rare: constant maps, or a quadrant at one intermediate level).
    """

    HIGHER_IS_BETTER: ClassVar[dict[str, bool]] = {"Sm": True}

    def __init__(self, alpha: float = ALPHA) -> None:
        self.alpha = float(alpha)
        super().__init__()

    # ----------------------------------------------------------------------------------------
    # Region term
    # ----------------------------------------------------------------------------------------

    def _region(self, batch: Any) -> np.ndarray:
        """Region term per image (meaningless for images with an empty or full ground truth)."""
        _, h, w = batch.gt.shape
        cy, cx = batch.split_point
        counts = batch.quadrant_counts().astype(np.float64)
        lut = batch.stats.lut[:, None, :]  # B x 1 x 256
        background, foreground = counts[:, :, 0], counts[:, :, 1]  # B x 4 x 256
        pixels = background + foreground
        n = pixels.sum(axis=2)  # B x 4
        k = foreground.sum(axis=2)
        safe_n = np.maximum(n, 1.0)

        x = (pixels * lut).sum(axis=2) / safe_n
        y = k / safe_n
        denominator = n - 1.0 + EPS
        deviation = lut - x[:, :, None]
        sigma_x = (pixels * deviation * deviation).sum(axis=2) / denominator
        sigma_y = (k * (1.0 - y) * (1.0 - y) + (n - k) * y * y) / denominator
        sigma_xy = (
            (foreground * deviation).sum(axis=2) * (1.0 - y)
            + (background * deviation).sum(axis=2) * (0.0 - y)
        ) / denominator
        a = 4.0 * x * y * sigma_xy
        b = (x * x + y * y) * (sigma_x + sigma_y)
        # With a partial ground truth b > 0, so the score is continuous in a.
        mixed = np.where(a != 0, a / (b + EPS), 0.0)

        # With a uniform ground truth a == 0, and b == 0 exactly when the computed mean of the
        # prediction equals every value: the prediction is constant and np.mean is exact.
        present = pixels > 0
        constant = present.sum(axis=2) == 1
        value = np.where(present, lut, 0.0).sum(axis=2)  # the level of a constant quadrant
        uniform_gt = (k == 0) | (k == n)
        exact = (value == 0) | (value == 1) | (n == 1)
        uniform = (constant & exact).astype(np.float64)
        check = uniform_gt & constant & ~exact
        if check.any():
            self._numpy_mean_check(batch, cy, cx, value, check, uniform)

        score = np.where(uniform_gt, uniform, mixed)
        score = np.where(n > 0, score, 0.0)  # empty quadrant (PySODMetrics: NaN)

        area = float(h * w)
        w_lt = (cx * cy) / area
        w_rt = (cy * (w - cx)) / area
        w_lb = ((h - cy) * cx) / area
        w_rb = 1.0 - w_lt - w_rt - w_lb
        return score[:, 0] * w_lt + score[:, 1] * w_rt + score[:, 2] * w_lb + score[:, 3] * w_rb

    @staticmethod
    def _numpy_mean_check(
        batch: Any,
        cy: np.ndarray,
        cx: np.ndarray,
        value: np.ndarray,
        check: np.ndarray,
        uniform: np.ndarray,
    ) -> None:
        """Set ``uniform[i, q]`` to 1 where ``np.mean`` of the quadrant equals its value."""
        images: dict[int, np.ndarray] = {}
        for i, q in np.argwhere(check).tolist():
            if i not in images:
                images[i] = as_numpy(batch.pred_image(i))
            row, col = int(cy[i]), int(cx[i])
            rows = slice(0, row) if q < 2 else slice(row, None)
            cols = slice(0, col) if q % 2 == 0 else slice(col, None)
            mean = float(np.mean(images[i][rows, cols]))
            uniform[i, q] = float(mean == float(value[i, q]))

    # ----------------------------------------------------------------------------------------
    # Per-image score
    # ----------------------------------------------------------------------------------------

    def scores(self, batch: Any) -> np.ndarray:
        """Per-image S-measure (B, float64)."""
        stats = batch.stats
        counts = stats.counts.astype(np.float64)  # B x 2 x 256: background, foreground
        lut = stats.lut
        num_pixels = float(stats.num_pixels)
        gt_count = stats.gt_count
        mean_pred = (counts.sum(axis=1) * lut).sum(axis=1) / num_pixels
        y = gt_count / num_pixels

        fg_score = _object_similarity(counts[:, 1], lut)
        bg_score = _object_similarity(counts[:, 0], 1.0 - lut)
        object_score = fg_score * y + bg_score * (1.0 - y)
        combined = object_score * self.alpha + self._region(batch) * (1.0 - self.alpha)
        sm = np.maximum(combined, 0.0)
        sm = np.where(gt_count == stats.num_pixels, mean_pred, sm)
        return np.where(gt_count == 0, 1.0 - mean_pred, sm)
