"""Base classes of the metric accumulators: per-image scores summed into float64 tensors.

* :class:`Accumulator`: the interface every metric family implements;
* :class:`MeanScoreAccumulator`: a family of one metric, the mean of a per-image score (MAE,
  weighted F, S-measure);
* :class:`CurveAccumulator`: a family scored by an adaptive threshold and the 256 thresholds of
  the dynamic curves (F-measure, E-measure).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch

from utils.metrics.prepare import NUM_THRESHOLDS, PreparedBatch


class Accumulator:
    """Base class: per-image scores summed into float64 tensors on ``device``.

    A new metric family subclasses this (or one of the two bases below): ``HIGHER_IS_BETTER``
    names the metrics it computes, ``_init_state`` creates the sum tensors (image count last,
    listed by ``state_tensors``), ``update`` adds the per-image scores of a
    :class:`PreparedBatch` and ``compute`` turns the sums into those metrics.
    """

    HIGHER_IS_BETTER: ClassVar[dict[str, bool]]

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self._init_state()

    def _zeros(self, *shape: int) -> torch.Tensor:
        return torch.zeros(shape, dtype=torch.float64, device=self.device)

    def _init_state(self) -> None:
        raise NotImplementedError

    def reset(self) -> None:
        """Drop all accumulated images (zeroes the state tensors in place)."""
        for tensor in self.state_tensors():
            tensor.zero_()

    def state_tensors(self) -> list[torch.Tensor]:
        """The live state tensors (sums; the image count last); may be all-reduced in place."""
        raise NotImplementedError

    def update(self, batch: PreparedBatch) -> None:
        """Add the per-image scores of a prepared batch."""
        raise NotImplementedError

    def compute(self) -> dict[str, float]:
        """The dataset metrics; raises RuntimeError when no image was added."""
        raise NotImplementedError

    @property
    def num_images(self) -> int:
        """Number of images accumulated so far."""
        return int(self.state_tensors()[-1].item())

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

    def state_tensors(self) -> list[torch.Tensor]:
        return [self.score_sum, self.count]

    def scores(self, batch: PreparedBatch) -> torch.Tensor:
        """Per-image score (B, float64, on the batch's device)."""
        raise NotImplementedError

    def update(self, batch: PreparedBatch) -> None:
        self.score_sum += self.scores(batch).sum().to(self.device)
        self.count += batch.batch_size

    def compute(self) -> dict[str, float]:
        self._check_not_empty()
        (name,) = self.HIGHER_IS_BETTER
        return {name: (self.score_sum / self.count).item()}


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

    def state_tensors(self) -> list[torch.Tensor]:
        return [self.adaptive_sum, *self.curve_sums.values(), self.count]

    def scores(self, batch: PreparedBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Per-image adaptive score (B) and curves (``CURVES``: B x 256 each), float64."""
        raise NotImplementedError

    def update(self, batch: PreparedBatch) -> None:
        adaptive, curves = self.scores(batch)
        self.adaptive_sum += adaptive.sum().to(self.device)
        for name, curve in curves.items():
            self.curve_sums[name] += curve.sum(0).to(self.device)
        self.count += batch.batch_size

    def curves(self) -> dict[str, np.ndarray]:
        """Dataset-mean curves (``CURVES``, 256 values each, index i: threshold 255 - i);
        raises RuntimeError when no image was added."""
        self._check_not_empty()
        return {name: (total / self.count).cpu().numpy() for name, total in self.curve_sums.items()}

    def compute(self) -> dict[str, float]:
        self._check_not_empty()
        maximum, mean, adaptive = self.HIGHER_IS_BETTER
        curve = self.curve_sums[self.SUMMARY_CURVE] / self.count
        return {
            maximum: curve.max().item(),
            mean: curve.mean().item(),
            adaptive: (self.adaptive_sum / self.count).item(),
        }
