"""Sliding-window geometry: window positions inside the image and the blending weights."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from utils.inference.predictor import PredictOptions
from utils.inference.windows import blend_weights, window_grid, window_starts


@pytest.mark.parametrize(
    ("length", "window", "stride"),
    [(1000, 128, 96), (517, 64, 64), (129, 128, 1), (500, 100, 30), (64, 64, 48), (40, 64, 48)],
)
def test_windows_cover_the_image_and_stay_inside(length, window, stride):
    starts = window_starts(length, min(window, length), min(stride, window, length))
    side = min(window, length)
    assert starts[0] == 0 and starts[-1] == length - side
    assert all(0 < b - a <= stride for a, b in itertools.pairwise(starts))
    covered = np.zeros(length, bool)
    for start in starts:
        covered[start : start + side] = True
    assert covered.all()


def test_window_grid_caps_the_window_at_the_image():
    size, corners = window_grid(50, 300, 128, 96)
    assert size == (50, 128)
    assert corners == [(0, 0), (0, 96), (0, 172)]


def test_stride_larger_than_the_window_is_refused():
    with pytest.raises(ValueError, match="larger than the window"):
        window_starts(100, 10, 11)
    with pytest.raises(ValueError, match="stride must be between"):
        PredictOptions(mode="sliding", window=64, stride=65)


@pytest.mark.parametrize("size", [(128, 128), (37, 90), (1, 5)])
def test_gaussian_weights_are_positive_symmetric_and_peak_at_one(size):
    weights = blend_weights(size)
    assert weights.shape == size and float(weights.max()) == 1.0 and bool((weights > 0).all())
    assert torch.equal(weights, weights.flip(0)) and torch.equal(weights, weights.flip(1))
    assert torch.equal(blend_weights(size, "uniform"), torch.ones(size))
