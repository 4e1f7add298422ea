"""Human correction effort (``HCE``) of the DIS benchmark, image by image with OpenCV and SciPy.

Source: X. Qin et al., "Highly Accurate Dichotomous Image Segmentation", ECCV 2022, as
implemented by PySODMetrics 1.6.2 (``HumanCorrectionEffortMeasure``, ``relax = 5``,
``epsilon = 2``): the number of mouse clicks a person needs to correct ``pred > 0.5`` (on the
prepared map) into the ground truth, i.e. the polygon control points that outline the false
positive and false negative regions that matter, plus the regions that need no outlining but one
click each.

Per image, with ``TP``, ``FP``, ``FN`` the confusion masks and ``D`` the 3x3 cross:

1. the union of prediction and ground truth is eroded ``relax`` times by ``D``; false positives
   (negatives) inside it are grown back ``relax`` times by ``D`` within the ground-truth
   background (the predicted background), then intersected with ``FP`` (``FN``): thin false
   regions along correct borders are forgiven. The ground truth's skeleton pixels that are not
   true positives are added to the false negatives (thin structures must be drawn);
2. for each of the two masks, the points of its OpenCV contours (``RETR_TREE``, no
   approximation) that lie next to (``D``-dilated) correct or other regions are kept, each
   pixel once, in contour order; consecutive kept points form boundary segments (the last and
   first segments of a contour are joined when they touch); the 8-connected regions of the mask
   without any kept point count one each;
3. each segment is simplified with ``cv2.approxPolyDP(epsilon, open)``; HCE is the total number
   of vertices plus the independent regions.

The ground truth's skeleton is ``skimage.morphology.skeletonize`` (its Zhang-Suen variant),
needed to reproduce PySODMetrics exactly; scikit-image is therefore required when ``HCE`` is
selected (imported then, not before). OpenCV and SciPy are imported on first use as well, so
that importing :mod:`utils.metrics` stays fast for the default metrics.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch

from utils.metrics.base import MeanScoreAccumulator
from utils.metrics.prepare import PreparedBatch

RELAX = 5
"""Erosion / dilation steps that forgive thin false regions along correct borders."""

EPSILON = 2.0
"""Tolerance (pixels) of the polygon simplification of the boundary segments."""

_CROSS = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], dtype=np.uint8)
_EIGHT = np.ones((3, 3), dtype=bool)


def _skeletonize(mask: np.ndarray) -> np.ndarray:
    """``skimage.morphology.skeletonize`` of a HxW bool mask; raises ImportError (saying what to
    install) without scikit-image."""
    try:
        from skimage.morphology import skeletonize
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the HCE metric needs scikit-image (pip install 'scikit-image>=0.19') for the ground "
            "truth's skeleton; leave HCE out of the selected metrics otherwise"
        ) from error
    return skeletonize(mask).astype(bool)


def _relaxed(false: np.ndarray, eroded_union: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """The false pixels inside the eroded union, grown back ``RELAX`` times within ``allowed``,
    restricted to the false pixels."""
    import cv2

    grown = false & eroded_union
    for _ in range(RELAX):
        grown = cv2.dilate(grown.astype(np.uint8), _CROSS).astype(bool) & allowed
    return false & grown


def _segments(contour_points: np.ndarray, kept: np.ndarray) -> list[np.ndarray]:
    """Runs of consecutive kept points of one contour (each K x 1 x 2 int32, (x, y)); the last
    run is joined by the reversed first one when their ends touch."""
    runs: list[np.ndarray] = []
    edges = np.diff(np.concatenate([[0], kept.astype(np.int8), [0]]))
    for start, stop in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True):
        runs.append(contour_points[start:stop])
    if len(runs) > 1:
        first_x, first_y = runs[0][0]
        last_x, last_y = runs[-1][-1]
        if max(abs(int(first_x) - int(last_x)), abs(int(first_y) - int(last_y))) == 1:
            runs[-1] = np.concatenate([runs[-1], runs[0][::-1]])
            del runs[0]
    return [run[:, None, :] for run in runs]


def _effort(mask: np.ndarray, condition: np.ndarray) -> int:
    """Polygon vertices plus independent regions needed to correct the regions of ``mask``
    (HxW bool), outlining them where they touch ``condition`` (HxW bool)."""
    import cv2
    from scipy import ndimage

    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_TREE, cv2.CHAIN_APPROX_NONE)
    near = cv2.dilate(condition.astype(np.uint8), _CROSS).astype(bool)
    labels, count = ndimage.label(mask, structure=_EIGHT)
    if not contours:
        return count
    points = np.concatenate([c[:, 0, :] for c in contours])  # (x, y), all contours in order
    pixel = points[:, 1].astype(np.int64) * mask.shape[1] + points[:, 0]
    candidate = near.ravel()[pixel]
    kept = np.zeros(len(points), dtype=bool)  # each pixel kept once: its first candidate point
    _, first = np.unique(np.where(candidate, pixel, -1), return_index=True)
    kept[first] = True
    kept &= candidate
    touched = np.zeros(count + 1, dtype=bool)
    touched[labels.ravel()[pixel[kept]]] = True
    vertices, start = 0, 0
    for contour in contours:
        stop = start + len(contour)
        for run in _segments(points[start:stop].astype(np.int32), kept[start:stop]):
            vertices += len(cv2.approxPolyDP(run, EPSILON, False))
        start = stop
    return vertices + int(count - touched[1:].sum())


def human_correction_effort(pred: np.ndarray, gt: np.ndarray) -> int:
    """HCE of a binary prediction against a binary ground truth (HxW bool each); raises
    ImportError without scikit-image."""
    import cv2

    skeleton = _skeletonize(gt)
    tp, fp, fn = pred & gt, pred & ~gt, gt & ~pred
    union = (pred | gt).astype(np.uint8)
    eroded_union = cv2.erode(union, _CROSS, iterations=RELAX).astype(bool)
    false_pos = _relaxed(fp, eroded_union, ~gt)
    false_neg = _relaxed(fn, eroded_union, ~pred) | (skeleton & ~tp)
    effort_fp = _effort(false_pos, tp | false_neg)
    effort_fn = _effort(false_neg, ~(tp | false_pos | false_neg))
    return effort_fp + effort_fn


class HCEAccumulator(MeanScoreAccumulator):
    """``HCE``: mean over images of the human correction effort of ``pred > 0.5`` (lower is
    better); see the module docstring. Computed on the CPU, one image at a time."""

    HIGHER_IS_BETTER: ClassVar[dict[str, bool]] = {"HCE": False}

    def scores(self, batch: PreparedBatch) -> torch.Tensor:
        """Per-image HCE (B, float64, on the CPU)."""
        positive = (batch.lut > 0.5).cpu().numpy()  # B x 256
        preds = batch.pred_uint8.cpu().numpy()
        gts = batch.gt.cpu().numpy()
        values = [
            human_correction_effort(positive[i][preds[i]], gts[i]) for i in range(batch.batch_size)
        ]
        return torch.tensor(values, dtype=torch.float64)
