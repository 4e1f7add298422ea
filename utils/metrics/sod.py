"""``SODMetrics``: the front end that prepares each batch once and feeds every accumulator."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from utils.metrics.base import Accumulator
from utils.metrics.binary import BinaryAccumulator
from utils.metrics.fmeasure_v2 import FmeasureV2Accumulator
from utils.metrics.hce import HCEAccumulator
from utils.metrics.metric_set import (
    DEFAULT_FAMILIES,
    DEFAULT_METRICS,
    MetricSet,
    as_bhw,
    batch_pairs,
    directions,
)
from utils.metrics.msiou import MSIoUAccumulator
from utils.metrics.prepare import (
    PreparedBatch,
    as_tensor,
    gt_to_mask,
    pred_to_uint8,
)
from utils.metrics.relaxed_boundary import RelaxedBoundaryFAccumulator
from utils.metrics.size_invariant import (
    SizeInvariantFmeasureV2Accumulator,
    SizeInvariantMAEAccumulator,
)
from utils.runtime.distributed import all_reduce_sum_

OPTIONAL_FAMILIES: tuple[type[Accumulator], ...] = (
    FmeasureV2Accumulator,
    RelaxedBoundaryFAccumulator,
    SizeInvariantMAEAccumulator,
    SizeInvariantFmeasureV2Accumulator,
    MSIoUAccumulator,
    HCEAccumulator,
)
"""The families computed only when one of their metrics is selected by name."""

FAMILIES: tuple[type[Accumulator], ...] = DEFAULT_FAMILIES + OPTIONAL_FAMILIES
"""The metric families, in the order of their metrics in results."""

HIGHER_IS_BETTER: dict[str, bool] = directions(FAMILIES)
"""Every metric :class:`SODMetrics` can compute, and whether a larger value is better."""

ALL_METRIC_NAMES: tuple[str, ...] = tuple(HIGHER_IS_BETTER)
"""Every metric :class:`SODMetrics` can compute, in the order of results."""

__all__ = ["ALL_METRIC_NAMES", "DEFAULT_METRICS", "HIGHER_IS_BETTER", "SODMetrics", "with_defaults"]


def all_reduce_arrays(arrays: Sequence[np.ndarray], device: torch.device) -> None:
    """Sum float64 numpy ``arrays`` over all processes of the process group in place (no-op
    outside one), through tensors on ``device`` (NCCL reduces CUDA tensors only)."""
    tensors = [torch.from_numpy(array).to(device) for array in arrays]
    all_reduce_sum_(tensors)
    for array, tensor in zip(arrays, tensors, strict=True):
        array[...] = tensor.cpu().numpy()


def with_defaults(*extra: str | None) -> tuple[str, ...]:
    """:data:`DEFAULT_METRICS` plus the metrics ``extra`` (``None`` items are ignored), in the
    order of :data:`ALL_METRIC_NAMES`; e.g. the metrics a validation must compute for a
    ``trainer.monitor`` metric. Raises ValueError naming an unknown metric."""
    return SODMetrics(
        "cpu", [*DEFAULT_METRICS, *(name for name in extra if name is not None)]
    ).names


class SODMetrics(MetricSet):
    """The SOD metrics of a dataset (:data:`DEFAULT_METRICS`, or those named in ``metrics``: any of
    :data:`ALL_METRIC_NAMES`), matching PySODMetrics 1.6.2.

    ``update(pred, gt)`` accepts a batch in either form (numpy arrays or tensors):

    * 8-bit maps as read from PNG files: ``pred`` uint8 and ``gt`` uint8, HxW or BxHxW (or
      Bx1xHxW); the result equals PySODMetrics' ``MAE``, ``Fmeasure``, ``WeightedFmeasure``,
      ``Smeasure`` and ``Emeasure`` (and, for the optional families, ``FmeasureV2``, ``MSIoU``,
      ``SizeInvarianceMAE``, ``SizeInvarianceFmeasureV2``, ``HumanCorrectionEffortMeasure``) fed
      the same images (up to float64 summation order, and where the class of each family
      documents a difference);
    * model outputs: ``pred`` float probabilities in [0, 1], Bx1xHxW or BxHxW, quantised with
      :func:`prob_to_uint8` (``clamp(round(p * 255), 0, 255)``, the rule of our saved PNG maps);
      a float ``gt`` in [0, 1] (``mask_uint8 / 255``) is recovered as ``round(gt * 255)``, a bool
      ``gt`` as 0/255. The numbers thus equal those of evaluating the saved PNG files.

    If a prediction's HxW differs from its ground truth's, the prediction is resized to the gt
    size before quantisation/scoring: bilinear, ``align_corners=False``, in float64, applied to
    the probability (float input) or to the 0..255 values of the uint8 map (then rounded half to
    even and clamped to uint8). ``pred`` and ``gt`` may also be equal-length lists of images
    (or batches) in those forms, of different sizes: the items of equal size are scored as one
    batch (a single image or batch is the list of one item).

    Computation runs on the device of the input tensors (numpy inputs go to ``device``): the
    per-pixel statistics there, what follows from the level histograms in numpy; the state
    (:meth:`state_arrays`) lives on the CPU. Raises ValueError naming an unknown metric.
    """

    HIGHER_IS_BETTER: dict[str, bool] = HIGHER_IS_BETTER

    def __init__(
        self, device: torch.device | str = "cpu", metrics: Sequence[str] | None = None
    ) -> None:
        super().__init__(metrics, FAMILIES)
        self.device = torch.device(device)

    def all_reduce(self) -> None:
        """Sum the state over all processes of the process group (no-op outside one), so that
        :meth:`compute` gives the metrics of the images of every process."""
        all_reduce_arrays(self.state_arrays(), self.device)

    @torch.no_grad()
    def confusion(self, pred: Any, gt: Any) -> np.ndarray:
        """Per-image ``TP, FP, FN, TN`` (B x 4 int64) of the level-128 binary metrics of a
        batch in any :meth:`update` format (a single batch, not a list), as :meth:`update`
        would count them."""
        pred_u8, mask = self._to_uint8_and_mask(pred, gt)
        return BinaryAccumulator.confusion(PreparedBatch(pred_u8, mask))

    @torch.no_grad()
    def update(self, pred: Any, gt: Any) -> None:
        """Add a batch of predictions and ground truths (see the class docstring for formats).

        Raises ValueError for unequal list lengths or batch sizes and for unsupported shapes,
        TypeError for unsupported types or dtypes.
        """
        groups: dict[tuple[Any, ...], tuple[list[torch.Tensor], list[torch.Tensor]]] = {}
        for pred_item, gt_item in batch_pairs(pred, gt):
            pred_u8, mask = self._to_uint8_and_mask(pred_item, gt_item)
            if mask.shape[0] == 0:
                continue
            preds, masks = groups.setdefault((*mask.shape[1:], mask.device), ([], []))
            preds.append(pred_u8)
            masks.append(mask)
        for preds, masks in groups.values():
            self.update_prepared(PreparedBatch(torch.cat(preds), torch.cat(masks)))

    def _to_uint8_and_mask(self, pred: Any, gt: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """One batch (or image) in any accepted format to the BxHxW uint8 map and bool mask, the
        map resized to the mask's size, both on the prediction's device."""
        pred_t = as_bhw(as_tensor(pred, self.device), "pred")
        gt_t = as_bhw(as_tensor(gt, self.device), "gt").to(pred_t.device)
        if pred_t.shape[0] != gt_t.shape[0]:
            raise ValueError(f"batch size mismatch: pred {pred_t.shape[0]}, gt {gt_t.shape[0]}")
        mask = gt_to_mask(gt_t)
        return pred_to_uint8(pred_t, (int(mask.shape[1]), int(mask.shape[2]))), mask
