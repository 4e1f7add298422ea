"""Base class of the metric accumulators: per-image scores summed into float64 tensors."""

from __future__ import annotations

from typing import ClassVar

import torch

from utils.metrics.prepare import PreparedBatch


class Accumulator:
    """Base class: per-image scores summed into float64 tensors on ``device``.

    A new metric family subclasses this: ``HIGHER_IS_BETTER`` names the metrics it computes,
    ``_init_state`` creates the sum tensors (image count last, listed by ``state_tensors``),
    ``update`` adds the per-image scores of a :class:`PreparedBatch` and ``compute`` turns the
    sums into those metrics.
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
