"""Sliding-window prediction in bands of rows: the one implementation of sliding mode, used by
:class:`utils.inference.predictor.Predictor` for images in memory and by
:mod:`utils.inference.streaming` for big rasters read band by band.

The image (``rows(start, count)`` gives its rows) is cut into ``window`` squares every
``stride`` pixels (:func:`utils.inference.windows.window_grid`: the last row and column shifted
inside), one row of windows at a time, in batches of the predictor's ``batch_size``; each
window's probabilities are added to running sums weighted by
:func:`utils.inference.windows.blend_weights`, and rows that no later window touches are
divided by their weight and handed on at once, so that the sums cover at most a window plus a
stride of rows. With ``flip`` the mirrored rows go through the same windows and their map,
mirrored back, is averaged with the direct one. With the official normalisation every window
gets the gain of the whole image's maximum.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Protocol

import numpy as np
import torch

from utils.inference.windows import blend_weights, window_grid
from utils.preprocessing import official_gain

Rows = Callable[[int, int], np.ndarray]
"""``rows(start, count)``: rows ``start .. start + count`` of an image as count x W x C uint8."""


class WindowPredictor(Protocol):
    """What sliding needs of a predictor (:class:`utils.inference.predictor.Predictor`)."""

    options: object
    device: torch.device
    normalisation: str

    def forward(self, batch: torch.Tensor, gains: torch.Tensor | None = None) -> torch.Tensor: ...


def slide_rows(
    predictor: WindowPredictor,
    rows: Rows,
    shape: tuple[int, int],
    emit: Callable[[int, torch.Tensor], None],
    on_windows: Callable[[int], None] | None = None,
    flip: bool = False,
) -> None:
    """Sliding-window probabilities of an image of ``shape`` (height, width) read by ``rows``,
    passed to ``emit(start, probs)`` in consecutive bands (``probs``: rows ``start ..`` of the
    HxW float32 map, on the predictor's device) as soon as no later window adds to them; with
    ``flip``, averaged with the mirrored image's, mirrored back.

    ``on_windows(n)`` is called after each batch of ``n`` windows. Raises ``OSError`` when a
    read fails.
    """
    opts, device = predictor.options, predictor.device
    height, width = shape
    (wh, ww), corners = window_grid(height, width, opts.window, opts.window_stride)
    weight = blend_weights((wh, ww), opts.blend, device)
    gain = _gain(predictor, rows, shape)
    views = (False, True) if flip else (False,)
    totals = {view: torch.zeros((0, width), device=device) for view in views}
    sums = {view: torch.zeros((0, width), device=device) for view in views}
    columns: dict[int, list[int]] = {}  # window row -> its windows' x, in order
    for y, x in corners:
        columns.setdefault(y, []).append(x)
    starts, done = list(columns), 0
    for i, y in enumerate(starts):
        band = torch.from_numpy(rows(y, wh)).to(device)
        grow = y + wh - done - totals[False].shape[0]
        for view in views:
            if grow > 0:
                totals[view] = torch.cat([totals[view], torch.zeros((grow, width), device=device)])
                sums[view] = torch.cat([sums[view], torch.zeros((grow, width), device=device)])
            pixels = band.flip(1) if view else band
            for chunk in _chunks(columns[y], opts.batch_size):
                windows = torch.stack([pixels[:, x : x + ww] for x in chunk])
                probs = predictor.forward(
                    windows, None if gain is None else gain.expand(len(chunk))
                )
                for x, prob in zip(chunk, probs, strict=True):
                    totals[view][y - done : y - done + wh, x : x + ww].addcmul_(prob, weight)
                    sums[view][y - done : y - done + wh, x : x + ww] += weight
                if on_windows:
                    on_windows(len(chunk))
        finished = (starts[i + 1] if i + 1 < len(starts) else height) - done
        emit(done, _blend_rows(totals, sums, finished))
        for view in views:
            totals[view], sums[view] = totals[view][finished:], sums[view][finished:]
        done += finished


def _blend_rows(
    totals: dict[bool, torch.Tensor], sums: dict[bool, torch.Tensor], count: int
) -> torch.Tensor:
    """The first ``count`` rows of the blended map: ``total / weight`` of the image, averaged
    with the mirrored image's mirrored back when there is one."""
    prob = totals[False][:count] / sums[False][:count]
    if True in totals:
        mirrored = totals[True][:count] / sums[True][:count]
        prob = (prob + mirrored.flip(-1)) / 2
    return prob


def _chunks(items: list[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _gain(predictor: WindowPredictor, rows: Rows, shape: tuple[int, int]) -> torch.Tensor | None:
    """The official normalisation's gain of the whole image (its maximum, read band by band),
    as a 1-element float32 tensor on the device; None for the ImageNet normalisation."""
    if predictor.normalisation != "official":
        return None
    step = max(1, predictor.options.window)
    peak = max(int(rows(y, min(step, shape[0] - y)).max()) for y in range(0, shape[0], step))
    return torch.tensor([official_gain(float(peak))], dtype=torch.float32, device=predictor.device)
