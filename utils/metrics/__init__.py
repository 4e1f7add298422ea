"""Salient-object-detection metrics: MAE and F-measure, batched in torch.

The numbers reproduce PySODMetrics 1.6.2 (``MAE`` and ``Fmeasure``) evaluated image by image on
8-bit maps, but the computation runs batched on the device of the inputs, in float64.

Preparation of one image (identical to PySODMetrics' ``prepare_data``):

* ground truth: ``gt_uint8 > 128``;
* prediction: ``p = pred_uint8 / 255`` and, when ``p.max() != p.min()``, the min-max stretch
  ``(p - p.min()) / (p.max() - p.min())`` (a constant map is left as ``pred_uint8 / 255``).

MAE and F-measure only depend on the value of each pixel, so they are computed from per-image
histograms of the 256 levels (split by ground truth) and the prepared value of each level, which
is bit-identical to numpy's per-pixel value; the 256-threshold curves are therefore exact. Means
are summed in a different order than numpy's, which changes results by ~1e-16, except where it
matters: the adaptive threshold ``2 * mean`` falling (nearly) on a level present in the image;
there the mean is recomputed with ``np.mean`` as PySODMetrics does.

Every metric is a per-image score averaged over images, so the accumulated state is a handful of
sums plus an image count (see :meth:`SODMetrics.state_tensors`); summing the state of several
accumulators (e.g. a DDP all-reduce) gives the same result as one accumulator over all images.
To add a metric family (weighted F, S-measure, E-measure), subclass ``_Accumulator``, register
it in ``SODMetrics.__init__`` and add its names to ``HIGHER_IS_BETTER``.
"""

from utils.metrics.base import Accumulator
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
    "EmeasureAccumulator",
    "FmeasureAccumulator",
    "MAEAccumulator",
    "PreparedBatch",
    "SODMetrics",
    "SmeasureAccumulator",
    "WeightedFAccumulator",
    "prepare_batch",
    "prob_to_uint8",
]
