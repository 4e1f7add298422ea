"""Learning-rate schedules stepped once per iteration (``total_iters`` = epochs x iterations)."""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from utils.runtime.logs import get_logger

__all__ = ["Poly", "WarmupCosine"]

ON_RESUME = ("stretch", "restart", "continue_final")
"""What a resumed run whose length changed (e.g. more epochs) does with the schedule:
``stretch`` the schedule over the new length at the same step (the lr of an annealed run rises
again), ``restart`` a new schedule (warmup included) over the remaining iterations, or
``continue_final``: keep the old length, so after its end the lr stays at its final value."""


class _IterScheduler(LRScheduler):
    """Linear warmup over ``warmup_iters``, then ``decay(progress)``, progress in [0, 1].

    ``on_resume`` (see :data:`ON_RESUME`) applies in :meth:`resume` when the run's length
    changed.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        total_iters: int,
        warmup_iters: int = 0,
        on_resume: str = "stretch",
    ) -> None:
        if on_resume not in ON_RESUME:
            raise ValueError(f"on_resume must be one of {', '.join(ON_RESUME)}, got {on_resume!r}")
        if warmup_iters < 0 or total_iters < 1:
            raise ValueError(
                f"warmup_iters must be 0 or more (got {warmup_iters}) and the run needs at "
                f"least one iteration (got {total_iters})"
            )
        if warmup_iters >= total_iters:  # e.g. fewer epochs, or steps split over DDP processes
            get_logger().warning(
                "lr_scheduler.args.warmup_iters %d is not shorter than the run (%d iterations): "
                "warming up over %d",
                warmup_iters,
                total_iters,
                total_iters - 1,
            )
            warmup_iters = total_iters - 1
        self.total_iters = total_iters
        self.warmup_iters = warmup_iters
        self.on_resume = on_resume
        self.start_iter = 0  # the iteration this schedule began at (``restart`` on resume)
        super().__init__(optimizer)

    def decay(self, progress: float) -> float:
        raise NotImplementedError

    def factor(self, step: int) -> float:
        """The lr factor at iteration ``step`` of the run."""
        step -= self.start_iter
        if step < self.warmup_iters:
            return (step + 1) / (self.warmup_iters + 1)
        span = self.total_iters - self.warmup_iters
        return self.decay(min(step - self.warmup_iters, span) / span)

    def get_lr(self) -> list[float]:
        f = self.factor(self.last_epoch)
        return [base * f for base in self.base_lrs]

    def resume(self, state: dict) -> str | None:
        """Load the ``state_dict`` of an interrupted run and fit the schedule to this run's
        ``total_iters`` as ``on_resume`` (this run's setting) says. Returns a line for the log
        when the length changed (old and new length, the policy, the lr before and after), else
        None."""
        total, policy = self.total_iters, self.on_resume
        self.load_state_dict(state)
        self.on_resume = policy
        old_total = self.start_iter + self.total_iters
        if total == old_total:
            return None
        done = self.last_epoch
        before = self.base_lrs[0] * self.factor(done)
        if policy == "stretch":
            self.start_iter, self.total_iters = 0, total
        elif policy == "restart":
            self.start_iter, self.total_iters = done, max(1, total - done)
            self.warmup_iters = min(self.warmup_iters, self.total_iters - 1)
        after = self.base_lrs[0] * self.factor(done)
        return (
            f"lr_scheduler: the run is now {total} iterations long (was {old_total}); "
            f"on_resume {policy!r}: lr {before:.4g} -> {after:.4g}"
        )


class Poly(_IterScheduler):
    """lr = base_lr * (1 - progress) ** power after an optional linear warmup."""

    def __init__(
        self,
        optimizer: Optimizer,
        total_iters: int,
        power: float = 0.9,
        warmup_iters: int = 0,
        on_resume: str = "stretch",
    ) -> None:
        self.power = power
        super().__init__(optimizer, total_iters, warmup_iters, on_resume)

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
        on_resume: str = "stretch",
    ) -> None:
        if not 0 <= min_lr_ratio <= 1:
            raise ValueError(f"min_lr_ratio must be in [0, 1], got {min_lr_ratio}")
        self.min_lr_ratio = min_lr_ratio
        super().__init__(optimizer, total_iters, warmup_iters, on_resume)

    def decay(self, progress: float) -> float:
        cosine = 0.5 * (1 + math.cos(math.pi * progress))
        return self.min_lr_ratio + (1 - self.min_lr_ratio) * cosine
