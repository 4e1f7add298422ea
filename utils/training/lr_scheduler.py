"""Learning-rate schedules stepped once per iteration (``total_iters`` = epochs x iterations)."""

from __future__ import annotations

import math
import warnings

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

__all__ = ["Poly", "WarmupCosine"]


class _IterScheduler(LRScheduler):
    """Linear warmup over ``warmup_iters``, then ``decay(progress)``, progress in [0, 1]."""

    def __init__(self, optimizer: Optimizer, total_iters: int, warmup_iters: int = 0) -> None:
        if warmup_iters < 0 or total_iters < 1:
            raise ValueError(
                f"warmup_iters must be 0 or more (got {warmup_iters}) and the run needs at "
                f"least one iteration (got {total_iters})"
            )
        if warmup_iters >= total_iters:  # e.g. fewer epochs, or steps split over DDP processes
            warnings.warn(
                f"warmup_iters {warmup_iters} is not shorter than the run ({total_iters} "
                f"iterations): warming up over {total_iters - 1}",
                stacklevel=3,
            )
            warmup_iters = total_iters - 1
        self.total_iters = total_iters
        self.warmup_iters = warmup_iters
        super().__init__(optimizer)

    def decay(self, progress: float) -> float:
        raise NotImplementedError

    def factor(self, step: int) -> float:
        if step < self.warmup_iters:
            return (step + 1) / (self.warmup_iters + 1)
        span = self.total_iters - self.warmup_iters
        return self.decay(min(step - self.warmup_iters, span) / span)

    def get_lr(self) -> list[float]:
        f = self.factor(self.last_epoch)
        return [base * f for base in self.base_lrs]


class Poly(_IterScheduler):
    """lr = base_lr * (1 - progress) ** power after an optional linear warmup."""

    def __init__(
        self, optimizer: Optimizer, total_iters: int, power: float = 0.9, warmup_iters: int = 0
    ) -> None:
        self.power = power
        super().__init__(optimizer, total_iters, warmup_iters)

    def decay(self, progress: float) -> float:
        return (1 - progress) ** self.power


class WarmupCosine(_IterScheduler):
    """Linear warmup, then cosine from base_lr down to ``min_lr_ratio`` * base_lr."""

    def __init__(
        self,
        optimizer: Optimizer,
        total_iters: int,
        warmup_iters: int = 0,
        min_lr_ratio: float = 0.0,
    ) -> None:
        if not 0 <= min_lr_ratio <= 1:
            raise ValueError(f"min_lr_ratio must be in [0, 1], got {min_lr_ratio}")
        self.min_lr_ratio = min_lr_ratio
        super().__init__(optimizer, total_iters, warmup_iters)

    def decay(self, progress: float) -> float:
        cosine = 0.5 * (1 + math.cos(math.pi * progress))
        return self.min_lr_ratio + (1 - self.min_lr_ratio) * cosine
