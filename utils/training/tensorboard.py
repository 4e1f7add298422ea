"""Image grids for TensorBoard: input | ground truth | prediction, one row per sample."""

from __future__ import annotations

import torch

from utils.preprocessing import denormalise


def comparison_grid(
    images: torch.Tensor, masks: torch.Tensor, preds: torch.Tensor, pad: int = 2
) -> torch.Tensor:
    """A 3xHxW grid in [0, 1]: each row shows an input, its mask and the prediction."""
    rows = []
    for image, mask, pred in zip(
        denormalise(images.float()), masks.float(), preds.float(), strict=True
    ):
        tiles = [image, mask.expand(3, -1, -1), pred.expand(3, -1, -1)]
        rows.append(
            torch.cat([torch.nn.functional.pad(t, (pad,) * 4, value=1.0) for t in tiles], 2)
        )
    return torch.cat(rows, 1).cpu()
