"""Weighted F-measure batched in torch, for the GPU (:mod:`utils.metrics.weighted_f` holds the
definition and the CPU computation).

The distance transform is exact: a batched torch transform with integer squared distances, the
square root in float64 and scipy's choice among equally near foreground pixels (the smallest
column, then the smallest row), so ``Et`` matches the reference exactly. What remains are
summation-order differences (~1e-16).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from utils.metrics.levels import EPS
from utils.metrics.weighted_f import WF_BETA, fspecial_gaussian

# Pairs (rows x columns x candidate columns) of one chunk of the brute-force row pass.
BRUTE_FORCE_CHUNK = 1 << 24


# --------------------------------------------------------------------------------------------
# Exact Euclidean distance transform with nearest-foreground indices
# --------------------------------------------------------------------------------------------


def _column_pass(fg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Nearest foreground row of every pixel within its own column (ties: the upper row).

    Works on the transposed images (columns contiguous). Returns, as BxWxH int32 tensors, ``row``
    (garbage where the column has no foreground) and ``height_sq`` (the squared vertical
    distance), and ``valid`` (BxW bool: the column has foreground).
    """
    _, height, _ = fg.shape
    fg_t = fg.transpose(1, 2).contiguous()
    rows = torch.arange(height, dtype=torch.int32, device=fg.device)
    far = 2 * height + 1
    above = torch.where(fg_t, rows, -far).cummax(dim=2).values  # last foreground row <= y
    below = torch.where(fg_t, rows, far).flip(2).cummin(dim=2).values.flip(2)  # first >= y
    up_gap = rows - above
    down_gap = below - rows
    row = torch.where(up_gap <= down_gap, above, below)
    gap = torch.minimum(up_gap, down_gap)
    return row, gap * gap, fg_t.any(dim=2)


def _row_pass_brute_force(height_sq_t: torch.Tensor, valid_t: torch.Tensor) -> torch.Tensor:
    """Nearest column ``argmin_c (x - c)^2 + height_sq[n, c]`` (smallest ``c`` on ties) of every
    ``x`` of every row ``n``, by trying all columns: O(W^2) per row, in chunks of rows.

    ``height_sq_t``: WxN (column-major: ``[c, n]``); ``valid_t``: WxN bool (columns without
    foreground are skipped). Returns NxW int64 column indices (0 in rows without any valid
    column).
    """
    width, num_rows = height_sq_t.shape
    device = height_sq_t.device
    height_sq = height_sq_t.t().to(torch.int64)
    valid = valid_t.t()
    cols = torch.arange(width, device=device)
    offset_sq = (cols.view(width, 1) - cols.view(1, width)).square()  # [x, c]
    # Key d2 * W + c: its minimum is the smallest squared distance, then the smallest column.
    max_sq = int(height_sq.max()) if num_rows else 0
    invalid_key = (max_sq + int(offset_sq.max()) + 1) * width
    base = torch.where(valid, height_sq * width + cols, invalid_key)  # N x W (per column c)
    offset_key = offset_sq * width  # W x W
    chunk = max(1, BRUTE_FORCE_CHUNK // (width * width))
    nearest = torch.empty((num_rows, width), dtype=torch.int64, device=device)
    for start in range(0, num_rows, chunk):
        keys = base[start : start + chunk, None, :] + offset_key  # n x W(x) x W(c)
        nearest[start : start + chunk] = keys.amin(dim=2) % width
    return nearest.masked_fill_(~valid.any(dim=1, keepdim=True), 0)


def foreground_edt(fg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Exact Euclidean distance of every pixel to the nearest ``True`` pixel, and that pixel.

    ``fg``: BxHxW bool. Returns ``distance`` (BxHxW float64, ``sqrt`` of the integer squared
    distance), ``index_y`` and ``index_x`` (BxHxW int64): scipy's
    ``distance_transform_edt(~fg, return_indices=True)`` image by image, including its choice
    among equally near pixels (smallest column, then smallest row). Images without any ``True``
    pixel get distance 0 and index 0 (their score does not use them).

    Separable and batched: a column pass finds the nearest foreground row in each column, a
    row pass the column ``c`` minimising ``(x - c)^2 + dy(c)^2`` over all columns (O(H W^2) per
    image, chunked). Raises ValueError for other than a BxHxW bool tensor.
    """
    if fg.dtype != torch.bool or fg.dim() != 3:
        raise ValueError(f"expected a BxHxW bool tensor, got {fg.dtype} {tuple(fg.shape)}")
    batch, height, width = fg.shape
    row, height_sq, valid = _column_pass(fg)  # B x W x H
    # Row n = b * H + y of the row pass; its columns are those of image b.
    height_sq_t = height_sq.transpose(0, 1).reshape(width, batch * height)
    valid_t = valid.t().view(width, batch, 1).expand(width, batch, height)
    valid_t = valid_t.reshape(width, batch * height)
    index_x = _row_pass_brute_force(height_sq_t, valid_t).view(batch, height, width)
    # Flat index of (b, c, y) in the BxWxH tensors of the column pass.
    image = torch.arange(batch, device=fg.device).view(batch, 1, 1)
    rows = torch.arange(height, device=fg.device).view(1, height, 1)
    flat = (image * width + index_x) * height + rows
    index_y = row.view(-1)[flat].to(torch.int64).clamp_(0, height - 1)
    cols = torch.arange(width, device=fg.device)
    dist_sq = (cols - index_x).square_() + height_sq.view(-1)[flat]
    return _sqrt(dist_sq.to(torch.float64)), index_y, index_x


def _sqrt(x: torch.Tensor) -> torch.Tensor:
    """Correctly rounded square root (IEEE ``sqrt``, as numpy's and CUDA's).

    torch's CPU ``sqrt`` of float64 is not always correctly rounded (in torch 2.13 it is off by
    one ulp for ~0.5% of the integers below 2e6, e.g. ``sqrt(2)``), so on CPU numpy computes it.
    """
    if x.device.type == "cpu":
        return torch.from_numpy(np.sqrt(x.numpy()))
    return x.sqrt()


# --------------------------------------------------------------------------------------------
# Weighted F-measure
# --------------------------------------------------------------------------------------------


def gaussian_kernel(device: torch.device | str = "cpu") -> torch.Tensor:
    """The 7x7 Gaussian of PySODMetrics (:func:`~utils.metrics.weighted_f.fspecial_gaussian`)
    on ``device``."""
    return torch.from_numpy(fspecial_gaussian()).to(device)


def gaussian_filter(image: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Correlate BxHxW float64 images with a size x size kernel (odd size, on the images'
    device, e.g. :func:`gaussian_kernel`), zero padding; returns BxHxW float64."""
    pad = kernel.shape[-1] // 2
    return F.conv2d(image[:, None], kernel[None, None], padding=pad)[:, 0]


def weighted_fmeasure(pred: torch.Tensor, gt: torch.Tensor, beta: float = WF_BETA) -> torch.Tensor:
    """Per-image weighted F-measure (B float64) of prepared maps and boolean masks (BxHxW), as
    :func:`~utils.metrics.weighted_f.weighted_fmeasure_image` image by image.

    ``pred`` is the float64 prepared map (:attr:`PreparedBatch.pred`); images without
    foreground score 0.
    """
    batch, _, width = gt.shape
    gt_f = gt.to(torch.float64)
    error = (pred - gt_f).abs_()
    distance, index_y, index_x = foreground_edt(gt)
    nearest = (index_y * width + index_x).view(batch, -1)
    error_t = error.view(batch, -1).gather(1, nearest).view_as(error)
    smoothed = gaussian_filter(error_t, gaussian_kernel(device=pred.device))
    # MIN_E_EA is EA where gt & (EA < E), E elsewhere: min(EA, E) on the foreground.
    weighted = torch.where(gt, torch.minimum(smoothed, error), error)
    # Ew = MIN_E_EA * B with B = 2 - exp(log(0.5) / 5 * D) on the background. On the foreground
    # D = 0 and the same expression is exactly 1, as B is there.
    weighted *= 2.0 - torch.exp(distance.mul_(math.log(0.5) / 5.0))

    fg_count = gt_f.sum(dim=(1, 2))
    fg_sum = (weighted * gt_f).sum(dim=(1, 2))
    bg_sum = weighted.masked_fill_(gt, 0.0).sum(dim=(1, 2))
    true_pos = fg_count - fg_sum
    recall = 1.0 - fg_sum / fg_count.clamp(min=1.0)
    precision = true_pos / (true_pos + bg_sum + EPS)
    score = (1.0 + beta) * recall * precision / (recall + beta * precision + EPS)
    return torch.where(fg_count > 0, score, 0.0)
