"""Salient-object-detection and binary-mask metrics, batched in torch.

:class:`SODMetrics` computes, by default (:data:`DEFAULT_METRICS`, in this order):

* ``MAE`` (:class:`MAEAccumulator`);
* ``maxF``, ``meanF``, ``adpF``: F-measure, ``beta^2 = 0.3`` (:class:`FmeasureAccumulator`);
* ``wF``: weighted F-measure (:class:`WeightedFAccumulator`);
* ``Sm``: S-measure (:class:`SmeasureAccumulator`);
* ``maxE``, ``meanE``, ``adpE``: E-measure (:class:`EmeasureAccumulator`);
* ``IoU``, ``F1``, ``precision``, ``recall``, ``accuracy`` (pooled over pixels) and their
  ``_img`` per-image means: the foreground class, with the prediction binarised at 8-bit level
  128, without stretch (:class:`BinaryAccumulator`).

and, when selected by name (``metrics=[...]``; all names: :data:`ALL_METRIC_NAMES`):

* ``max<H>``, ``mean<H>``, ``adp<H>``, ``bin<H>``, ``bin<H>_pooled`` for the ``FmeasureV2``
  handlers ``H`` in ``IoU``, ``Dice``, ``BER``, ``Kappa``, ``OA``, ``Precision``, ``Recall``,
  ``Specificity``, ``FPR`` and ``F`` (:class:`FmeasureV2Accumulator`; ``F`` has ``bin`` variants
  only, its others being ``maxF``, ``meanF``, ``adpF``);
* ``relaxFb``: relaxed boundary F-measure of BASNet / U^2-Net
  (:class:`RelaxedBoundaryFAccumulator`);
* ``si_MAE`` and ``si_<variant><H>`` / ``si_<variant><H>_pooled``: size-invariant MAE and
  ``FmeasureV2`` (:class:`SizeInvariantMAEAccumulator`,
  :class:`SizeInvariantFmeasureV2Accumulator`);
* ``maxMSIoU``, ``meanMSIoU``, ``adpMSIoU``, ``binMSIoU``: multi-scale IoU
  (:class:`MSIoUAccumulator`);
* ``HCE``: human correction effort of the DIS benchmark (:class:`HCEAccumulator`; needs
  scikit-image).

All but the level-128 binary metrics and ``relaxFb`` reproduce PySODMetrics 1.6.2 (``MAE``,
``Fmeasure``, ``WeightedFmeasure``, ``Smeasure``, ``Emeasure``, ``FmeasureV2``, ``MSIoU``,
``SizeInvarianceMAE``, ``SizeInvarianceFmeasureV2``, ``HumanCorrectionEffortMeasure``)
evaluated image by image on 8-bit maps (each family's class documents where it deviates), but
the computation runs batched: the per-pixel statistics on the device of the inputs (on the CPU
in numpy and OpenCV), what follows from them in numpy, in float64 (``si_*`` and ``HCE``: per
image, on the CPU). :class:`MetricSet` computes the default metrics of numpy maps without
torch; :class:`SODMetrics` adds the optional families, tensors and resizing.

Preparation of one image (identical to PySODMetrics' ``prepare_data``, done once per batch by
:class:`PreparedBatch` and shared by every family):

* ground truth: ``gt_uint8 > 128``;
* prediction: ``p = pred_uint8 / 255`` and, when ``p.max() != p.min()``, the min-max stretch
  ``(p - p.min()) / (p.max() - p.min())`` (a constant map is left as ``pred_uint8 / 255``).

Metrics that only depend on the value of each pixel (MAE, F-measure, E-measure, binary) are
computed from per-image histograms of the 256 levels (split by ground truth) and the prepared
value of each level, which is bit-identical to numpy's per-pixel value; the 256-threshold curves
are therefore exact. Means are summed in a different order than numpy's, which changes results
by ~1e-16, except where it matters: the adaptive threshold ``2 * mean`` falling (nearly) on a
level present in the image; there the mean is recomputed with ``np.mean`` as PySODMetrics does.

Every metric is a per-image score averaged over images (or, for the ``_pooled`` and the pooled
level-128 binary metrics, a function of sums over images), so the accumulated state is a
handful of sums plus an image count (see :meth:`MetricSet.state_arrays`); summing the state
of several accumulators (e.g. a DDP all-reduce) gives the same result as one accumulator over
all images.

To add a metric family: subclass :class:`Accumulator` (or :class:`MeanScoreAccumulator` for
one per-image score, :class:`CurveAccumulator` for an adaptive score plus 256-threshold curves)
in a module of this package, with its metric names and directions in ``HIGHER_IS_BETTER``;
then append the class to ``OPTIONAL_FAMILIES`` in :mod:`utils.metrics.sod`, which makes its
names part of :data:`HIGHER_IS_BETTER` and :data:`ALL_METRIC_NAMES` (selectable by name; the
default set :data:`DEFAULT_METRICS` does not change).
Shared per-batch quantities belong in :class:`~utils.metrics.levels.LevelStats` (those that
follow from the level histograms) or in :class:`PreparedBatch` as cached properties.
"""

from importlib import import_module
from typing import Any

_HOMES = {
    "Accumulator": "base",
    "CurveAccumulator": "base",
    "MeanScoreAccumulator": "base",
    "BinaryAccumulator": "binary",
    "EmeasureAccumulator": "emeasure",
    "BETA": "fmeasure",
    "FmeasureAccumulator": "fmeasure",
    "MAEAccumulator": "fmeasure",
    "FmeasureV2Accumulator": "fmeasure_v2",
    "HCEAccumulator": "hce",
    "NUM_THRESHOLDS": "levels",
    "DEFAULT_METRICS": "metric_set",
    "MetricSet": "metric_set",
    "MSIoUAccumulator": "msiou",
    "PreparedBatch": "prepare",
    "prepare_batch": "prepare",
    "prob_to_uint8": "prepare",
    "RelaxedBoundaryFAccumulator": "relaxed_boundary",
    "SizeInvariantFmeasureV2Accumulator": "size_invariant",
    "SizeInvariantMAEAccumulator": "size_invariant",
    "SmeasureAccumulator": "smeasure",
    "ALL_METRIC_NAMES": "sod",
    "HIGHER_IS_BETTER": "sod",
    "SODMetrics": "sod",
    "with_defaults": "sod",
    "WeightedFAccumulator": "weighted_f",
}
"""The module of each public name. They are imported on first use: the numpy part of the
package (:class:`MetricSet` and the default families) does not import torch."""

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{_HOMES[name]}"), name)
    globals()[name] = value
    return value
