"""Deep-supervision losses over U2Net's seven logit maps."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DeepSupervisionLoss"]

LOSS_MODES = ("bce", "bce_iou")


def soft_iou_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - soft IoU of sigmoid(logits) and target, per image, averaged over the batch."""
    prob = torch.sigmoid(logits)
    dims = tuple(range(1, prob.dim()))
    inter = (prob * target).sum(dims)
    union = (prob + target).sum(dims) - inter
    return (1 - (inter + 1) / (union + 1)).mean()


class DeepSupervisionLoss(nn.Module):
    """Weighted sum over the outputs (fused first) of BCE-with-logits, or BCE + soft IoU.

    ``weights`` gives one weight per output (default 1 each, the official recipe's plain sum).
    Computed in float32 from logits, so it is safe under autocast.
    """

    def __init__(self, mode: str = "bce", weights: Sequence[float] | None = None) -> None:
        super().__init__()
        if mode not in LOSS_MODES:
            raise ValueError(f"mode must be one of {', '.join(LOSS_MODES)}, got {mode!r}")
        self.mode = mode
        self.weights = None if weights is None else [float(w) for w in weights]

    def forward(self, outputs: Sequence[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        if self.weights is not None and len(self.weights) != len(outputs):
            raise ValueError(
                f"loss.args.weights has {len(self.weights)} values but the model returns "
                f"{len(outputs)} outputs"
            )
        target = target.float()
        total = outputs[0].new_zeros((), dtype=torch.float32)
        for i, logits in enumerate(outputs):
            logits = logits.float()
            term = F.binary_cross_entropy_with_logits(logits, target)
            if self.mode == "bce_iou":
                term = term + soft_iou_loss(logits, target)
            total = total + (term if self.weights is None else self.weights[i] * term)
        return total
