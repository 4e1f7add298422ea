"""Salient-object-detection and binary-mask metrics, batched in torch.

:class:`SODMetrics` computes six metric families (:data:`METRIC_NAMES`, in this order):

* ``MAE`` (:class:`MAEAccumulator`);
* ``maxF``, ``meanF``, ``adpF``: F-measure, ``beta^2 = 0.3`` (:class:`FmeasureAccumulator`);
* ``wF``: weighted F-measure (:class:`WeightedFAccumulator`);
* ``Sm``: S-measure (:class:`SmeasureAccumulator`);
* ``maxE``, ``meanE``, ``adpE``: E-measure (:class:`EmeasureAccumulator`);
* ``IoU``, ``F1``, ``precision``, ``recall``, ``accuracy`` (pooled over pixels) and their
  ``_img`` per-image means: the foreground class, with the prediction binarised at 8-bit level
  128, without stretch (:class:`BinaryAccumulator`).

The first five reproduce PySODMetrics 1.6.2 (``MAE``, ``Fmeasure``, ``WeightedFmeasure``,
``Smeasure``, ``Emeasure``) evaluated image by image on 8-bit maps, but the computation runs
batched on the device of the inputs, in float64.

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

Every metric is a per-image score averaged over images (or, for the pooled binary metrics, a
ratio of pixel counts), so the accumulated state is a handful of sums plus an image count (see
:meth:`SODMetrics.state_tensors`); summing the state of several accumulators (e.g. a DDP
all-reduce) gives the same result as one accumulator over all images.

To add a metric family: subclass :class:`Accumulator` (or :class:`MeanScoreAccumulator` for
one per-image score, :class:`CurveAccumulator` for an adaptive score plus 256-threshold curves)
in a module of this package, with its metric names and directions in ``HIGHER_IS_BETTER``;
then append the class to ``FAMILIES`` in :mod:`utils.metrics.sod`, which makes its names part of
:data:`HIGHER_IS_BETTER` and :data:`METRIC_NAMES`. Shared per-batch quantities belong in
:class:`PreparedBatch` as cached properties.
"""

from utils.metrics.base import Accumulator, CurveAccumulator, MeanScoreAccumulator
from utils.metrics.binary import BinaryAccumulator
from utils.metrics.emeasure import EmeasureAccumulator
from utils.metrics.fmeasure import BETA, FmeasureAccumulator, MAEAccumulator
from utils.metrics.prepare import (
    NUM_THRESHOLDS,
    PreparedBatch,
    prepare_batch,
    prob_to_uint8,
)
from utils.metrics.smeasure import SmeasureAccumulator
from utils.metrics.sod import HIGHER_IS_BETTER, METRIC_NAMES, SODMetrics
from utils.metrics.weighted_f import WeightedFAccumulator

__all__ = [
    "BETA",
    "HIGHER_IS_BETTER",
    "METRIC_NAMES",
    "NUM_THRESHOLDS",
    "Accumulator",
    "BinaryAccumulator",
    "CurveAccumulator",
    "EmeasureAccumulator",
    "FmeasureAccumulator",
    "MAEAccumulator",
    "MeanScoreAccumulator",
    "PreparedBatch",
    "SODMetrics",
    "SmeasureAccumulator",
    "WeightedFAccumulator",
    "prepare_batch",
    "prob_to_uint8",
]
