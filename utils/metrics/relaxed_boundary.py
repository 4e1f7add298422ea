"""Relaxed boundary F-measure (``relaxFb``) of the BASNet and U^2-Net papers, batched in torch.

Source of the definition: X. Qin et al., "BASNet: Boundary-Aware Salient Object Detection",
CVPR 2019, Sec. 5.2 ("relaxed boundary F-measure"), used again by X. Qin et al., "U^2-Net:
Going Deeper with Nested U-Structure for Salient Object Detection", Pattern Recognition 106,
2020, Sec. 4.2: the map is binarised at 0.5; the one-pixel-wide boundary of a binary mask is
``XOR(mask, erosion(mask))``; the relaxed precision is the fraction of predicted boundary pixels
within ``rho`` pixels of a ground-truth boundary pixel, the relaxed recall the fraction of
ground-truth boundary pixels within ``rho`` pixels of a predicted boundary pixel (BASNet takes
this relaxation and ``rho = 3`` from earlier work on relaxed precision and recall), combined as
the F-measure with ``beta^2 = 0.3`` and averaged over images.

The papers leave some details open; the choices made here:

* the prediction is the prepared (min-max stretched) map of the SOD metrics, binarised with
  ``pred > 0.5`` (the binarisation of PySODMetrics' binary variants and of HCE); the ground truth
  is ``gt_uint8 > 128``;
* erosion by the 3x3 square (8-neighbourhood); outside the image counts as neither class, so the
  image frame is not a boundary (a mask touching the frame has no boundary along it, a full mask
  has none at all);
* "within rho pixels" is the Euclidean distance ``sqrt(dy^2 + dx^2) <= rho``;
* zero denominators: when neither boundary has a pixel the image scores 1 (nothing to find,
  nothing found); when only one is empty its precision or recall is 0 and so is F.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from utils.metrics.base import MeanScoreAccumulator, as_numpy
from utils.metrics.fmeasure import f_beta
from utils.metrics.prepare import PreparedBatch

RHO = 3
"""Slack of the relaxed boundary F-measure, in pixels (Euclidean distance)."""


def boundary(mask: torch.Tensor) -> torch.Tensor:
    """B x H x W bool: the pixels of ``mask`` (B x H x W bool) with a pixel of the other class
    among their 8 neighbours inside the image, ``mask XOR erosion(mask)``."""
    background = (~mask).to(torch.float32).unsqueeze(1)
    # max pooling pads with -inf: pixels outside the image never count as background
    touches_background = F.max_pool2d(background, 3, stride=1, padding=1)[:, 0] > 0
    return mask & touches_background


def _disk(radius: int, device: torch.device) -> torch.Tensor:
    offsets = torch.arange(-radius, radius + 1, device=device)
    inside = offsets[:, None] ** 2 + offsets[None, :] ** 2 <= radius * radius
    return inside.to(torch.float32)[None, None]


def near(points: torch.Tensor, radius: int = RHO) -> torch.Tensor:
    """B x H x W bool: pixels within Euclidean distance ``radius`` of a pixel of ``points``."""
    counts = F.conv2d(
        points.to(torch.float32).unsqueeze(1), _disk(radius, points.device), padding=radius
    )
    return counts[:, 0] > 0.5


def relaxed_boundary_f(pred: torch.Tensor, gt: torch.Tensor, rho: int = RHO) -> np.ndarray:
    """Per-image relaxed boundary F-measure (B, float64 numpy) of binary masks ``pred`` and
    ``gt`` (B x H x W bool tensors); see the module docstring for the definition and edge
    cases."""
    pred_edge, gt_edge = boundary(pred), boundary(gt)
    pred_count = as_numpy(pred_edge.sum(dim=(1, 2))).astype(np.float64)
    gt_count = as_numpy(gt_edge.sum(dim=(1, 2))).astype(np.float64)
    pred_hits = as_numpy((pred_edge & near(gt_edge, rho)).sum(dim=(1, 2)))
    gt_hits = as_numpy((gt_edge & near(pred_edge, rho)).sum(dim=(1, 2)))
    precision = pred_hits / np.maximum(pred_count, 1.0)
    recall = gt_hits / np.maximum(gt_count, 1.0)
    score = f_beta(precision, recall)
    return np.where((pred_count == 0) & (gt_count == 0), 1.0, score)


class RelaxedBoundaryFAccumulator(MeanScoreAccumulator):
    """``relaxFb``: mean over images of the relaxed boundary F-measure (``rho = 3``,
    ``beta^2 = 0.3``) of ``pred > 0.5`` against the ground truth; see the module docstring."""

    HIGHER_IS_BETTER: ClassVar[dict[str, bool]] = {"relaxFb": True}

    def scores(self, batch: PreparedBatch) -> np.ndarray:
        """Per-image relaxed boundary F-measure (B, float64)."""
        positive = batch.lut > 0.5  # B x 256: levels binarised as foreground
        flat = batch.pred_uint8.reshape(batch.batch_size, -1).to(torch.int64)
        pred = positive.gather(1, flat).view(batch.gt.shape)
        return relaxed_boundary_f(pred, batch.gt)
