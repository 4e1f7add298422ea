"""Size-invariant MAE and ``FmeasureV2`` (PySODMetrics' ``SizeInvarianceMAE`` and
``SizeInvarianceFmeasureV2``).

Source: F. Li et al., "Size-invariance Matters: Rethinking Metrics and Losses for Imbalanced
Multi-object Salient Object Detection", ICML 2024, as implemented by PySODMetrics 1.6.2.

Targets of an image: the 4-connected components of the ground truth with at least
:data:`MIN_AREA` pixels or, when there is none, every component of the largest area. Each
target stands for its bounding box (boxes may overlap); scoring a target means scoring the
whole image with the prediction set to 0 and the ground truth to background outside its box.
The connected components are found per image with ``scipy.ndimage`` on the CPU; the scores are
computed from per-target 256-level histograms, all targets of an image at once.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch

from utils.metrics.base import Accumulator, MeanScoreAccumulator, as_numpy
from utils.metrics.fmeasure_v2 import (
    HANDLERS,
    Confusion,
    confusion_from_positives,
    handler_scores,
)
from utils.metrics.levels import NUM_LEVELS, NUM_THRESHOLDS, TIE_TOLERANCE
from utils.metrics.prepare import PreparedBatch

MIN_AREA = 50
"""Smallest area (pixels) of a ground-truth component that is a target by itself."""

Box = tuple[slice, slice]


def target_boxes(gt: np.ndarray) -> list[Box]:
    """Bounding boxes (row and column slices) of the targets of a HxW bool ground truth, in
    raster order of the components; empty for an empty ground truth."""
    from scipy import ndimage  # on first use: it slows the import of utils.metrics by ~0.3 s

    labels, count = ndimage.label(gt)  # 4-connectivity, labels in raster order
    if count == 0:
        return []
    areas = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    keep = areas >= MIN_AREA
    if not keep.any():
        keep = areas == areas.max()
    boxes = ndimage.find_objects(labels)
    return [boxes[i] for i in np.flatnonzero(keep)]


def _box_area(box: Box) -> int:
    return (box[0].stop - box[0].start) * (box[1].stop - box[1].start)


class SizeInvariantMAEAccumulator(MeanScoreAccumulator):
    """``si_MAE``: mean over images of PySODMetrics' size-invariant MAE.

    Per image with ``T`` targets (plain MAE when the ground truth is empty): with ``E`` the
    absolute error map, ``A_k`` the area of box ``k``, ``A_bg`` the area outside every box and
    ``r = A_bg / (N - A_bg)``, the score is ``(r * sum_bg(E) / A_bg + sum_k sum_k(E) / A_k) /
    (T + r)``.

    Intentional deviation: when the boxes cover the whole image (e.g. a full ground truth),
    PySODMetrics fails (an assertion for a full ground truth, NaN from ``0 / 0`` otherwise);
    here the background term is then 0 (``r = 0``), i.e. the mean of the per-target errors.
    """

    HIGHER_IS_BETTER: ClassVar[dict[str, bool]] = {"si_MAE": False}

    def scores(self, batch: PreparedBatch) -> torch.Tensor:
        """Per-image size-invariant MAE (B, float64)."""
        gts = batch.gt.cpu().numpy()
        values = [
            self._score(batch.pred_image(i).cpu().numpy(), gts[i]) for i in range(batch.batch_size)
        ]
        return torch.tensor(values, dtype=torch.float64)

    @staticmethod
    def _score(pred: np.ndarray, gt: np.ndarray) -> float:
        error = np.abs(pred - gt)
        boxes = target_boxes(gt)
        if not boxes:
            return float(error.mean())
        covered = np.zeros(gt.shape, dtype=bool)
        for box in boxes:
            covered[box] = True
        bg_area = int(gt.size - np.count_nonzero(covered))
        ratio = bg_area / (gt.size - bg_area)
        factor = 1 / (len(boxes) + ratio)
        total = ratio * error[~covered].sum() / bg_area * factor if bg_area else 0.0
        for box in boxes:
            total += error[box].sum() / _box_area(box) * factor
        return float(total)


def _names() -> dict[str, bool]:
    names: dict[str, bool] = {}
    for variant in ("max", "mean", "adp", "bin"):
        for handler, (_, higher) in HANDLERS.items():
            names[f"si_{variant}{handler}"] = higher
    for variant in ("max", "mean", "bin"):
        for handler, (_, higher) in HANDLERS.items():
            names[f"si_{variant}{handler}_pooled"] = higher
    return names


class SizeInvariantFmeasureV2Accumulator(Accumulator):
    """PySODMetrics' ``SizeInvarianceFmeasureV2`` with every handler of
    :mod:`utils.metrics.fmeasure_v2` (``F`` included, ``beta^2 = 0.3``).

    Each target of an image is scored like an image of ``FmeasureV2`` (dynamic curve over the 256
    thresholds, adaptive threshold ``min(2 * mean, 1)`` of the masked map, ``pred > 0.5``). Names:

    * ``si_max<H>``, ``si_mean<H>``: mean over images of the mean over the image's targets of
      the maximum / mean of the target's curve (PySODMetrics' sample-based ``si-max``/``si-avg``);
    * ``si_adp<H>``, ``si_bin<H>``: mean over images of the mean over targets of the adaptive /
      binary score;
    * ``si_max<H>_pooled``, ``si_mean<H>_pooled``: maximum / mean of the curve averaged over all
      targets of all images (``sample_based=False``); ``si_bin<H>_pooled``: the score of the
      binary confusion counts summed over all targets of all images.

    An image with an empty ground truth is one target, the whole image. Intentional deviation:
    a full ground truth (on which PySODMetrics fails an assertion) is one target, the whole
    image.
    """

    HIGHER_IS_BETTER: ClassVar[dict[str, bool]] = _names()

    def _init_state(self) -> None:
        k = len(HANDLERS)
        self.image_sum = self._zeros(4, k)  # per image: max, mean, adp, bin (target means)
        self.target_curve_sum = self._zeros(k, NUM_THRESHOLDS)
        self.pooled = self._zeros(4)  # binary TP, FP, TN, FN over all targets
        self.targets = self._zeros()
        self.count = self._zeros()

    def state_arrays(self) -> list[np.ndarray]:
        return [self.image_sum, self.target_curve_sum, self.pooled, self.targets, self.count]

    def update(self, batch: PreparedBatch) -> None:
        gts = batch.gt.cpu().numpy()
        preds = batch.pred_uint8.cpu().numpy()
        luts = batch.lut.cpu()
        for i in range(batch.batch_size):
            self._update_image(preds[i], gts[i], luts[i])
        self.count += batch.batch_size

    def _update_image(self, pred_u8: np.ndarray, gt: np.ndarray, lut: torch.Tensor) -> None:
        names = tuple(HANDLERS)
        dynamic, adaptive, binary = target_confusions(pred_u8, gt, lut)
        curves = handler_scores(dynamic, names)  # T x 256 x K
        per_image = torch.stack(
            [
                curves.amax(dim=1).mean(dim=0),
                curves.mean(dim=1).mean(dim=0),
                handler_scores(adaptive, names).mean(dim=0),
                handler_scores(binary, names).mean(dim=0),
            ]
        )
        self.image_sum += as_numpy(per_image)
        self.target_curve_sum += as_numpy(curves.sum(dim=0).T)
        self.pooled += as_numpy(torch.stack([c.sum() for c in binary]))
        self.targets += curves.shape[0]

    def compute(self) -> dict[str, float]:
        self._check_not_empty()
        per_image = (self.image_sum / self.count).tolist()
        curves = self.target_curve_sum / self.targets
        pooled = handler_scores(tuple(torch.from_numpy(self.pooled)), tuple(HANDLERS)).tolist()
        results: dict[str, float] = {}
        for v, variant in enumerate(("max", "mean", "adp", "bin")):
            for k, handler in enumerate(HANDLERS):
                results[f"si_{variant}{handler}"] = per_image[v][k]
        for k, handler in enumerate(HANDLERS):
            results[f"si_max{handler}_pooled"] = float(curves[k].max())
            results[f"si_mean{handler}_pooled"] = float(curves[k].mean())
            results[f"si_bin{handler}_pooled"] = pooled[k]
        return results


def target_confusions(
    pred_u8: np.ndarray, gt: np.ndarray, lut: torch.Tensor
) -> tuple[Confusion, Confusion, Confusion]:
    """The dynamic (T x 256 each, index ``i``: threshold ``255 - i``), adaptive and binary
    (T each) ``TP, FP, TN, FN`` of the ``T`` targets of one image (float64, CPU), from its 8-bit
    map (HxW uint8), ground truth (HxW bool) and level values ``lut`` (256, float64, CPU)."""
    boxes = target_boxes(gt) or [(slice(0, gt.shape[0]), slice(0, gt.shape[1]))]
    counts = torch.from_numpy(np.stack([_level_counts(pred_u8[box], gt[box]) for box in boxes]))
    n = gt.size
    outside = torch.tensor([n - _box_area(box) for box in boxes], dtype=torch.int64)
    gt_count = counts[:, 1].sum(dim=1)  # T x 2 x 256 counts: background, foreground

    dynamic = _dynamic(counts, outside, lut, gt_count, n)
    threshold = _adaptive_thresholds(counts, lut, n, pred_u8, gt.shape, boxes)
    adaptive = (counts * (lut[None, :] >= threshold[:, None])[:, None, :]).sum(dim=2)
    outside_pos = torch.where(threshold <= 0, outside, 0)  # masked pixels are 0 >= threshold
    adaptive_conf = confusion_from_positives(
        adaptive[:, 1], adaptive[:, 0] + outside_pos, gt_count, n
    )
    binary = (counts * (lut > 0.5)[None, None, :]).sum(dim=2)
    binary_conf = confusion_from_positives(binary[:, 1], binary[:, 0], gt_count, n)
    return dynamic, adaptive_conf, binary_conf


def _level_counts(pred_u8: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """2 x 256 int64: background and foreground pixels at each 8-bit level."""
    index = gt.astype(np.int64) * NUM_LEVELS + pred_u8
    return np.bincount(index.ravel(), minlength=2 * NUM_LEVELS).reshape(2, NUM_LEVELS)


def _dynamic(
    counts: torch.Tensor, outside: torch.Tensor, lut: torch.Tensor, gt_count: torch.Tensor, n: int
) -> Confusion:
    """Confusion counts (T x 256 each, index ``i``: threshold ``255 - i``) of every target; the
    pixels outside a box are background at value 0 (bin 0)."""
    bins = (lut * 255.0).to(torch.int64).clamp_(0, NUM_THRESHOLDS - 1)
    hist = torch.zeros_like(counts).scatter_add_(2, bins.expand_as(counts), counts)
    hist[:, 0, 0] += outside
    cumulative = hist.flip(-1).cumsum(-1)
    return confusion_from_positives(cumulative[:, 1], cumulative[:, 0], gt_count, n)


def _adaptive_thresholds(
    counts: torch.Tensor,
    lut: torch.Tensor,
    n: int,
    pred_u8: np.ndarray,
    shape: tuple[int, int],
    boxes: list[Box],
) -> torch.Tensor:
    """``min(2 * mean, 1)`` of each target's masked map (T, float64); the mean is recomputed
    with ``np.mean`` on the masked map (PySODMetrics' rounding) where a present level is within
    :data:`~utils.metrics.prepare.TIE_TOLERANCE` of twice the mean."""
    pixels = counts.sum(dim=1).to(torch.float64)  # T x 256
    mean = (pixels * lut[None, :]).sum(dim=1) / n
    near = ((lut[None, :] - 2.0 * mean[:, None]).abs() <= TIE_TOLERANCE) & (pixels > 0)
    for k in torch.nonzero(near.any(dim=1) & (mean > 0)).flatten().tolist():
        masked = np.zeros(shape, dtype=np.float64)
        masked[boxes[k]] = lut.numpy()[pred_u8[boxes[k]]]
        mean[k] = float(np.mean(masked))
    return (2.0 * mean).clamp(max=1.0)
