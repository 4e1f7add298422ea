"""Shared preparation of 8-bit maps and masks given as torch tensors, identical to PySODMetrics'
``prepare_data`` (:class:`PreparedBatch`), and the conversion of inputs to them."""

from __future__ import annotations

from functools import cached_property

import numpy as np
import torch
import torch.nn.functional as F

from utils.metrics.levels import NUM_LEVELS, LevelStats
from utils.metrics.numpy_batch import NumpyBatch, resize_map

ArrayLike = np.ndarray | torch.Tensor


# --------------------------------------------------------------------------------------------
# Input conversion
# --------------------------------------------------------------------------------------------


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


def pred_to_uint8(pred: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """BxHxW prediction (uint8 map or float probability) to a uint8 map of ``size`` (height,
    width): a uint8 map of another size is resized as PySODEvalToolkit does
    (:func:`~utils.metrics.numpy_batch.resize_map`, on the CPU); a probability map (a model's
    output) is resized bilinearly in float64 (``align_corners=False``), then quantised with
    :func:`prob_to_uint8`."""
    if pred.dtype == torch.uint8:
        if tuple(pred.shape[-2:]) == size:
            return pred
        return torch.from_numpy(resize_map(pred.cpu().numpy(), size)).to(pred.device)
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
    """A batch of 8-bit maps and masks (torch tensors), prepared once and shared by all
    accumulators.

    Built from ``pred_uint8`` (BxHxW uint8) and ``gt`` (BxHxW bool, the ``gt_uint8 > 128`` of
    PySODMetrics); raises TypeError for other dtypes and ValueError for other shapes or an empty
    batch. Everything else is computed on first access and cached:

    * ``stats``: the level histograms (counted on the tensors' device) and what follows from
      them, in numpy (:class:`~utils.metrics.levels.LevelStats`); the same quantities as tensors
      on the batch's device: ``level_counts``, ``gt_count``, ``lut``, ``mean``,
      ``adaptive_selection`` (int64 0/1), ``adaptive_counts``, ``cumulative_counts``;
    * ``pred``: BxHxW float64, the prepared map itself (``lut[pred_uint8]``);
    * :attr:`split_point`, :meth:`quadrant_counts` and :meth:`weighted_f`, the per-pixel
      statistics of the S-measure and the weighted F-measure, as numpy arrays: on the CPU those
      of :class:`~utils.metrics.numpy_batch.NumpyBatch` on the same memory, on a GPU computed
      there.
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
        self._cpu = NumpyBatch(pred_uint8.numpy(), gt.numpy()) if gt.device.type == "cpu" else None

    @cached_property
    def level_counts(self) -> torch.Tensor:
        """Bx2x256 int64: background (``[:, 0]``) and foreground (``[:, 1]``) pixels at each
        8-bit level."""
        if self._cpu is not None:
            return torch.from_numpy(self._cpu.stats.counts)
        # One bincount over (image, gt, level); int32 halves the memory traffic of the index.
        index = self.gt.to(torch.int32) * NUM_LEVELS
        index += self.pred_uint8
        offsets = torch.arange(self.batch_size, dtype=torch.int32, device=self.device)
        index += (offsets * (2 * NUM_LEVELS)).view(-1, 1, 1)
        counts = torch.bincount(index.flatten(), minlength=self.batch_size * 2 * NUM_LEVELS)
        return counts.view(self.batch_size, 2, NUM_LEVELS)

    @cached_property
    def stats(self) -> LevelStats:
        """The level histograms and what follows from them, in numpy."""
        if self._cpu is not None:
            return self._cpu.stats
        return LevelStats(
            self.level_counts.cpu().numpy(),
            self.num_pixels,
            lambda i: float(np.mean(self.pred_image(i).cpu().numpy())),
        )

    def _on_device(self, values: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(values).to(self.device)

    @cached_property
    def gt_count(self) -> torch.Tensor:
        """Foreground pixels per image (int64, B)."""
        return self._on_device(self.stats.gt_count)

    @cached_property
    def lut(self) -> torch.Tensor:
        """Bx256 float64: the prepared value of each 8-bit level (:attr:`LevelStats.lut`)."""
        return self._on_device(self.stats.lut)

    @cached_property
    def mean(self) -> torch.Tensor:
        """Per-image mean of ``pred`` (B float64), rounded as ``np.mean`` where it matters."""
        return self._on_device(self.stats.mean)

    @cached_property
    def adaptive_selection(self) -> torch.Tensor:
        """Bx256 int64, 1 for the 8-bit levels at or above the image's adaptive threshold
        (:attr:`LevelStats.adaptive_selection`)."""
        return self._on_device(self.stats.adaptive_selection.astype(np.int64))

    @cached_property
    def adaptive_counts(self) -> torch.Tensor:
        """Bx2 int64: pixels of each class that the adaptive threshold binarises as positive."""
        return self._on_device(self.stats.adaptive_counts)

    @cached_property
    def cumulative_counts(self) -> torch.Tensor:
        """Bx2x256 int64: pixels of each class at or above each of the 256 thresholds of the
        dynamic curves (:attr:`LevelStats.cumulative_counts`)."""
        return self._on_device(self.stats.cumulative_counts)

    def pred_image(self, index: int) -> torch.Tensor:
        """The float64 prepared map (HxW) of one image."""
        return self.lut[index][self.pred_uint8[index].to(torch.int64)]

    @cached_property
    def pred(self) -> torch.Tensor:
        """BxHxW float64: PySODMetrics' prepared map, ``lut[pred_uint8]`` image by image."""
        flat = self.pred_uint8.reshape(self.batch_size, -1).to(torch.int64)
        return self.lut.gather(1, flat).view(self.pred_uint8.shape)

    @cached_property
    def split_point(self) -> tuple[np.ndarray, np.ndarray]:
        """The S-measure's ``(cy, cx)`` per image (int64, B; see
        :func:`~utils.metrics.numpy_batch.split_point`)."""
        if self._cpu is not None:
            return self._cpu.split_point
        cy, cx = _split_point(self.gt)
        return cy.cpu().numpy(), cx.cpu().numpy()

    def quadrant_counts(self) -> np.ndarray:
        """Bx4x2x256 int64 level histograms of the quadrants at :attr:`split_point`."""
        if self._cpu is not None:
            return self._cpu.quadrant_counts()
        cy, cx = (self._on_device(v) for v in self.split_point)
        return _quadrant_counts(self, cy, cx).cpu().numpy()

    def weighted_f(self) -> np.ndarray:
        """Per-image weighted F-measure (B float64)."""
        if self._cpu is not None:
            return self._cpu.weighted_f()
        from utils.metrics.weighted_f_torch import weighted_fmeasure

        return weighted_fmeasure(self.pred, self.gt).cpu().numpy()


def _split_point(gt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`~utils.metrics.numpy_batch.split_point` on the masks' device (int64 tensors)."""
    _, h, w = gt.shape
    as_bytes = gt.view(torch.uint8)  # summing bytes is faster than summing bools
    row_counts = as_bytes.sum(dim=2, dtype=torch.int32).to(torch.int64)  # B x H
    col_counts = as_bytes.sum(dim=1, dtype=torch.int32).to(torch.int64)  # B x W
    total = row_counts.sum(dim=1).clamp(min=1).to(torch.float64)
    rows = torch.arange(h, device=gt.device)
    cols = torch.arange(w, device=gt.device)
    # Index sums are exact in int64; one correctly rounded division (by a tensor: CUDA divides
    # by a Python scalar as a multiplication by its reciprocal), as numpy's mean.
    mean_row = (row_counts * rows).sum(dim=1).to(torch.float64) / total
    mean_col = (col_counts * cols).sum(dim=1).to(torch.float64) / total
    cy = torch.round(mean_row).to(torch.int64) + 1  # round half to even, like np.round
    cx = torch.round(mean_col).to(torch.int64) + 1
    return cy, cx


def _quadrant_counts(batch: PreparedBatch, cy: torch.Tensor, cx: torch.Tensor) -> torch.Tensor:
    """:func:`~utils.metrics.numpy_batch.quadrant_counts` on the batch's device (int64)."""
    b, h, w = batch.gt.shape
    device = batch.device
    bottom = torch.arange(h, device=device)[None, :] >= cy[:, None]  # B x H
    right = torch.arange(w, device=device)[None, :] >= cx[:, None]  # B x W
    images = torch.arange(b, dtype=torch.int32, device=device)[:, None]
    row_offset = (images * 4 + bottom.to(torch.int32) * 2) * (2 * NUM_LEVELS)
    col_offset = right.to(torch.int32) * (2 * NUM_LEVELS)
    index = batch.pred_uint8.to(torch.int32)  # B x H x W, built in place
    index.add_(batch.gt.view(torch.uint8), alpha=NUM_LEVELS)
    index += row_offset[:, :, None]
    index += col_offset[:, None, :]
    counts = torch.bincount(index.flatten(), minlength=b * 4 * 2 * NUM_LEVELS)
    return counts.view(b, 4, 2, NUM_LEVELS)


def prepare_batch(pred_uint8: torch.Tensor, gt_uint8: torch.Tensor) -> PreparedBatch:
    """PySODMetrics' ``prepare_data`` for a batch of BxHxW uint8 maps and uint8 masks."""
    return PreparedBatch(pred_uint8, gt_uint8 > 128)
