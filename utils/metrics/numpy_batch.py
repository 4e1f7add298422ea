"""A batch of 8-bit maps and masks on the CPU, in numpy (no torch): the per-pixel statistics the
default metric families need (:class:`NumpyBatch`).

:class:`~utils.metrics.prepare.PreparedBatch` offers the same statistics for torch tensors (on a
GPU, computed there; on the CPU, by this class on views of the same memory).
"""

from __future__ import annotations

from functools import cached_property

import cv2
import numpy as np

from utils.metrics.levels import NUM_LEVELS, LevelStats, level_counts
from utils.metrics.weighted_f import weighted_fmeasure_image


def resize_map(pred_uint8: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """An 8-bit map (HxW or BxHxW uint8) resized to ``size`` (height, width) as PySODEvalToolkit
    does before scoring a prediction of another size than its mask: OpenCV's bilinear
    ``cv2.resize(pred, (width, height), interpolation=cv2.INTER_LINEAR)`` on the uint8 map
    (``utils/misc.py``, ``get_gt_pre_with_name``)."""
    if pred_uint8.shape[-2:] == size:
        return pred_uint8
    height, width = size
    if pred_uint8.ndim == 2:
        return cv2.resize(pred_uint8, (width, height), interpolation=cv2.INTER_LINEAR)
    return np.stack([resize_map(image, size) for image in pred_uint8])


def split_point(gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(cy, cx)`` per image (int64, B) of BxHxW bool masks: the foreground centroid (row and
    column means of the foreground pixel indices, rounded half to even) plus one, the
    S-measure's split point."""
    _, height, width = gt.shape
    row_counts = gt.sum(axis=2, dtype=np.int64)  # B x H
    col_counts = gt.sum(axis=1, dtype=np.int64)  # B x W
    total = np.maximum(row_counts.sum(axis=1), 1).astype(np.float64)
    # Index sums are exact in int64; one correctly rounded division, as numpy's mean.
    mean_row = (row_counts @ np.arange(height)).astype(np.float64) / total
    mean_col = (col_counts @ np.arange(width)).astype(np.float64) / total
    return np.rint(mean_row).astype(np.int64) + 1, np.rint(mean_col).astype(np.int64) + 1


def quadrant_counts(
    pred_uint8: np.ndarray, gt: np.ndarray, cy: np.ndarray, cx: np.ndarray
) -> np.ndarray:
    """Bx4x2x256 int64: pixels per (quadrant, ground-truth class, 8-bit level) of BxHxW maps and
    masks split at ``(cy, cx)`` (B each); quadrants top-left, top-right, bottom-left,
    bottom-right (rows ``< cy`` are top, columns ``< cx`` left)."""
    batch, height, width = gt.shape
    bottom = np.arange(height)[None, :] >= cy[:, None]  # B x H
    right = np.arange(width)[None, :] >= cx[:, None]  # B x W
    images = np.arange(batch, dtype=np.int32)[:, None]
    row_offset = (images * 4 + bottom.astype(np.int32) * 2) * (2 * NUM_LEVELS)
    col_offset = right.astype(np.int32) * (2 * NUM_LEVELS)
    index = pred_uint8.astype(np.int32)
    index += gt.view(np.uint8) * np.int32(NUM_LEVELS)
    index += row_offset[:, :, None]
    index += col_offset[:, None, :]
    counts = np.bincount(index.ravel(), minlength=batch * 4 * 2 * NUM_LEVELS)
    return counts.reshape(batch, 4, 2, NUM_LEVELS)


class NumpyBatch:
    """A batch of BxHxW ``pred_uint8`` (uint8) maps and ``gt`` (bool, the ``gt_uint8 > 128`` of
    PySODMetrics) masks as numpy arrays; raises TypeError for other dtypes and ValueError for
    other shapes or an empty batch.

    ``stats`` (:class:`~utils.metrics.levels.LevelStats`) holds the level histograms and what
    follows from them; the S-measure's region term and the weighted F-measure use the pixels
    (:meth:`split_point`, :meth:`quadrant_counts`, :meth:`weighted_f`).
    """

    def __init__(
        self, pred_uint8: np.ndarray, gt: np.ndarray, counts: np.ndarray | None = None
    ) -> None:
        if pred_uint8.dtype != np.uint8 or gt.dtype != np.bool_:
            raise TypeError("NumpyBatch expects a uint8 prediction and a bool ground truth")
        if pred_uint8.ndim != 3 or pred_uint8.shape != gt.shape:
            raise ValueError(
                f"expected BxHxW arrays of equal shape, got {pred_uint8.shape} and {gt.shape}"
            )
        if gt.size == 0:
            raise ValueError(f"empty images or batch: shape {gt.shape}")
        self.pred_uint8 = np.ascontiguousarray(pred_uint8)
        self.gt = np.ascontiguousarray(gt)
        self.batch_size = int(gt.shape[0])
        self.num_pixels = int(gt.shape[1] * gt.shape[2])
        self._counts = counts

    @cached_property
    def stats(self) -> LevelStats:
        """The level histograms (given, or counted here) and what follows from them."""
        counts = level_counts(self.pred_uint8, self.gt) if self._counts is None else self._counts
        return LevelStats(counts, self.num_pixels, lambda i: float(np.mean(self.pred_image(i))))

    def pred_image(self, index: int) -> np.ndarray:
        """The float64 prepared map (HxW) of one image: ``lut[pred_uint8]``."""
        return self.stats.lut[index][self.pred_uint8[index]]

    @cached_property
    def split_point(self) -> tuple[np.ndarray, np.ndarray]:
        """The S-measure's ``(cy, cx)`` per image (int64, B), see :func:`split_point`."""
        return split_point(self.gt)

    def quadrant_counts(self) -> np.ndarray:
        """Bx4x2x256 int64 level histograms of the quadrants at :attr:`split_point`."""
        return quadrant_counts(self.pred_uint8, self.gt, *self.split_point)

    def weighted_f(self) -> np.ndarray:
        """Per-image weighted F-measure (B float64)."""
        return np.array(
            [
                weighted_fmeasure_image(self.pred_image(i), self.gt[i])
                for i in range(self.batch_size)
            ]
        )
