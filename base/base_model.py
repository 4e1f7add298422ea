"""Base class for all models: an abstract ``forward`` plus parameter counting and a summary."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from torch import nn


class BaseModel(nn.Module, ABC):
    """``nn.Module`` with an abstract ``forward``, a parameter count and a one-line summary."""

    @abstractmethod
    def forward(self, *inputs: Any) -> Any:
        """Run the model; subclasses define the inputs and outputs."""

    def num_parameters(self, trainable_only: bool = False) -> int:
        """Number of parameter elements, optionally only those with ``requires_grad``."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def summary(self) -> str:
        """One line: class name, parameter count and trainable count, with thousands separators."""
        total, trainable = self.num_parameters(), self.num_parameters(trainable_only=True)
        return f"{type(self).__name__}: {total:,} parameters ({trainable:,} trainable)"

    def __str__(self) -> str:
        return f"{super().__str__()}\n{self.summary()}"
