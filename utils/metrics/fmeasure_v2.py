"""PySODMetrics' ``FmeasureV2`` family: confusion-count metrics of binarised maps, per image.

Every handler of PySODMetrics 1.6.2 (``IOUHandler``, ``DICEHandler``, ``BERHandler``,
``KappaHandler``, ``OverallAccuracyHandler``, ``PrecisionHandler``, ``RecallHandler``,
``SpecificityHandler``, ``FPRHandler``, ``FmeasureHandler``) maps the confusion counts
``TP, FP, TN, FN`` of a binarised map to a score; :data:`HANDLERS` names them here. Aliases:
sensitivity and TPR are ``Recall``, TNR is ``Specificity``; the F1 score (``beta^2 = 1``) equals
``Dice``.

Metric names are ``<variant><handler>``:

* ``max<H>`` / ``mean<H>``: the maximum / mean of the dataset curve over the 256 thresholds of
  the dynamic binarisation (``q = trunc(pred * 255) >= t``, the per-image curves averaged);
* ``adp<H>``: mean over images of the score at the adaptive threshold ``min(2 * mean(pred), 1)``;
* ``bin<H>``: mean over images of the score of ``pred > 0.5`` (PySODMetrics' sample-based
  binary variant; ``pred`` is the min-max stretched map of the SOD metrics);
* ``bin<H>_pooled``: the score of the ``TP, FP, TN, FN`` of ``pred > 0.5`` summed over all
  pixels of all images (PySODMetrics' ``sample_based=False``).

The F-measure's dynamic and adaptive variants are the existing ``maxF``, ``meanF``, ``adpF``
(:class:`~utils.metrics.fmeasure.FmeasureAccumulator`, equal to ``FmeasureV2`` with
``FmeasureHandler``), so this family adds only ``binF`` and ``binF_pooled`` for it. Note that
the binary variants here stretch the map and use ``> 0.5``, unlike the pooled ``IoU``, ``F1``...
of :class:`~utils.metrics.binary.BinaryAccumulator` (8-bit level 128, no stretch).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import numpy as np
import torch

from utils.metrics.base import Accumulator, as_numpy
from utils.metrics.fmeasure import BETA
from utils.metrics.levels import NUM_THRESHOLDS
from utils.metrics.prepare import PreparedBatch

Confusion = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
"""``TP, FP, TN, FN`` as float64 tensors of one shape (exact integer values)."""


def safe_divide(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    """``numerator / denominator``, 0 where the denominator is 0 (PySODMetrics' handlers)."""
    zero = denominator == 0
    return torch.where(zero, 0.0, numerator / torch.where(zero, 1.0, denominator))


def _iou(tp: torch.Tensor, fp: torch.Tensor, tn: torch.Tensor, fn: torch.Tensor) -> torch.Tensor:
    return safe_divide(tp, tp + fp + fn)


def _dice(tp: torch.Tensor, fp: torch.Tensor, tn: torch.Tensor, fn: torch.Tensor) -> torch.Tensor:
    return safe_divide(2 * tp, tp + fn + tp + fp)


def _precision(
    tp: torch.Tensor, fp: torch.Tensor, tn: torch.Tensor, fn: torch.Tensor
) -> torch.Tensor:
    return safe_divide(tp, tp + fp)


def _recall(tp: torch.Tensor, fp: torch.Tensor, tn: torch.Tensor, fn: torch.Tensor) -> torch.Tensor:
    return safe_divide(tp, tp + fn)


def _specificity(
    tp: torch.Tensor, fp: torch.Tensor, tn: torch.Tensor, fn: torch.Tensor
) -> torch.Tensor:
    return safe_divide(tn, tn + fp)


def _fpr(tp: torch.Tensor, fp: torch.Tensor, tn: torch.Tensor, fn: torch.Tensor) -> torch.Tensor:
    return safe_divide(fp, tn + fp)


def _accuracy(
    tp: torch.Tensor, fp: torch.Tensor, tn: torch.Tensor, fn: torch.Tensor
) -> torch.Tensor:
    return safe_divide(tp + tn, tp + fp + tn + fn)


def _ber(tp: torch.Tensor, fp: torch.Tensor, tn: torch.Tensor, fn: torch.Tensor) -> torch.Tensor:
    return 1 - 0.5 * (safe_divide(tp, tp + fn) + safe_divide(tn, tn + fp))


def _kappa(tp: torch.Tensor, fp: torch.Tensor, tn: torch.Tensor, fn: torch.Tensor) -> torch.Tensor:
    # PySODMetrics' chance agreement, reproduced as is: its second product is
    # (TN + FN) * (TN + TP), where Cohen's kappa has (TN + FN) * (TN + FP).
    total = tp + fp + tn + fn
    chance = safe_divide((tp + fp) * (tp + fn) + (tn + fn) * (tn + tp), total * total)
    return safe_divide(_accuracy(tp, fp, tn, fn) - chance, 1 - chance)


def _fmeasure(
    tp: torch.Tensor, fp: torch.Tensor, tn: torch.Tensor, fn: torch.Tensor
) -> torch.Tensor:
    p, r = _precision(tp, fp, tn, fn), _recall(tp, fp, tn, fn)
    return safe_divide((BETA + 1) * p * r, BETA * p + r)


HANDLERS: dict[str, tuple[Callable[..., torch.Tensor], bool]] = {
    "IoU": (_iou, True),
    "Dice": (_dice, True),
    "BER": (_ber, False),
    "Kappa": (_kappa, True),
    "OA": (_accuracy, True),
    "Precision": (_precision, True),
    "Recall": (_recall, True),
    "Specificity": (_specificity, True),
    "FPR": (_fpr, False),
    "F": (_fmeasure, True),
}
"""Handler name to (score of ``TP, FP, TN, FN``, whether higher is better). ``OA`` is the overall
accuracy; ``F`` the F-measure with ``beta^2 = 0.3``."""

CURVE_HANDLERS: tuple[str, ...] = tuple(name for name in HANDLERS if name != "F")
"""Handlers with dynamic and adaptive variants here (``F``'s are ``maxF``, ``meanF``, ``adpF``)."""


def handler_scores(confusion: Confusion, names: tuple[str, ...]) -> torch.Tensor:
    """The scores of the handlers ``names`` stacked on a new last dimension (float64)."""
    return torch.stack([HANDLERS[name][0](*confusion) for name in names], dim=-1)


def confusion_from_positives(
    true_pos: torch.Tensor, false_pos: torch.Tensor, gt_count: torch.Tensor, num_pixels: int
) -> Confusion:
    """``TP, FP, TN, FN`` (float64) from the positives of a binarisation (int64, B x ...) and the
    foreground count of each image (B)."""
    shape = (-1,) + (1,) * (true_pos.dim() - 1)
    fg = gt_count.view(shape).to(torch.float64)
    tp, fp = true_pos.to(torch.float64), false_pos.to(torch.float64)
    return tp, fp, (num_pixels - fg) - fp, fg - tp


def binary_positives(batch: PreparedBatch) -> torch.Tensor:
    """B x 2 int64: background (``[:, 0]``) and foreground (``[:, 1]``) pixels with
    ``pred > 0.5`` on the prepared (stretched) map."""
    selected = (batch.lut > 0.5).to(torch.int64)
    return (batch.level_counts * selected[:, None, :]).sum(dim=2)


def _names() -> dict[str, bool]:
    names: dict[str, bool] = {}
    for variant in ("max", "mean", "adp"):
        for handler in CURVE_HANDLERS:
            names[f"{variant}{handler}"] = HANDLERS[handler][1]
    for handler, (_, higher) in HANDLERS.items():
        names[f"bin{handler}"] = higher
    for handler, (_, higher) in HANDLERS.items():
        names[f"bin{handler}_pooled"] = higher
    return names


class FmeasureV2Accumulator(Accumulator):
    """PySODMetrics' ``FmeasureV2`` with every handler: dynamic, adaptive and binary variants
    (see the module docstring for the names and definitions).

    Per image, from the 256-level histograms of :class:`PreparedBatch`: the dynamic counts are
    ``batch.cumulative_counts`` (index ``i``: threshold ``255 - i``), the adaptive ones
    ``batch.adaptive_counts`` (``np.mean``'s rounding near ties, as the F-measure). A zero
    denominator gives 0, as in PySODMetrics (so an empty ground truth has recall 0). The state
    is the per-image sums of the curves and scores, the pooled binary counts and the image
    count, so it can be all-reduced.
    """

    HIGHER_IS_BETTER: ClassVar[dict[str, bool]] = _names()

    def _init_state(self) -> None:
        self.curve_sum = self._zeros(len(CURVE_HANDLERS), NUM_THRESHOLDS)
        self.adaptive_sum = self._zeros(len(CURVE_HANDLERS))
        self.binary_sum = self._zeros(len(HANDLERS))
        self.pooled = self._zeros(4)  # TP, FP, TN, FN of pred > 0.5 over all images
        self.count = self._zeros()

    def state_arrays(self) -> list[np.ndarray]:
        return [self.curve_sum, self.adaptive_sum, self.binary_sum, self.pooled, self.count]

    def update(self, batch: PreparedBatch) -> None:
        gt_count, n = batch.gt_count, batch.num_pixels
        cumulative = batch.cumulative_counts  # B x 2 x 256
        dynamic = confusion_from_positives(cumulative[:, 1], cumulative[:, 0], gt_count, n)
        adaptive = batch.adaptive_counts
        adaptive_conf = confusion_from_positives(adaptive[:, 1], adaptive[:, 0], gt_count, n)
        binary = binary_positives(batch)
        binary_conf = confusion_from_positives(binary[:, 1], binary[:, 0], gt_count, n)
        # B x 256 x H -> H x 256 summed over images
        self.curve_sum += as_numpy(handler_scores(dynamic, CURVE_HANDLERS).sum(0).T)
        self.adaptive_sum += as_numpy(handler_scores(adaptive_conf, CURVE_HANDLERS).sum(0))
        self.binary_sum += as_numpy(handler_scores(binary_conf, tuple(HANDLERS)).sum(0))
        self.pooled += as_numpy(torch.stack([c.sum() for c in binary_conf]))
        self.count += batch.batch_size

    def curves(self) -> dict[str, np.ndarray]:
        """Dataset-mean dynamic curves of :data:`CURVE_HANDLERS` (256 values each, index ``i``:
        threshold ``255 - i``); raises RuntimeError when no image was added."""
        self._check_not_empty()
        mean = self.curve_sum / self.count
        return dict(zip(CURVE_HANDLERS, mean, strict=True))

    def compute(self) -> dict[str, float]:
        self._check_not_empty()
        curves = self.curve_sum / self.count
        adaptive = (self.adaptive_sum / self.count).tolist()
        binary = (self.binary_sum / self.count).tolist()
        pooled = handler_scores(tuple(torch.from_numpy(self.pooled)), tuple(HANDLERS)).tolist()
        results: dict[str, float] = {}
        for i, handler in enumerate(CURVE_HANDLERS):
            results[f"max{handler}"] = float(curves[i].max())
            results[f"mean{handler}"] = float(curves[i].mean())
            results[f"adp{handler}"] = adaptive[i]
        for i, handler in enumerate(HANDLERS):
            results[f"bin{handler}"] = binary[i]
            results[f"bin{handler}_pooled"] = pooled[i]
        return results
