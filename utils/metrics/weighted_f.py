"""Weighted F-measure (Margolin et al., CVPR 2014): the definition, its CPU computation in numpy
and OpenCV (no torch), and :class:`WeightedFAccumulator`.

Per image, as PySODMetrics 1.6.2 ``WeightedFmeasure`` (``beta = 1``), with ``pred`` the prepared
float64 map and ``gt`` the boolean mask:

* ``D, (iy, ix)``: Euclidean distance of every pixel to the nearest foreground pixel, and that
  pixel (the reference's ``distance_transform_edt(gt == 0, return_indices=True)``; foreground
  pixels are at distance 0 of themselves);
* ``E = |pred - gt|`` and ``Et = E[iy, ix]`` (background pixels take the error of their nearest
  foreground pixel);
* ``EA``: ``Et`` filtered by the 7x7 Gaussian of sigma 5 (MATLAB's ``fspecial``), zero padding;
* ``Ew = MIN_E_EA * B`` with ``MIN_E_EA = EA`` where ``gt & (EA < E)``, ``E`` elsewhere, and
  ``B = 2 - exp(log(0.5) / 5 * D)`` on the background, 1 on the foreground;
* ``TPw = #gt - sum(Ew[gt])``, ``FPw = sum(Ew[~gt])``, ``R = 1 - mean(Ew[gt])``,
  ``P = TPw / (TPw + FPw + eps)`` and ``wF = (1 + beta) * R * P / (R + beta * P + eps)`` with
  ``eps = np.spacing(1)`` (:data:`utils.metrics.levels.EPS`).

An image without foreground scores 0 (as the reference). Otherwise no NaN can arise (neither
here nor in the reference): ``Ew <= 1`` on the foreground, so ``R >= 0`` and ``TPw >= 0``, and
both denominators are at least ``eps``. The dataset wF is the mean of the per-image scores.

On the CPU (:func:`weighted_fmeasure_image`) it is computed with less work than the reference,
and with the same result up to float64 summation order (~1e-16); on a GPU,
:mod:`utils.metrics.weighted_f_torch` computes it batched:

* ``D``, the distance of every pixel to the nearest foreground pixel, is OpenCV's exact
  Euclidean transform (``cv2.distanceTransform``, ``DIST_MASK_PRECISE``: the separable
  algorithm of Felzenszwalb and Huttenlocher), whose float32 output is turned back into the
  exact integer squared distance (``rint(d^2)``) and square-rooted in float64, which gives
  ``distance_transform_edt``'s value bit for bit. That recovery is exact below
  :data:`EXACT_DISTANCE` pixels; an image with a pixel farther than that from the foreground
  falls back to ``scipy.ndimage.distance_transform_edt`` (exact, about 3 times slower).
* ``Et``, the error of each pixel's nearest foreground pixel, is only used through ``EA``, the
  7x7 Gaussian of ``Et``, and ``EA`` only on the foreground. So ``Et`` is only needed within 3
  pixels (Chebyshev) of the foreground: on the foreground it is the error itself, and each
  pixel of that band finds its nearest foreground pixel among the offsets up to ``3 sqrt 2``
  away, nearest first and, among equally near pixels, in scipy's order (the smallest column,
  then the smallest row). Elsewhere ``Et`` is left at 0; ``EA`` differs there from the
  reference's, but is not used.
* ``EA`` is OpenCV's separable filter with the two 1-D factors of the Gaussian, zero padding.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import cv2
import numpy as np

from utils.metrics.base import MeanScoreAccumulator
from utils.metrics.levels import EPS

WF_BETA = 1.0
"""``beta`` of the weighted F-measure (PySODMetrics' default: recall and precision equal)."""

GAUSSIAN_SIZE = 7
GAUSSIAN_SIGMA = 5.0

EXACT_DISTANCE = 512
"""Below this distance (pixels), the float32 distances of OpenCV give the exact integer squared
distance back (``rint(d^2)``). OpenCV's square roots are not correctly rounded (single-threaded,
OpenCV 4.x gives a wrong ``rint(d^2)`` from ``d = sqrt(783226) = 885.0006`` on, a relative error
of about 3e-7); below 512 pixels an error up to 9.5e-7 would still round back to the exact
integer. Farther pixels are rare at the sizes of SOD datasets (a 362 x 362 image has none)."""

_BAND = GAUSSIAN_SIZE // 2  # Chebyshev reach of the Gaussian
_REACH = math.isqrt(2 * _BAND * _BAND)  # farthest offset to the nearest foreground of the band


def fspecial_gaussian(size: int = GAUSSIAN_SIZE, sigma: float = GAUSSIAN_SIGMA) -> np.ndarray:
    """MATLAB's ``fspecial('gaussian', size, sigma)``: float64 size x size, summing to 1 (the
    kernel of PySODMetrics' ``matlab_style_gauss2D``)."""
    half = (size - 1) / 2
    coords = np.arange(size, dtype=np.float64) - half
    kernel = np.exp(-(coords[:, None] ** 2 + coords[None, :] ** 2) / (2.0 * sigma * sigma))
    kernel[kernel < np.finfo(np.float64).eps * kernel.max()] = 0.0
    total = kernel.sum()
    if total != 0:
        kernel = kernel / total
    return kernel


# The 1-D factor of the Gaussian: the kernel is the outer product of this vector with itself
# (fspecial zeroes no tap of the 7x7, sigma 5 kernel), up to float64 rounding.
_FACTOR = fspecial_gaussian().sum(axis=1)


def _band_offsets() -> list[tuple[np.ndarray, np.ndarray]]:
    """The offsets ``(dy, dx)`` at which a pixel of the band can find its nearest foreground
    pixel, grouped by squared distance (nearest first), each group in scipy's order among
    equally near pixels (``dx``, then ``dy``): a list of ``(dy, dx)`` int64 array pairs."""
    groups: dict[int, list[tuple[int, int]]] = {}
    for dx in range(-_REACH, _REACH + 1):
        for dy in range(-_REACH, _REACH + 1):
            squared = dx * dx + dy * dy
            if 0 < squared <= 2 * _BAND * _BAND:
                groups.setdefault(squared, []).append((dy, dx))
    ordered = (sorted(groups[squared], key=lambda o: (o[1], o[0])) for squared in sorted(groups))
    return [(np.array([o[0] for o in g]), np.array([o[1] for o in g])) for g in ordered]


_OFFSETS = _band_offsets()
_CHUNK = 1 << 16  # band pixels looked up at once (bounds the memory of the lookups)


def foreground_distance(gt: np.ndarray) -> np.ndarray:
    """Exact Euclidean distance (HxW float64) of every pixel to the nearest ``True`` pixel of
    the HxW bool ``gt`` (which must have one): ``distance_transform_edt(~gt)`` bit for bit."""
    background = np.logical_not(gt).view(np.uint8)
    approx = cv2.distanceTransform(background, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    if float(approx.max()) >= EXACT_DISTANCE:
        from scipy.ndimage import distance_transform_edt

        return distance_transform_edt(background)
    squared = approx.astype(np.float64)
    np.square(squared, out=squared)
    return np.sqrt(np.rint(squared, out=squared), out=squared)


def nearest_foreground_error(gt: np.ndarray, error: np.ndarray) -> np.ndarray:
    """``Et``: ``error`` (HxW float64) at each pixel's nearest foreground pixel, on the
    foreground and within 3 pixels (Chebyshev) of it; 0 elsewhere. ``gt``: HxW bool."""
    width = gt.shape[1]
    kernel = np.ones((2 * _BAND + 1, 2 * _BAND + 1), np.uint8)
    near = cv2.dilate(gt.view(np.uint8), kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    near[gt] = 0
    result = np.where(gt, error, 0.0)
    # Flat positions in the mask padded by _REACH on every side: every offset stays inside.
    stride = width + 2 * _REACH
    padded = np.pad(gt, _REACH).ravel()
    band = np.flatnonzero(near)
    for start in range(0, band.size, _CHUNK):
        pixels = band[start : start + _CHUNK]
        ys, xs = np.divmod(pixels, width)
        position = (ys + _REACH) * stride + xs + _REACH
        nearest = np.empty_like(pixels)  # flat index of the nearest foreground pixel
        todo = np.arange(pixels.size)
        for dy, dx in _OFFSETS:  # nearest distance first: the first hit is the nearest
            hits = padded[position[todo, None] + (dy * stride + dx)]
            found = hits.any(axis=1)
            first = hits[found].argmax(axis=1)
            nearest[todo[found]] = pixels[todo[found]] + (dy * width + dx)[first]
            todo = todo[~found]
            if todo.size == 0:
                break
        result.ravel()[pixels] = error.ravel()[nearest]
    return result


def weighted_fmeasure_image(pred: np.ndarray, gt: np.ndarray, beta: float = WF_BETA) -> float:
    """Weighted F-measure of one image: ``pred`` the HxW float64 prepared map (in [0, 1]),
    ``gt`` the HxW bool mask; 0 for an image without foreground (as PySODMetrics)."""
    if not gt.any():
        return 0.0
    gt = np.ascontiguousarray(gt)
    error = np.abs(pred - gt)
    smoothed = cv2.sepFilter2D(
        nearest_foreground_error(gt, error),
        cv2.CV_64F,
        _FACTOR,
        _FACTOR,
        borderType=cv2.BORDER_CONSTANT,
    )
    # MIN_E_EA is EA where gt & (EA < E), E elsewhere; Ew = MIN_E_EA * B with
    # B = 2 - exp(log(0.5) / 5 * D) (exactly 1 on the foreground, where D = 0).
    weighted = np.where(gt & (smoothed < error), smoothed, error)
    distance = foreground_distance(gt)
    distance *= math.log(0.5) / 5.0
    weighted *= 2.0 - np.exp(distance, out=distance)
    fg_count = float(np.count_nonzero(gt))
    fg_sum = float(weighted[gt].sum())
    bg_sum = float(weighted[~gt].sum())
    true_pos = fg_count - fg_sum
    recall = 1.0 - fg_sum / fg_count
    precision = true_pos / (true_pos + bg_sum + EPS)
    return (1.0 + beta) * recall * precision / (recall + beta * precision + EPS)


class WeightedFAccumulator(MeanScoreAccumulator):
    """Weighted F-measure ``wF`` (``beta = 1``): mean over images of the per-image scores.

    See the module docstring for the definition; images without foreground score 0 and no image
    can score NaN. The state is the sum of the per-image scores and the image count.
    """

    HIGHER_IS_BETTER: ClassVar[dict[str, bool]] = {"wF": True}

    def scores(self, batch: Any) -> Any:
        """Per-image weighted F (B, float64): the batch's ``weighted_f()``."""
        return batch.weighted_f()
