"""The per-image 256-level histograms of a batch and what follows from them, in numpy (no torch).

PySODMetrics' ``prepare_data`` turns an 8-bit map into ``p = pred_uint8 / 255`` min-max
stretched over the image, and the mask into ``gt_uint8 > 128``. Every pixel at the same 8-bit
level then has the same prepared value, so the metrics that depend only on the value of each
pixel (MAE, F-measure, E-measure, the binary metrics, the S-measure's object term) follow from
the number of pixels of each ground-truth class at each level (:class:`LevelStats`), whatever
device computed those counts.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property

import numpy as np

NUM_LEVELS = 256
"""Number of levels of an 8-bit map."""

NUM_THRESHOLDS = 256
"""Number of thresholds of the dynamic curves (F-measure, precision/recall, E-measure)."""

EPS = 2.0**-52
"""PySODMetrics' ``EPS = np.spacing(1)`` (``py_sod_metrics/utils.py``; MATLAB's ``eps``, equal to
``np.finfo(np.float64).eps``): the guard added to the denominators of the S-measure, E-measure
and weighted F-measure."""

TIE_TOLERANCE = 1e-9
"""PySODMetrics' adaptive threshold ``min(2 * np.mean(pred), 1)`` depends on the float64 rounding
of ``np.mean``. Whenever a level present in the image lies this close to twice the mean, the
mean is recomputed with numpy (same array layout, hence the same summation order)."""


def level_counts(pred_uint8: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Bx2x256 int64: background (``[:, 0]``) and foreground (``[:, 1]``) pixels at each 8-bit
    level of BxHxW ``pred_uint8`` (uint8) and ``gt`` (bool)."""
    batch = pred_uint8.shape[0]
    index = gt.view(np.uint8).astype(np.int32) * NUM_LEVELS
    index += pred_uint8
    index += (np.arange(batch, dtype=np.int32) * (2 * NUM_LEVELS))[:, None, None]
    counts = np.bincount(index.ravel(), minlength=batch * 2 * NUM_LEVELS)
    return counts.reshape(batch, 2, NUM_LEVELS)


class LevelStats:
    """What follows from the level histograms of a batch (numpy, computed on first access).

    ``counts``: Bx2x256 int64, pixels of each ground-truth class at each 8-bit level
    (:func:`level_counts`); ``num_pixels``: pixels per image; ``numpy_mean(i)``: ``np.mean`` of
    image ``i``'s prepared map (called only near ties of the adaptive threshold, see
    :attr:`mean`).

    * ``lut``: Bx256 float64, the prepared value of each level (PySODMetrics' stretch);
    * ``gt_count``: B int64, foreground pixels;
    * ``mean``: B float64, the mean of the prepared map, rounded as ``np.mean`` where it matters;
    * ``adaptive_selection`` / ``adaptive_counts``: the levels at or above each image's adaptive
      threshold ``min(2 * mean, 1)`` and the pixels they hold, per ground-truth class;
    * ``cumulative_counts``: Bx2x256 int64, the pixels at or above each of the 256 thresholds of
      the dynamic curves, per ground-truth class.
    """

    def __init__(
        self, counts: np.ndarray, num_pixels: int, numpy_mean: Callable[[int], float]
    ) -> None:
        self.counts = counts
        self.num_pixels = num_pixels
        self._numpy_mean = numpy_mean

    @cached_property
    def gt_count(self) -> np.ndarray:
        """Foreground pixels per image (int64, B)."""
        return self.counts[:, 1].sum(axis=1)

    @cached_property
    def pixel_counts(self) -> np.ndarray:
        """Bx256 int64: pixels at each level, both classes."""
        return self.counts.sum(axis=1)

    @cached_property
    def lut(self) -> np.ndarray:
        """Bx256 float64: the value of each 8-bit level in PySODMetrics' prepared map,
        ``p = level / 255`` stretched to ``(p - p.min()) / (p.max() - p.min())`` over the levels
        present in the image (a constant map keeps ``level / 255``). ``lut[b, u]`` is
        bit-identical to numpy's per-pixel computation; levels absent from the image may fall
        outside ``[0, 1]``."""
        present = self.pixel_counts > 0
        levels = np.arange(NUM_LEVELS)
        lowest = np.where(present, levels, NUM_LEVELS).min(axis=1)
        highest = np.where(present, levels, -1).max(axis=1)
        scaled = levels / 255.0  # exactly numpy's pred / 255
        lo, hi = scaled[lowest][:, None], scaled[highest][:, None]
        constant = hi == lo
        # For constant maps (p - 0) / 1 == p exactly, so one expression covers both cases.
        lo = np.where(constant, 0.0, lo)
        span = np.where(constant, 1.0, hi - lo)
        return (scaled[None, :] - lo) / span

    @cached_property
    def mean(self) -> np.ndarray:
        """Per-image mean of the prepared map (B float64), rounded as ``np.mean`` where it
        matters."""
        counts, lut = self.pixel_counts, self.lut
        mean = (counts * lut).sum(axis=1) / float(self.num_pixels)
        # The rounding only matters (for the adaptive thresholds) when a level present in the
        # image is (nearly) equal to 2 * mean; then the mean is recomputed exactly as
        # PySODMetrics does. A zero mean (all-zero map) is exact in any summation order.
        near = (np.abs(lut - 2.0 * mean[:, None]) <= TIE_TOLERANCE) & (counts > 0)
        for i in np.flatnonzero(near.any(axis=1) & (mean > 0)).tolist():
            mean[i] = self._numpy_mean(i)
        return mean

    @cached_property
    def adaptive_selection(self) -> np.ndarray:
        """Bx256 bool, the 8-bit levels at or above the image's adaptive threshold.

        The threshold of PySODMetrics' adaptive F- and E-measure is ``min(2 * mean(pred), 1)``
        (see :attr:`mean` for its rounding); binarising ``pred >= threshold`` selects whole
        levels, those with ``lut >= threshold``.
        """
        threshold = np.minimum(2.0 * self.mean, 1.0)
        return self.lut >= threshold[:, None]

    @cached_property
    def adaptive_counts(self) -> np.ndarray:
        """Bx2 int64: background (``[:, 0]``) and foreground (``[:, 1]``) pixels that the adaptive
        threshold binarises as positive (see :attr:`adaptive_selection`)."""
        return (self.counts * self.adaptive_selection[:, None, :]).sum(axis=2)

    @cached_property
    def cumulative_counts(self) -> np.ndarray:
        """Bx2x256 int64: ``[:, g, i]`` is the number of pixels of ground-truth class ``g``
        (0: background, 1: foreground) with ``trunc(pred * 255) >= 255 - i``.

        These are the positives of the 256 thresholds of PySODMetrics' dynamic curves, in its
        order (index 0: threshold 255, index 255: threshold 0, every pixel): the histogram of
        ``q = trunc(pred * 255)`` (numpy's ``astype(np.uint8)``), cumulated from bin 255 down.
        """
        counts = self.counts
        batch = counts.shape[0]
        # Levels outside the image's [min, max] have no pixels; clip their bins into range.
        bins = np.clip((self.lut * 255.0).astype(np.int64), 0, NUM_THRESHOLDS - 1)
        rows = np.arange(batch * 2).reshape(batch, 2, 1) * NUM_THRESHOLDS
        index = rows + bins[:, None, :]
        # float64 sums of pixel counts are exact integers (below 2^53)
        hist = np.bincount(index.ravel(), counts.ravel(), batch * 2 * NUM_THRESHOLDS)
        hist = hist.astype(np.int64).reshape(counts.shape)
        return np.flip(hist, axis=-1).cumsum(axis=-1)
