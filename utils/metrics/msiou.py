"""Multi-scale IoU (PySODMetrics' ``MSIoU``), batched over thresholds in torch.

Source: A. Ahmadzadeh et al., "Multiscale IOU: A Metric for Evaluation of Salient Object
Detection with Fine Structures", ICIP 2021, as implemented by PySODMetrics 1.6.2.

For a binary prediction ``P`` and the ground truth ``G`` of an image:

* edges: the pixels where ``scipy.ndimage.sobel`` of the mask (zero padding) is non-zero along
  either axis. PySODMetrics applies it to the boolean mask, whose intermediate values wrap
  around in 8 bits (-1 is stored as 255); as the true sums lie in ``[-4, 4]``, the result is
  non-zero exactly where the integer Sobel response is, which is what is computed here;
* scales: cells of ``c = 1, 2, 4, ..., 512`` pixels, the grid aligned to the bottom-right corner
  (PySODMetrics pads at the top and left); a cell is on when it holds an edge pixel;
* ratio at a scale: ``(#cells on in both + 1) / (#cells on in G + 1)``; the score is the area
  under the 10 ratios (trapezoidal rule, step ``1 / 9``).

Reproduced as is: PySODMetrics' edge maps are float16, so it counts the ground truth's cells in
float16 (and adds the 1 in float16): counts above 2048 are rounded (to a multiple of 2, 4, ...),
and above 65504 they overflow to inf, which makes that scale's ratio 0. This changes the score
by up to ~1e-3 on large, busy ground truths; it is kept to match the reference exactly.

Variants: ``maxMSIoU`` / ``meanMSIoU``, the maximum / mean of the dataset curve over the 257
thresholds ``t = 0..256`` of ``trunc(pred * 255) >= t`` (index ``t``, ascending, unlike the
F-measure curves); ``adpMSIoU`` at ``pred >= min(2 * mean(pred), 1)``; ``binMSIoU`` at
``pred > 0.5``.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from utils.metrics.base import Accumulator, as_numpy
from utils.metrics.levels import NUM_THRESHOLDS
from utils.metrics.prepare import PreparedBatch

NUM_SCALES = 10
"""Cell sizes ``2^0 .. 2^9``."""

NUM_MSIOU_THRESHOLDS = NUM_THRESHOLDS + 1
"""Thresholds ``0..256`` of the dynamic MSIoU curve (256: nothing is positive)."""

WORD_BITS = 62
"""Binary masks are packed, one bit per mask, into int64 words of this many bits (bit ``k`` of
a pixel's word: the pixel is positive in mask ``k``), so that one bitwise operation processes up
to 62 thresholds; 62 keeps ``(1 << bits) - 1`` clear of the sign bit."""

_BYTE_BITS = (torch.arange(256)[:, None] >> torch.arange(8)[None, :]) & 1  # 256 x 8


def _sobel_is_zero(pos: torch.Tensor, neg: torch.Tensor, dim: int) -> torch.Tensor:
    """Packed words where ``d[-1] + 2 d[0] + d[+1] == 0`` along ``dim`` (-1 or -2), the
    differences ``d`` in {-1, 0, 1} given as the packed words ``pos`` (d = 1) and ``neg``
    (d = -1), each one pixel longer than the result at both ends of ``dim``."""
    length = pos.shape[dim] - 2
    p_l, p_m, p_r = (pos.narrow(dim, i, length) for i in range(3))
    n_l, n_m, n_r = (neg.narrow(dim, i, length) for i in range(3))
    middle_zero = ~(p_m | n_m)
    sides_cancel = ~(p_l | n_l | p_r | n_r) | (p_l & n_r) | (n_l & p_r)
    return (middle_zero & sides_cancel) | (p_m & n_l & n_r) | (n_m & p_l & p_r)


def edges(words: torch.Tensor) -> torch.Tensor:
    """Packed edge maps (N x H x W int64) of packed binary masks (N x H x W int64): a pixel is an
    edge in mask ``k`` where the integer Sobel response of the mask is non-zero along either
    axis (see the module docstring)."""
    padded = F.pad(words, (1, 1, 1, 1))  # outside the image: 0 in every mask
    below, above = padded[:, 2:, :], padded[:, :-2, :]  # N x H x (W + 2)
    zero_y = _sobel_is_zero(below & ~above, above & ~below, dim=-1)
    right, left = padded[:, :, 2:], padded[:, :, :-2]  # N x (H + 2) x W
    zero_x = _sobel_is_zero(right & ~left, left & ~right, dim=-2)
    return ~(zero_y & zero_x)


def cell_pyramid(words: torch.Tensor) -> list[torch.Tensor]:
    """The on-cells (packed, N x h x w int64) of the 10 scales of packed edge maps, the cells
    aligned at the bottom-right: a cell's bit ``k`` is set when a pixel of the cell has it."""
    level = words.flip(-1, -2)  # now aligned at the top-left: pad at the bottom and right
    levels = [level]
    for _ in range(NUM_SCALES - 1):
        h, w = level.shape[-2:]
        level = F.pad(level, (0, w % 2, 0, h % 2))
        n, h, w = level.shape
        quads = level.view(n, h // 2, 2, w // 2, 2)
        level = quads[:, :, 0, :, 0] | quads[:, :, 0, :, 1] | quads[:, :, 1, :, 0]
        level = level | quads[:, :, 1, :, 1]
        levels.append(level)
    return levels


def bit_counts(words: torch.Tensor) -> torch.Tensor:
    """N x 64 int64: for each of the N packed maps (N x h x w int64) and each bit position, the
    number of cells with the bit set (a histogram of each byte, then its bits)."""
    n = words.shape[0]
    flat = words.reshape(n, 1, -1)
    shifts = torch.arange(0, 64, 8, device=words.device)[None, :, None]
    byte_values = (flat >> shifts) & 255  # N x 8 x cells
    offsets = 256 * torch.arange(n * 8, device=words.device).view(n, 8, 1)
    hist = torch.bincount((byte_values + offsets).flatten(), minlength=n * 8 * 256)
    per_bit = hist.view(n, 8, 256, 1) * _BYTE_BITS.to(words.device)[None, None]
    return per_bit.sum(dim=2).reshape(n, 64)


def multiscale_iou(
    pred_words: torch.Tensor, num_bits: int, gt_levels: list[torch.Tensor]
) -> torch.Tensor:
    """MSIoU (N x num_bits, float64) of the first ``num_bits`` masks of each of N packed
    prediction maps (N x H x W int64) against the ground truths' cell pyramids (each level
    N x h x w, or 1 x h x w for one ground truth, bool)."""
    ratios = []
    for pred_level, gt_level in zip(cell_pyramid(edges(pred_words)), gt_levels, strict=True):
        both = bit_counts(pred_level & -gt_level.to(torch.int64))[:, :num_bits]
        # PySODMetrics sums the ground-truth cells in float16 (its edge maps are float16), then
        # adds 1 in float16: reproduced, as counts above 2048 round (above 65504: inf, ratio 0).
        gt_cells = gt_level.sum(dim=(1, 2)).to(torch.float16) + 1
        ratios.append((both.to(torch.float64) + 1) / gt_cells.to(torch.float64)[:, None])
    y = torch.stack(ratios, dim=-1)  # N x num_bits x 10
    step = 1 / (NUM_SCALES - 1)
    return (step * (y[..., 1:] + y[..., :-1]) / 2.0).sum(dim=-1)


def gt_pyramid(gt: torch.Tensor) -> list[torch.Tensor]:
    """The cell pyramid (bool levels, B x h x w) of the edges of B x H x W bool masks."""
    return [level != 0 for level in cell_pyramid(edges(gt.to(torch.int64)))]


def _pixel_mask(batch: PreparedBatch, level_positive: torch.Tensor) -> torch.Tensor:
    """B x H x W int64 (0 / 1): the pixels whose 8-bit level is positive in ``level_positive``
    (B x 256 bool), as one-mask packed words."""
    flat = batch.pred_uint8.reshape(batch.batch_size, -1).to(torch.int64)
    return level_positive.to(torch.int64).gather(1, flat).view(batch.gt.shape)


class MSIoUAccumulator(Accumulator):
    """``maxMSIoU``, ``meanMSIoU``, ``adpMSIoU``, ``binMSIoU`` (see the module docstring).

    The dynamic curve is computed for the thresholds at which the binary map changes (the
    levels present in ``trunc(pred * 255)``, plus one, and 0 and 256), their masks packed as the
    bits of int64 words (:data:`WORD_BITS` masks per bitwise operation); the others repeat the
    previous threshold's value, as in PySODMetrics. Still the costliest family (about 257 edge
    maps and pyramids per image, 62 at a time).
    """

    HIGHER_IS_BETTER: ClassVar[dict[str, bool]] = {
        "maxMSIoU": True,
        "meanMSIoU": True,
        "adpMSIoU": True,
        "binMSIoU": True,
    }

    def _init_state(self) -> None:
        self.curve_sum = self._zeros(NUM_MSIOU_THRESHOLDS)
        self.adaptive_sum = self._zeros()
        self.binary_sum = self._zeros()
        self.count = self._zeros()

    def state_arrays(self) -> list[np.ndarray]:
        return [self.curve_sum, self.adaptive_sum, self.binary_sum, self.count]

    def update(self, batch: PreparedBatch) -> None:
        gt_levels = gt_pyramid(batch.gt)
        adaptive = _pixel_mask(batch, batch.adaptive_selection.bool())
        binary = _pixel_mask(batch, batch.lut > 0.5)
        self.adaptive_sum += as_numpy(multiscale_iou(adaptive, 1, gt_levels).sum())
        self.binary_sum += as_numpy(multiscale_iou(binary, 1, gt_levels).sum())
        bins = (batch.lut * 255.0).to(torch.int64).clamp_(0, NUM_THRESHOLDS - 1)  # B x 256
        for i in range(batch.batch_size):
            quantised = bins[i][batch.pred_uint8[i].to(torch.int64)]  # H x W
            levels = [level[i : i + 1] for level in gt_levels]
            self.curve_sum += as_numpy(self._curve(quantised, levels))
        self.count += batch.batch_size

    @staticmethod
    def _curve(quantised: torch.Tensor, gt_levels: list[torch.Tensor]) -> torch.Tensor:
        """The 257-threshold curve (float64) of one image's ``trunc(pred * 255)`` map."""
        present = torch.unique(quantised) + 1
        changes = torch.unique(torch.cat([present, present.new_tensor([0, NUM_THRESHOLDS])]))
        # pack the masks quantised >= t of the thresholds t that change the mask, WORD_BITS per
        # word (one word at a time, to bound the memory): a pixel at level v is positive for
        # the thresholds t <= v, the lowest bits of the word
        levels = torch.arange(NUM_THRESHOLDS, device=quantised.device)[:, None]
        scores = []
        for thresholds in changes.split(WORD_BITS):
            lut = (1 << (thresholds[None, :] <= levels).sum(dim=1)) - 1  # 256 levels
            packed = lut[quantised][None]  # 1 x H x W
            scores.append(multiscale_iou(packed, len(thresholds), gt_levels)[0])
        at_changes = torch.cat(scores)
        # each threshold takes the value of the last change at or below it
        all_thresholds = torch.arange(NUM_MSIOU_THRESHOLDS, device=quantised.device)
        index = torch.searchsorted(changes, all_thresholds, right=True) - 1
        return at_changes[index]

    def curve(self) -> np.ndarray:
        """The dataset-mean dynamic curve (257 values, index ``t``: threshold ``t``); raises
        RuntimeError when no image was added."""
        self._check_not_empty()
        return self.curve_sum / self.count

    def compute(self) -> dict[str, float]:
        self._check_not_empty()
        curve = self.curve_sum / self.count
        return {
            "maxMSIoU": float(curve.max()),
            "meanMSIoU": float(curve.mean()),
            "adpMSIoU": float(self.adaptive_sum / self.count),
            "binMSIoU": float(self.binary_sum / self.count),
        }
