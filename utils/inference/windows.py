"""Sliding-window geometry: window positions that stay inside the image, and blending weights."""

from __future__ import annotations

import math

import torch

BLENDS = ("gaussian", "uniform")
GAUSSIAN_SIGMA = 1 / 8  # of the window side, as in nnU-Net's sliding-window inference


def window_starts(length: int, window: int, stride: int) -> list[int]:
    """Start offsets of windows of ``window`` pixels every ``stride`` pixels along ``length``.

    The last window is shifted back to end at the border (``length - window``) instead of
    hanging over it, so every window lies inside the image and every pixel is covered. A
    ``length`` no larger than ``window`` gives the single start 0 (the caller then uses a window
    of ``length`` pixels).
    """
    if window < 1 or stride < 1:
        raise ValueError(f"window and stride must be positive, got {window} and {stride}")
    if stride > window:
        raise ValueError(
            f"stride {stride} is larger than the window {window}: pixels would be missed"
        )
    if length <= window:
        return [0]
    count = math.ceil((length - window) / stride) + 1
    return [min(i * stride, length - window) for i in range(count)]


def window_grid(
    height: int, width: int, window: int, stride: int
) -> tuple[tuple[int, int], list[tuple[int, int]]]:
    """The window size ``(h, w)`` (``window`` capped by the image) and the ``(y, x)`` corners of
    all windows, row by row."""
    size = (min(window, height), min(window, width))
    ys = window_starts(height, size[0], min(stride, size[0]))
    xs = window_starts(width, size[1], min(stride, size[1]))
    return size, [(y, x) for y in ys for x in xs]


def blend_weights(
    size: tuple[int, int], blend: str = "gaussian", device: torch.device | str = "cpu"
) -> torch.Tensor:
    """An ``h x w`` float32 weight map with maximum 1 for blending overlapping windows.

    ``gaussian``: a separable Gaussian centred on the window with sigma = ``GAUSSIAN_SIGMA``
    times each side, so a pixel's prediction counts more the further it is from the window's
    border (where the model sees the least context); every weight stays positive, so a pixel
    covered by one window keeps that window's prediction. ``uniform``: all ones (plain averaging).
    Accumulating ``weight * prediction`` and ``weight`` and dividing normalises the weights at
    every pixel, so overlaps blend without seams.
    """
    if blend not in BLENDS:
        raise ValueError(f"unknown blend {blend!r}; valid: {', '.join(BLENDS)}")
    if blend == "uniform":
        return torch.ones(size, device=device)
    axes = []
    for side in size:
        centre = (side - 1) / 2
        offsets = torch.arange(side, dtype=torch.float64) - centre
        axes.append(torch.exp(-0.5 * (offsets / (GAUSSIAN_SIGMA * side)) ** 2))
    weights = axes[0][:, None] * axes[1][None, :]
    return (weights / weights.max()).to(device=device, dtype=torch.float32)
