"""Shared preparation of 8-bit maps and masks, identical to PySODMetrics' ``prepare_data``."""

from __future__ import annotations

from functools import cached_property

import numpy as np
import torch
import torch.nn.functional as F

NUM_LEVELS = 256
"""Number of levels of an 8-bit map."""

NUM_THRESHOLDS = 256
"""Number of thresholds of the dynamic curves (F-measure, precision/recall, E-measure)."""

EPS = 2.0**-52
"""PySODMetrics' ``EPS = np.spacing(1)`` (``py_sod_metrics/utils.py``; MATLAB's ``eps``, equal to
``np.finfo(np.float64).eps``): the guard added to the denominators of the S-measure, E-measure
and weighted F-measure."""


# PySODMetrics' adaptive threshold ``min(2 * np.mean(pred), 1)`` depends on the float64 rounding
# of ``np.mean``. Whenever a level present in the image lies this close to twice the mean, the
# mean is recomputed with numpy (same array layout, hence the same summation order).
TIE_TOLERANCE = 1e-9

ArrayLike = np.ndarray | torch.Tensor


# --------------------------------------------------------------------------------------------
# Input conversion
# --------------------------------------------------------------------------------------------


def divide(x: torch.Tensor, divisor: float | torch.Tensor) -> torch.Tensor:
    """IEEE division ``x / divisor``, correctly rounded on every device.

    On CUDA, dividing by a Python scalar is computed as a multiplication by the reciprocal, which
    can differ from numpy by one ulp; dividing by a tensor on the same device does not.
    """
    if not isinstance(divisor, torch.Tensor):
        divisor = torch.tensor(divisor, dtype=x.dtype, device=x.device)
    return x / divisor


def prob_to_uint8(prob: torch.Tensor) -> torch.Tensor:
    """Quantise probabilities in ``[0, 1]`` to an 8-bit map, the rule our saved PNGs use.

    ``q = clamp(round(float64(p) * 255), 0, 255)`` where ``round`` is ``torch.round`` (round half
    to even, like ``np.rint``). Values outside ``[0, 1]`` are clamped; inputs must be finite
    (apply the sigmoid to logits first). Returns a ``torch.uint8`` tensor of the same shape.
    """
    scaled = prob.to(torch.float64, copy=True)
    return scaled.mul_(255.0).round_().clamp_(0.0, 255.0).to(torch.uint8)


def as_tensor(x: ArrayLike, device: torch.device) -> torch.Tensor:
    """Tensor view of ``x``; numpy arrays go to ``device``, tensors stay where they are."""
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(x)).to(device)
    raise TypeError(f"expected a numpy array or a torch tensor, got {type(x).__name__}")


def as_bhw(x: torch.Tensor, what: str) -> torch.Tensor:
    """Reshape HxW, BxHxW or Bx1xHxW to BxHxW."""
    if x.dim() == 2:
        return x.unsqueeze(0)
    if x.dim() == 3:
        return x
    if x.dim() == 4 and x.shape[1] == 1:
        return x[:, 0]
    raise ValueError(f"{what} must be HxW, BxHxW or Bx1xHxW, got shape {tuple(x.shape)}")


def pred_to_uint8(pred: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """BxHxW prediction (uint8 map or float probability) to a uint8 map of the given size."""
    if pred.dtype == torch.uint8:
        if tuple(pred.shape[-2:]) == size:
            return pred
        resized = F.interpolate(
            pred.to(torch.float64).unsqueeze(1), size=size, mode="bilinear", align_corners=False
        )[:, 0]
        return torch.round(resized).clamp_(0.0, 255.0).to(torch.uint8)
    if pred.is_floating_point():
        if tuple(pred.shape[-2:]) != size:
            pred = F.interpolate(
                pred.to(torch.float64).unsqueeze(1), size=size, mode="bilinear", align_corners=False
            )[:, 0]
        return prob_to_uint8(pred)
    raise TypeError(f"prediction must be uint8 or floating point, got {pred.dtype}")


def gt_to_mask(gt: torch.Tensor) -> torch.Tensor:
    """BxHxW ground truth (uint8 mask, bool mask or float mask in [0, 1]) to the bool mask."""
    if gt.dtype == torch.uint8:
        return gt > 128
    if gt.dtype == torch.bool:
        return gt
    if gt.is_floating_point():
        return prob_to_uint8(gt) > 128
    raise TypeError(f"ground truth must be uint8, bool or floating point, got {gt.dtype}")


class PreparedBatch:
    """A batch of 8-bit maps and masks, prepared once and shared by all accumulators.

    Built from ``pred_uint8`` (BxHxW uint8) and ``gt`` (BxHxW bool, the ``gt_uint8 > 128`` of
    PySODMetrics); raises TypeError for other dtypes and ValueError for other shapes or an empty
    batch. Everything else is a property computed on first access, on their device, and cached:

    * ``level_counts``: Bx2x256 int64, pixels of each ground-truth class at each 8-bit level;
    * ``lut``: Bx256 float64, the prepared value of each 8-bit level (PySODMetrics' stretch);
    * ``pred``: BxHxW float64, the prepared map itself (``lut[pred_uint8]``);
    * ``mean``: B float64, the mean of ``pred`` rounded as ``np.mean`` where it matters;
    * ``adaptive_selection`` / ``adaptive_counts``: the levels at or above each image's adaptive
      threshold ``min(2 * mean, 1)`` and the pixels they hold, per ground-truth class;
    * ``cumulative_counts``: Bx2x256 int64, the pixels at or above each of the 256 thresholds of
      the dynamic curves, per ground-truth class.

    Metrics that only depend on the value of each pixel (MAE, F-measure, E-measure, binary) work
    on these 256-level histograms instead of the pixels; the others (S-measure, weighted F) also
    use ``pred`` or the masks.
    """

    def __init__(self, pred_uint8: torch.Tensor, gt: torch.Tensor) -> None:
        if pred_uint8.dtype != torch.uint8 or gt.dtype != torch.bool:
            raise TypeError("PreparedBatch expects a uint8 prediction and a bool ground truth")
        if pred_uint8.dim() != 3 or pred_uint8.shape != gt.shape:
            raise ValueError(
                f"expected BxHxW tensors of equal shape, got {tuple(pred_uint8.shape)} and "
                f"{tuple(gt.shape)}"
            )
        if gt.numel() == 0:
            raise ValueError(f"empty images or batch: shape {tuple(gt.shape)}")
        self.pred_uint8 = pred_uint8
        self.gt = gt
        self.batch_size = int(gt.shape[0])
        self.num_pixels = int(gt.shape[1] * gt.shape[2])
        self.device = gt.device

    @cached_property
    def level_counts(self) -> torch.Tensor:
        """Bx2x256 int64: background (``[:, 0]``) and foreground (``[:, 1]``) pixels at each
        8-bit level."""
        # One bincount over (image, gt, level); int32 halves the memory traffic of the index.
        index = self.gt.to(torch.int32) * NUM_LEVELS
        index += self.pred_uint8
        offsets = torch.arange(self.batch_size, dtype=torch.int32, device=self.device)
        index += (offsets * (2 * NUM_LEVELS)).view(-1, 1, 1)
        counts = torch.bincount(index.flatten(), minlength=self.batch_size * 2 * NUM_LEVELS)
        return counts.view(self.batch_size, 2, NUM_LEVELS)

    @cached_property
    def gt_count(self) -> torch.Tensor:
        """Foreground pixels per image (int64, B)."""
        return self.level_counts[:, 1].sum(dim=1)

    @cached_property
    def lut(self) -> torch.Tensor:
        """Bx256 float64: the value of each 8-bit level in PySODMetrics' prepared map,
        ``p = level / 255`` stretched to ``(p - p.min()) / (p.max() - p.min())`` over the levels
        present in the image (a constant map keeps ``level / 255``). ``lut[b, u]`` is
        bit-identical to numpy's per-pixel computation; levels absent from the image may fall
        outside ``[0, 1]``."""
        present = self.level_counts.sum(dim=1) > 0  # B x 256
        levels = torch.arange(NUM_LEVELS, device=self.device)
        lowest = torch.where(present, levels, NUM_LEVELS).amin(dim=1)
        highest = torch.where(present, levels, -1).amax(dim=1)
        scaled = divide(levels.to(torch.float64), 255.0)  # exactly numpy's pred / 255
        lo, hi = scaled[lowest][:, None], scaled[highest][:, None]
        constant = hi == lo
        # For constant maps (p - 0) / 1 == p exactly, so one expression covers both cases.
        lo = torch.where(constant, 0.0, lo)
        span = torch.where(constant, 1.0, hi - lo)
        return divide(scaled[None, :] - lo, span)

    @cached_property
    def mean(self) -> torch.Tensor:
        """Per-image mean of ``pred`` (B float64), rounded as ``np.mean`` where it matters."""
        counts = self.level_counts.sum(dim=1)  # B x 256
        lut = self.lut
        mean = divide((counts.to(torch.float64) * lut).sum(dim=1), float(self.num_pixels))
        # The rounding only matters (for the adaptive thresholds) when a level present in the
        # image is (nearly) equal to 2 * mean; then the mean is recomputed exactly as
        # PySODMetrics does. A zero mean (all-zero map) is exact in any summation order.
        near = ((lut - 2.0 * mean[:, None]).abs() <= TIE_TOLERANCE) & (counts > 0)
        for i in torch.nonzero(near.any(dim=1) & (mean > 0)).flatten().tolist():
            mean[i] = float(np.mean(self.pred_image(i).cpu().numpy()))
        return mean

    @cached_property
    def adaptive_selection(self) -> torch.Tensor:
        """Bx256 int64, 1 for the 8-bit levels at or above the image's adaptive threshold.

        The threshold of PySODMetrics' adaptive F- and E-measure is ``min(2 * mean(pred), 1)``
        (see :attr:`mean` for its rounding); binarising ``pred >= threshold`` selects whole
        levels, those with ``lut >= threshold``.
        """
        threshold = (2.0 * self.mean).clamp(max=1.0)
        return (self.lut >= threshold[:, None]).to(torch.int64)

    @cached_property
    def adaptive_counts(self) -> torch.Tensor:
        """Bx2 int64: background (``[:, 0]``) and foreground (``[:, 1]``) pixels that the adaptive
        threshold binarises as positive (see :attr:`adaptive_selection`)."""
        return (self.level_counts * self.adaptive_selection[:, None, :]).sum(dim=2)

    @cached_property
    def cumulative_counts(self) -> torch.Tensor:
        """Bx2x256 int64: ``[:, g, i]`` is the number of pixels of ground-truth class ``g``
        (0: background, 1: foreground) with ``trunc(pred * 255) >= 255 - i``.

        These are the positives of the 256 thresholds of PySODMetrics' dynamic curves, in its
        order (index 0: threshold 255, index 255: threshold 0, every pixel): the histogram of
        ``q = trunc(pred * 255)`` (numpy's ``astype(np.uint8)``), cumulated from bin 255 down.
        """
        counts = self.level_counts
        # Levels outside the image's [min, max] have no pixels; clamp their bins into range.
        bins = (self.lut * 255.0).to(torch.int64).clamp_(0, NUM_THRESHOLDS - 1)
        bins = bins[:, None, :].expand_as(counts)
        hist = torch.zeros_like(counts).scatter_add_(2, bins, counts)
        return hist.flip(-1).cumsum(-1)

    def pred_image(self, index: int) -> torch.Tensor:
        """The float64 prepared map (HxW) of one image."""
        return self.lut[index][self.pred_uint8[index].to(torch.int64)]

    @cached_property
    def pred(self) -> torch.Tensor:
        """BxHxW float64: PySODMetrics' prepared map, ``lut[pred_uint8]`` image by image."""
        flat = self.pred_uint8.reshape(self.batch_size, -1).to(torch.int64)
        return self.lut.gather(1, flat).view(self.pred_uint8.shape)


def prepare_batch(pred_uint8: torch.Tensor, gt_uint8: torch.Tensor) -> PreparedBatch:
    """PySODMetrics' ``prepare_data`` for a batch of BxHxW uint8 maps and uint8 masks."""
    return PreparedBatch(pred_uint8, gt_uint8 > 128)
