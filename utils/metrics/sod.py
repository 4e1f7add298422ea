"""``SODMetrics``: the front end that prepares each batch once and feeds every accumulator."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from utils.metrics.base import Accumulator
from utils.metrics.binary import BinaryAccumulator
from utils.metrics.emeasure import EmeasureAccumulator
from utils.metrics.fmeasure import FmeasureAccumulator, MAEAccumulator
from utils.metrics.fmeasure_v2 import FmeasureV2Accumulator
from utils.metrics.hce import HCEAccumulator
from utils.metrics.msiou import MSIoUAccumulator
from utils.metrics.prepare import (
    PreparedBatch,
    as_bhw,
    as_tensor,
    gt_to_mask,
    pred_to_uint8,
)
from utils.metrics.relaxed_boundary import RelaxedBoundaryFAccumulator
from utils.metrics.size_invariant import (
    SizeInvariantFmeasureV2Accumulator,
    SizeInvariantMAEAccumulator,
)
from utils.metrics.smeasure import SmeasureAccumulator
from utils.metrics.weighted_f import WeightedFAccumulator
from utils.runtime.distributed import all_reduce_sum_

DEFAULT_FAMILIES: tuple[type[Accumulator], ...] = (
    MAEAccumulator,
    FmeasureAccumulator,
    WeightedFAccumulator,
    SmeasureAccumulator,
    EmeasureAccumulator,
    BinaryAccumulator,
)
"""The families of the default metric set (validation, ``evaluate.py`` without ``--metrics``)."""

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

HIGHER_IS_BETTER: dict[str, bool] = {
    name: higher for family in FAMILIES for name, higher in family.HIGHER_IS_BETTER.items()
}
"""Every metric :class:`SODMetrics` can compute, and whether a larger value is better."""
if len(HIGHER_IS_BETTER) != sum(len(family.HIGHER_IS_BETTER) for family in FAMILIES):
    raise RuntimeError("utils.metrics.sod.FAMILIES: two families define the same metric name")

ALL_METRIC_NAMES: tuple[str, ...] = tuple(HIGHER_IS_BETTER)
"""Every metric :class:`SODMetrics` can compute, in the order of results."""

DEFAULT_METRICS: tuple[str, ...] = tuple(
    name for family in DEFAULT_FAMILIES for name in family.HIGHER_IS_BETTER
)
"""The metrics computed when none are named (``metrics=None``): MAE, F-measure, weighted F,
S-measure, E-measure and the level-128 binary metrics. The other families cost more per image
(or much more: ``MSIoU``, ``HCE``) and are computed only when selected by name."""


def _check_known(names: Sequence[str]) -> None:
    """Raise ValueError naming the first of ``names`` that is no metric (or if there is none)."""
    unknown = [name for name in names if name not in HIGHER_IS_BETTER]
    if unknown or not names:
        raise ValueError(
            f"unknown metric {unknown[0] if unknown else None!r}; "
            f"available: {', '.join(ALL_METRIC_NAMES)}"
        )


def with_defaults(*extra: str | None) -> tuple[str, ...]:
    """:data:`DEFAULT_METRICS` plus the metrics ``extra`` (``None`` items are ignored), in the
    order of :data:`ALL_METRIC_NAMES`; e.g. the metrics a validation must compute for a
    ``trainer.monitor`` metric. Raises ValueError naming an unknown metric."""
    wanted = [*DEFAULT_METRICS, *(name for name in extra if name is not None)]
    _check_known(wanted)
    return tuple(name for name in ALL_METRIC_NAMES if name in wanted)


class SODMetrics:
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

    Computation runs on the device of the input tensors (numpy inputs go to ``device``); the
    state lives on ``device``.
    """

    HIGHER_IS_BETTER: dict[str, bool] = HIGHER_IS_BETTER

    def __init__(
        self, device: torch.device | str = "cpu", metrics: Sequence[str] | None = None
    ) -> None:
        self.device = torch.device(device)
        wanted = DEFAULT_METRICS if metrics is None else tuple(metrics)
        _check_known(wanted)
        self.names = tuple(name for name in ALL_METRIC_NAMES if name in wanted)
        self._accumulators: tuple[Accumulator, ...] = tuple(
            family(self.device)
            for family in FAMILIES
            if any(name in family.HIGHER_IS_BETTER for name in self.names)
        )

    def reset(self) -> None:
        """Drop all accumulated images."""
        for acc in self._accumulators:
            acc.reset()

    def state_tensors(self) -> list[torch.Tensor]:
        """The live float64 state tensors of all accumulators (sums and image counts).

        Summing them across processes in place (e.g. ``dist.all_reduce``) makes :meth:`compute`
        return the metrics over the union of the images.
        """
        return [t for acc in self._accumulators for t in acc.state_tensors()]

    def all_reduce(self) -> None:
        """Sum the state over all processes of the process group (no-op outside one), so that
        :meth:`compute` gives the metrics of the images of every process."""
        all_reduce_sum_(self.state_tensors())

    @property
    def num_images(self) -> int:
        """Number of images accumulated so far."""
        return self._accumulators[0].num_images

    @torch.no_grad()
    def update(self, pred: Any, gt: Any) -> None:
        """Add a batch of predictions and ground truths (see the class docstring for formats).

        Raises ValueError for unequal list lengths or batch sizes and for unsupported shapes,
        TypeError for unsupported types or dtypes.
        """
        if isinstance(pred, Sequence) and not isinstance(pred, str | bytes):
            if len(pred) != len(gt):
                raise ValueError(f"got {len(pred)} predictions and {len(gt)} ground truths")
            pairs = list(zip(pred, gt, strict=True))
        else:
            pairs = [(pred, gt)]
        groups: dict[tuple[Any, ...], tuple[list[torch.Tensor], list[torch.Tensor]]] = {}
        for pred_item, gt_item in pairs:
            pred_u8, mask = self._to_uint8_and_mask(pred_item, gt_item)
            if mask.shape[0] == 0:
                continue
            preds, masks = groups.setdefault((*mask.shape[1:], mask.device), ([], []))
            preds.append(pred_u8)
            masks.append(mask)
        for preds, masks in groups.values():
            self._update_prepared(PreparedBatch(torch.cat(preds), torch.cat(masks)))

    def _to_uint8_and_mask(self, pred: Any, gt: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """One batch (or image) in any accepted format to the BxHxW uint8 map and bool mask, the
        map resized to the mask's size, both on the prediction's device."""
        pred_t = as_bhw(as_tensor(pred, self.device), "pred")
        gt_t = as_bhw(as_tensor(gt, self.device), "gt").to(pred_t.device)
        if pred_t.shape[0] != gt_t.shape[0]:
            raise ValueError(f"batch size mismatch: pred {pred_t.shape[0]}, gt {gt_t.shape[0]}")
        mask = gt_to_mask(gt_t)
        return pred_to_uint8(pred_t, (int(mask.shape[1]), int(mask.shape[2]))), mask

    def _update_prepared(self, batch: PreparedBatch) -> None:
        """Feed a prepared batch to every accumulator (the shared preparation is done once)."""
        for acc in self._accumulators:
            acc.update(batch)

    def compute(self) -> dict[str, float]:
        """The metrics ``self.names`` (name to value, in :data:`ALL_METRIC_NAMES` order) over all
        images; raises RuntimeError if there are none."""
        if self.num_images == 0:
            raise RuntimeError("SODMetrics.compute(): no images accumulated (call update() first)")
        results: dict[str, float] = {}
        for acc in self._accumulators:
            results.update(acc.compute())
        return {name: results[name] for name in self.names}

    def curves(self) -> dict[str, np.ndarray]:
        """Dataset-mean ``precision``, ``recall``, ``fmeasure`` curves (256 values each).

        Ordered as PySODMetrics: index ``i`` is threshold ``255 - i`` on the 8-bit stretched map
        (index 0: only pixels in bin 255 are positive; index 255: every pixel is positive).
        """
        for acc in self._accumulators:
            if isinstance(acc, FmeasureAccumulator):
                return acc.curves()
        raise RuntimeError("SODMetrics.curves(): the F-measure is not among the metrics computed")
