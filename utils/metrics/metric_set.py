"""The default SOD metric families and :class:`MetricSet`, the front end that feeds a batch to
every accumulator of a chosen set of metrics, in numpy (no torch).

:class:`~utils.metrics.sod.SODMetrics` extends it with the optional families, torch tensors on
any device, resizing and the all-reduce of distributed runs. ``MetricSet`` alone scores 8-bit
maps read from files on the CPU without importing torch (``evaluate.py``'s default metrics),
with the same numbers: on the CPU both compute through
:class:`~utils.metrics.numpy_batch.NumpyBatch`.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any

import numpy as np

from utils.metrics.base import Accumulator
from utils.metrics.binary import BinaryAccumulator
from utils.metrics.emeasure import EmeasureAccumulator
from utils.metrics.fmeasure import FmeasureAccumulator, MAEAccumulator
from utils.metrics.numpy_batch import NumpyBatch, resize_map
from utils.metrics.smeasure import SmeasureAccumulator
from utils.metrics.weighted_f import WeightedFAccumulator

DEFAULT_FAMILIES: tuple[type[Accumulator], ...] = (
    MAEAccumulator,
    FmeasureAccumulator,
    WeightedFAccumulator,
    SmeasureAccumulator,
    EmeasureAccumulator,
    BinaryAccumulator,
)
"""The families of the default metric set (validation, ``evaluate.py`` without ``--metrics``)."""

DEFAULT_METRICS: tuple[str, ...] = tuple(
    name for family in DEFAULT_FAMILIES for name in family.HIGHER_IS_BETTER
)
"""The metrics computed when none are named (``metrics=None``): MAE, F-measure, weighted F,
S-measure, E-measure and the level-128 binary metrics. The other families cost more per image
(or much more: ``MSIoU``, ``HCE``) and are computed only when selected by name."""


def directions(families: Sequence[type[Accumulator]]) -> dict[str, bool]:
    """Every metric of ``families`` (in their order) and whether a larger value is better;
    raises RuntimeError when two families define the same name."""
    result = {
        name: higher for family in families for name, higher in family.HIGHER_IS_BETTER.items()
    }
    if len(result) != sum(len(family.HIGHER_IS_BETTER) for family in families):
        raise RuntimeError("two metric families define the same metric name")
    return result


def unknown_metric(name: str | None, known: Sequence[str]) -> str:
    """The message for an unknown metric ``name``: the closest names of ``known`` (case
    ignored, as ``difflib`` finds them), then every name."""
    lowered = {candidate.lower(): candidate for candidate in known}
    close = difflib.get_close_matches(str(name).lower(), lowered, n=3, cutoff=0.6)
    hint = f" (did you mean {' or '.join(repr(lowered[c]) for c in close)}?)" if close else ""
    return f"unknown metric {name!r}{hint}; available: {', '.join(known)}"


def as_bhw(values: np.ndarray, what: str) -> np.ndarray:
    """Reshape HxW, BxHxW or Bx1xHxW (numpy or torch) to BxHxW; raises ValueError otherwise."""
    if values.ndim == 2:
        return values[None]
    if values.ndim == 3:
        return values
    if values.ndim == 4 and values.shape[1] == 1:
        return values[:, 0]
    raise ValueError(f"{what} must be HxW, BxHxW or Bx1xHxW, got shape {tuple(values.shape)}")


class MetricSet:
    """The metrics ``metrics`` (None: :data:`DEFAULT_METRICS`) of ``families`` (default: the
    default families) over a dataset, matching PySODMetrics 1.6.2; raises ValueError naming an
    unknown metric.

    :meth:`update` takes 8-bit maps as read from PNG files (numpy ``pred`` uint8 and ``gt``
    uint8, ``> 128`` is foreground, or bool; HxW, BxHxW or Bx1xHxW, or equal-length lists of
    those); a prediction of another size than its mask is resized to it as PySODEvalToolkit
    does (:func:`~utils.metrics.numpy_batch.resize_map`).
    """

    def __init__(
        self,
        metrics: Sequence[str] | None = None,
        families: Sequence[type[Accumulator]] = DEFAULT_FAMILIES,
    ) -> None:
        known = directions(families)
        wanted = DEFAULT_METRICS if metrics is None else tuple(metrics)
        unknown = [name for name in wanted if name not in known]
        if unknown or not wanted:
            raise ValueError(unknown_metric(unknown[0] if unknown else None, known))
        self.names = tuple(name for name in known if name in wanted)
        self._accumulators: tuple[Accumulator, ...] = tuple(
            family()
            for family in families
            if any(name in family.HIGHER_IS_BETTER for name in self.names)
        )

    def reset(self) -> None:
        """Drop all accumulated images."""
        for acc in self._accumulators:
            acc.reset()

    def state_arrays(self) -> list[np.ndarray]:
        """The live float64 state arrays of all accumulators (sums and image counts).

        Adding another metric set's arrays (of the same metrics) to them in place, or summing
        them across processes, makes :meth:`compute` return the metrics over the union of the
        images.
        """
        return [array for acc in self._accumulators for array in acc.state_arrays()]

    def add_state(self, state: Sequence[np.ndarray]) -> None:
        """Add ``state`` (arrays shaped as :meth:`state_arrays`, e.g. another metric set's of the
        same metrics) in place: this set then holds the images of both."""
        for total, part in zip(self.state_arrays(), state, strict=True):
            total += part

    @property
    def num_images(self) -> int:
        """Number of images accumulated so far."""
        return self._accumulators[0].num_images

    def update(self, pred: Any, gt: Any) -> None:
        """Add 8-bit maps and masks (see the class docstring). Raises ValueError for unequal
        list lengths, batch sizes or image sizes and for unsupported shapes, TypeError for other
        dtypes."""
        groups: dict[tuple[int, ...], tuple[list[np.ndarray], list[np.ndarray]]] = {}
        for pred_item, gt_item in batch_pairs(pred, gt):
            if not isinstance(pred_item, np.ndarray) or not isinstance(gt_item, np.ndarray):
                raise TypeError("MetricSet.update takes numpy arrays (SODMetrics takes tensors)")
            preds, gts = as_bhw(pred_item, "pred"), as_bhw(gt_item, "gt")
            if preds.shape[0] != gts.shape[0]:
                raise ValueError(f"batch size mismatch: pred {preds.shape[0]}, gt {gts.shape[0]}")
            if preds.dtype != np.uint8 or gts.dtype not in (np.uint8, np.bool_):
                raise TypeError(
                    f"expected uint8 maps and uint8 or bool masks, got {preds.dtype} and "
                    f"{gts.dtype}"
                )
            preds = resize_map(preds, gts.shape[1:])
            if gts.shape[0]:
                group = groups.setdefault(gts.shape[1:], ([], []))
                group[0].append(preds)
                group[1].append(gts if gts.dtype == np.bool_ else gts > 128)
        for preds_list, gts_list in groups.values():
            self.update_prepared(NumpyBatch(np.concatenate(preds_list), np.concatenate(gts_list)))

    def confusion(self, pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
        """Per-image ``TP, FP, FN, TN`` (B x 4 int64) of the level-128 binary metrics of 8-bit
        maps and masks (HxW or BxHxW; masks uint8 ``> 128`` or bool), as :meth:`update` counts
        them."""
        gts = as_bhw(gt, "gt")
        preds = resize_map(as_bhw(pred, "pred"), gts.shape[1:])
        return BinaryAccumulator.confusion(
            NumpyBatch(preds, gts if gts.dtype == np.bool_ else gts > 128)
        )

    def update_prepared(self, batch: Any) -> None:
        """Feed a prepared batch (:class:`NumpyBatch` or
        :class:`~utils.metrics.prepare.PreparedBatch`) to every accumulator."""
        for acc in self._accumulators:
            acc.update(batch)

    def compute(self) -> dict[str, float]:
        """The metrics ``self.names`` (name to value, in the families' order) over all images;
        raises RuntimeError if there are none."""
        if self.num_images == 0:
            raise RuntimeError(f"{type(self).__name__}.compute(): no images accumulated")
        results: dict[str, float] = {}
        for acc in self._accumulators:
            results.update(acc.compute())
        return {name: results[name] for name in self.names}

    def curves(self) -> dict[str, np.ndarray]:
        """Dataset-mean ``precision``, ``recall``, ``fmeasure`` curves (256 values each).

        Ordered as PySODMetrics: index ``i`` is threshold ``255 - i`` on the 8-bit stretched map
        (index 0: only pixels in bin 255 are positive; index 255: every pixel is positive).
        Raises RuntimeError when the F-measure is not among the metrics.
        """
        for acc in self._accumulators:
            if isinstance(acc, FmeasureAccumulator):
                return acc.curves()
        raise RuntimeError("curves(): the F-measure is not among the metrics computed")


def batch_pairs(pred: Any, gt: Any) -> list[tuple[Any, Any]]:
    """``(pred, gt)`` items of a batch or of equal-length lists of batches; raises ValueError for
    unequal lengths."""
    if isinstance(pred, Sequence) and not isinstance(pred, str | bytes):
        if len(pred) != len(gt):
            raise ValueError(f"got {len(pred)} predictions and {len(gt)} ground truths")
        return list(zip(pred, gt, strict=True))
    return [(pred, gt)]
