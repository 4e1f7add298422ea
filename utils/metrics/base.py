"""Base classes of the metric accumulators: per-image scores summed into float64 numpy arrays.

* :class:`Accumulator`: the interface every metric family implements;
* :class:`MeanScoreAccumulator`: a family of one metric, the mean of a per-image score (MAE,
  weighted F, S-measure);
* :class:`CurveAccumulator`: a family scored by an adaptive threshold and the 256 thresholds of
  the dynamic curves (F-measure, E-measure).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from utils.metrics.levels import NUM_THRESHOLDS


def as_numpy(values: Any) -> np.ndarray:
    """``values`` (a numpy array, a torch tensor on any device, or a number) as a numpy array
    (a tensor is copied to the CPU; no torch import here)."""
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    return np.asarray(values)


class Accumulator:
    """Base class: per-image scores summed into float64 numpy arrays (on the CPU, whatever
    device computed the scores; the all-reduce of :meth:`SODMetrics.all_reduce` moves them).

    A new metric family subclasses this (or one of the two bases below): ``HIGHER_IS_BETTER``
    names the metrics it computes, ``_init_state`` creates the sum arrays (image count last,
    listed by ``state_arrays``), ``update`` adds the per-image scores of a batch
    (:class:`~utils.metrics.numpy_batch.NumpyBatch` or
    :class:`~utils.metrics.prepare.PreparedBatch`) and ``compute`` turns the sums into those
    metrics.
    """

    HIGHER_IS_BETTER: ClassVar[dict[str, bool]]

    def __init__(self) -> None:
        self._init_state()

    @staticmethod
    def _zeros(*shape: int) -> np.ndarray:
        return np.zeros(shape, dtype=np.float64)

    def _init_state(self) -> None:
        raise NotImplementedError

    def reset(self) -> None:
        """Drop all accumulated images (zeroes the state arrays in place)."""
        for array in self.state_arrays():
            array[...] = 0.0

    def state_arrays(self) -> list[np.ndarray]:
        """The live float64 state arrays (sums; the image count last); adding another
        accumulator's arrays to them in place merges its images."""
        raise NotImplementedError

    def update(self, batch: Any) -> None:
        """Add the per-image scores of a prepared batch."""
        raise NotImplementedError

    def compute(self) -> dict[str, float]:
        """The dataset metrics; raises RuntimeError when no image was added."""
        raise NotImplementedError

    @property
    def num_images(self) -> int:
        """Number of images accumulated so far."""
        return int(self.state_arrays()[-1])

    def _check_not_empty(self) -> None:
        if self.num_images == 0:
            raise RuntimeError(f"{type(self).__name__}: no images accumulated, nothing to compute")


class MeanScoreAccumulator(Accumulator):
    """A family of one metric (the only key of ``HIGHER_IS_BETTER``): the mean over images of
    the per-image score that ``scores`` computes.

    The state is the sum of the scores and the image count.
    """

    def _init_state(self) -> None:
        self.score_sum = self._zeros()
        self.count = self._zeros()

    def state_arrays(self) -> list[np.ndarray]:
        return [self.score_sum, self.count]

    def scores(self, batch: Any) -> Any:
        """Per-image score (B, float64: a numpy array, or a tensor on the batch's device)."""
        raise NotImplementedError

    def update(self, batch: Any) -> None:
        self.score_sum += as_numpy(self.scores(batch)).sum()
        self.count += batch.batch_size

    def compute(self) -> dict[str, float]:
        self._check_not_empty()
        (name,) = self.HIGHER_IS_BETTER
        return {name: float(self.score_sum / self.count)}


class CurveAccumulator(Accumulator):
    """A family scored per image by an adaptive threshold and by the 256 dynamic thresholds.

    ``scores`` returns the per-image adaptive score (B) and curves (B x 256 each, named as in
    ``CURVES``; index ``i`` is threshold ``255 - i``, see
    :attr:`PreparedBatch.cumulative_counts`). The dataset curves are the means of the per-image
    curves. ``HIGHER_IS_BETTER`` names three metrics, in this order: the maximum and the mean of
    the dataset curve ``SUMMARY_CURVE``, and the mean of the per-image adaptive scores.
    """

    CURVES: ClassVar[tuple[str, ...]]
    SUMMARY_CURVE: ClassVar[str]

    def _init_state(self) -> None:
        self.adaptive_sum = self._zeros()
        self.curve_sums = {name: self._zeros(NUM_THRESHOLDS) for name in self.CURVES}
        self.count = self._zeros()

    def state_arrays(self) -> list[np.ndarray]:
        return [self.adaptive_sum, *self.curve_sums.values(), self.count]

    def scores(self, batch: Any) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Per-image adaptive score (B) and curves (``CURVES``: B x 256 each), float64."""
        raise NotImplementedError

    def update(self, batch: Any) -> None:
        adaptive, curves = self.scores(batch)
        self.adaptive_sum += adaptive.sum()
        for name, curve in curves.items():
            self.curve_sums[name] += curve.sum(axis=0)
        self.count += batch.batch_size

    def curves(self) -> dict[str, np.ndarray]:
        """Dataset-mean curves (``CURVES``, 256 values each, index i: threshold 255 - i);
        raises RuntimeError when no image was added."""
        self._check_not_empty()
        return {name: total / self.count for name, total in self.curve_sums.items()}

    def compute(self) -> dict[str, float]:
        self._check_not_empty()
        maximum, mean, adaptive = self.HIGHER_IS_BETTER
        curve = self.curve_sums[self.SUMMARY_CURVE] / self.count
        return {
            maximum: float(curve.max()),
            mean: float(curve.mean()),
            adaptive: float(self.adaptive_sum / self.count),
        }
