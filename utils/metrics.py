"""Salient-object-detection metrics: MAE and F-measure, batched in torch.

The numbers reproduce PySODMetrics 1.6.2 (``MAE`` and ``Fmeasure``) evaluated image by image on
8-bit maps, but the computation runs batched on the device of the inputs, in float64.

Preparation of one image (identical to PySODMetrics' ``prepare_data``):

* ground truth: ``gt_uint8 > 128``;
* prediction: ``p = pred_uint8 / 255`` and, when ``p.max() != p.min()``, the min-max stretch
  ``(p - p.min()) / (p.max() - p.min())`` (a constant map is left as ``pred_uint8 / 255``).

MAE and F-measure only depend on the value of each pixel, so they are computed from per-image
histograms of the 256 levels (split by ground truth) and the prepared value of each level, which
is bit-identical to numpy's per-pixel value; the 256-threshold curves are therefore exact. Means
are summed in a different order than numpy's, which changes results by ~1e-16, except where it
matters: the adaptive threshold ``2 * mean`` falling (nearly) on a level present in the image;
there the mean is recomputed with ``np.mean`` as PySODMetrics does.

Every metric is a per-image score averaged over images, so the accumulated state is a handful of
sums plus an image count (see :meth:`SODMetrics.state_tensors`); summing the state of several
accumulators (e.g. a DDP all-reduce) gives the same result as one accumulator over all images.
To add a metric family (weighted F, S-measure, E-measure), subclass ``_Accumulator``, register
it in ``SODMetrics.__init__`` and add its names to ``HIGHER_IS_BETTER``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "BETA",
    "HIGHER_IS_BETTER",
    "METRIC_NAMES",
    "NUM_THRESHOLDS",
    "FmeasureAccumulator",
    "MAEAccumulator",
    "PreparedBatch",
    "SODMetrics",
    "prepare_batch",
    "prob_to_uint8",
]

BETA = 0.3
"""Weight ``beta^2`` of the precision in the F-measure (PySODMetrics' ``beta``)."""

NUM_LEVELS = 256
"""Number of levels of an 8-bit map."""

NUM_THRESHOLDS = 256
"""Number of thresholds of the dynamic precision/recall/F curves."""

HIGHER_IS_BETTER: dict[str, bool] = {
    "MAE": False,
    "maxF": True,
    "meanF": True,
    "adpF": True,
}
"""For each metric returned by :meth:`SODMetrics.compute`, whether a larger value is better."""

METRIC_NAMES: tuple[str, ...] = tuple(HIGHER_IS_BETTER)

# PySODMetrics' adaptive threshold ``min(2 * np.mean(pred), 1)`` depends on the float64 rounding
# of ``np.mean``. Whenever a level present in the image lies this close to twice the mean, the
# mean is recomputed with numpy (same array layout, hence the same summation order).
_TIE_TOLERANCE = 1e-9

ArrayLike = np.ndarray | torch.Tensor


# --------------------------------------------------------------------------------------------
# Input conversion
# --------------------------------------------------------------------------------------------


def _divide(x: torch.Tensor, divisor: float | torch.Tensor) -> torch.Tensor:
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


def _as_tensor(x: ArrayLike, device: torch.device) -> torch.Tensor:
    """Tensor view of ``x``; numpy arrays go to ``device``, tensors stay where they are."""
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(x)).to(device)
    raise TypeError(f"expected a numpy array or a torch tensor, got {type(x).__name__}")


def _as_bhw(x: torch.Tensor, what: str) -> torch.Tensor:
    """Reshape HxW, BxHxW or Bx1xHxW to BxHxW."""
    if x.dim() == 2:
        return x.unsqueeze(0)
    if x.dim() == 3:
        return x
    if x.dim() == 4 and x.shape[1] == 1:
        return x[:, 0]
    raise ValueError(f"{what} must be HxW, BxHxW or Bx1xHxW, got shape {tuple(x.shape)}")


def _pred_to_uint8(pred: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
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


def _gt_to_mask(gt: torch.Tensor) -> torch.Tensor:
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

    Everything is derived from ``pred_uint8`` (BxHxW uint8) and ``gt`` (BxHxW bool, the
    ``gt_uint8 > 128`` of PySODMetrics) and computed lazily on first access, on their device:

    * ``pred``: the float64 map of PySODMetrics' ``prepare_data``: ``p = pred_uint8 / 255``,
      stretched per image to ``(p - p.min()) / (p.max() - p.min())`` unless the map is constant;
    * ``lut``: Bx256 float64, the prepared value of each 8-bit level (``pred`` is ``lut[u]``,
      bit-identical to numpy's per-pixel computation);
    * ``level_counts``: Bx2x256 int64, number of background (``[:, 0]``) and foreground
      (``[:, 1]``) pixels at each 8-bit level.

    Metrics that only depend on the value of each pixel (MAE, F-measure) work on the 256-level
    histograms instead of the pixels; the others (S-measure, E-measure, weighted F) use ``pred``.
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
        self._cache: dict[str, torch.Tensor] = {}

    @property
    def level_counts(self) -> torch.Tensor:
        if "level_counts" not in self._cache:
            # One bincount over (image, gt, level); int32 halves the memory traffic of the index.
            index = self.gt.to(torch.int32) * NUM_LEVELS
            index += self.pred_uint8
            offsets = torch.arange(self.batch_size, dtype=torch.int32, device=self.device)
            index += (offsets * (2 * NUM_LEVELS)).view(-1, 1, 1)
            counts = torch.bincount(index.flatten(), minlength=self.batch_size * 2 * NUM_LEVELS)
            self._cache["level_counts"] = counts.view(self.batch_size, 2, NUM_LEVELS)
        return self._cache["level_counts"]

    @property
    def gt_count(self) -> torch.Tensor:
        """Foreground pixels per image (int64, B)."""
        return self.level_counts[:, 1].sum(dim=1)

    @property
    def lut(self) -> torch.Tensor:
        if "lut" not in self._cache:
            present = self.level_counts.sum(dim=1) > 0  # B x 256
            levels = torch.arange(NUM_LEVELS, device=self.device)
            lowest = torch.where(present, levels, NUM_LEVELS).amin(dim=1)
            highest = torch.where(present, levels, -1).amax(dim=1)
            scaled = _divide(levels.to(torch.float64), 255.0)  # exactly numpy's pred / 255
            lo, hi = scaled[lowest][:, None], scaled[highest][:, None]
            constant = hi == lo
            # For constant maps (p - 0) / 1 == p exactly, so one expression covers both cases.
            lo = torch.where(constant, 0.0, lo)
            span = torch.where(constant, 1.0, hi - lo)
            self._cache["lut"] = _divide(scaled[None, :] - lo, span)
        return self._cache["lut"]

    def pred_image(self, index: int) -> torch.Tensor:
        """The float64 prepared map (HxW) of one image."""
        return self.lut[index][self.pred_uint8[index].to(torch.int64)]

    @property
    def pred(self) -> torch.Tensor:
        if "pred" not in self._cache:
            flat = self.pred_uint8.reshape(self.batch_size, -1).to(torch.int64)
            self._cache["pred"] = self.lut.gather(1, flat).view(self.pred_uint8.shape)
        return self._cache["pred"]


def prepare_batch(pred_uint8: torch.Tensor, gt_uint8: torch.Tensor) -> PreparedBatch:
    """PySODMetrics' ``prepare_data`` for a batch of BxHxW uint8 maps and uint8 masks."""
    return PreparedBatch(pred_uint8, gt_uint8 > 128)


# --------------------------------------------------------------------------------------------
# Accumulators: one per metric family, fed the same PreparedBatch.
# --------------------------------------------------------------------------------------------


class _Accumulator:
    """Base class: per-image scores summed into float64 tensors on ``device``.

    A new metric family subclasses this: ``_init_state`` creates the sum tensors (image count
    last, listed by ``state_tensors``), ``update`` adds the per-image scores of a
    :class:`PreparedBatch` and ``compute`` turns the sums into metrics.
    """

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self._init_state()

    def _zeros(self, *shape: int) -> torch.Tensor:
        return torch.zeros(shape, dtype=torch.float64, device=self.device)

    def _init_state(self) -> None:
        raise NotImplementedError

    def reset(self) -> None:
        """Drop all accumulated images (zeroes the state tensors in place)."""
        for tensor in self.state_tensors():
            tensor.zero_()

    def state_tensors(self) -> list[torch.Tensor]:
        """The live state tensors (sums; the image count last); may be all-reduced in place."""
        raise NotImplementedError

    def update(self, batch: PreparedBatch) -> None:
        """Add the per-image scores of a prepared batch."""
        raise NotImplementedError

    def compute(self) -> dict[str, float]:
        """The dataset metrics; raises RuntimeError when no image was added."""
        raise NotImplementedError

    @property
    def num_images(self) -> int:
        """Number of images accumulated so far."""
        return int(self.state_tensors()[-1].item())

    def _check_not_empty(self) -> None:
        if self.num_images == 0:
            raise RuntimeError(f"{type(self).__name__}: no images accumulated, nothing to compute")


class MAEAccumulator(_Accumulator):
    """Mean absolute error: mean over images of ``mean(|pred - gt|)``."""

    def _init_state(self) -> None:
        self.mae_sum = self._zeros()
        self.count = self._zeros()

    def state_tensors(self) -> list[torch.Tensor]:
        return [self.mae_sum, self.count]

    def update(self, batch: PreparedBatch) -> None:
        # |pred - gt| is pred on the background and 1 - pred on the foreground (pred <= 1).
        counts = batch.level_counts.to(torch.float64)
        lut = batch.lut
        error = (counts[:, 0] * lut).sum(dim=1) + (counts[:, 1] * (1.0 - lut)).sum(dim=1)
        per_image = _divide(error, float(batch.num_pixels))
        self.mae_sum += per_image.sum().to(self.device)
        self.count += batch.batch_size

    def compute(self) -> dict[str, float]:
        self._check_not_empty()
        return {"MAE": (self.mae_sum / self.count).item()}


class FmeasureAccumulator(_Accumulator):
    """F-measure (``beta^2 = 0.3``): adaptive, and the 256-threshold dynamic curves.

    Per image, as PySODMetrics' ``Fmeasure``:

    * adaptive F: binarise with ``pred >= min(2 * mean(pred), 1)``; F is 0 when the binary map and
      the ground truth do not intersect;
    * dynamic curves: ``q = trunc(pred * 255)`` (uint8); for every threshold ``t`` the pixels with
      ``q >= t`` are positive. Index ``i`` of a curve is threshold ``t = 255 - i`` (index 0 is the
      strictest threshold 255, index 255 is threshold 0, where every pixel is positive).
      Precision is 0 where nothing is positive, recall uses ``max(#gt, 1)``, and F is 0 where
      precision * recall is 0.

    The dataset curves are the means of the per-image curves; ``maxF`` and ``meanF`` are the
    maximum and the mean of the dataset F curve.
    """

    def _init_state(self) -> None:
        self.adaptive_sum = self._zeros()
        self.precision_sum = self._zeros(NUM_THRESHOLDS)
        self.recall_sum = self._zeros(NUM_THRESHOLDS)
        self.fmeasure_sum = self._zeros(NUM_THRESHOLDS)
        self.count = self._zeros()

    def state_tensors(self) -> list[torch.Tensor]:
        return [
            self.adaptive_sum,
            self.precision_sum,
            self.recall_sum,
            self.fmeasure_sum,
            self.count,
        ]

    @staticmethod
    def _f_beta(precision: torch.Tensor, recall: torch.Tensor) -> torch.Tensor:
        """``(1 + b) * P * R / (b * P + R)``, 0 where ``P * R == 0`` (same operation order)."""
        numerator = (1 + BETA) * precision * recall
        denominator = torch.where(numerator == 0, 1.0, BETA * precision + recall)
        return numerator / denominator

    @staticmethod
    def _image_means(batch: PreparedBatch) -> torch.Tensor:
        """Per-image mean of ``pred``, with the float64 rounding of ``np.mean`` near ties."""
        counts = batch.level_counts.sum(dim=1)  # B x 256
        lut = batch.lut
        mean = _divide((counts.to(torch.float64) * lut).sum(dim=1), float(batch.num_pixels))
        # The rounding of the mean only matters when a level present in the image is (nearly)
        # equal to 2 * mean; then the mean is recomputed exactly as PySODMetrics does. A zero
        # mean (all-zero map) is exact in any summation order.
        near = ((lut - 2.0 * mean[:, None]).abs() <= _TIE_TOLERANCE) & (counts > 0)
        near_tie = near.any(dim=1) & (mean > 0)
        if bool(near_tie.any()):
            mean = mean.clone()
            for i in torch.nonzero(near_tie).flatten().tolist():
                mean[i] = float(np.mean(batch.pred_image(i).cpu().numpy()))
        return mean

    def update(self, batch: PreparedBatch) -> None:
        counts = batch.level_counts  # B x 2 x 256 (background, foreground) per 8-bit level
        lut = batch.lut
        gt_count = batch.gt_count.to(torch.float64).clamp(min=1.0)

        # Adaptive F-measure: the binarisation selects whole 8-bit levels.
        threshold = (2.0 * self._image_means(batch)).clamp(max=1.0)
        selected = (lut >= threshold[:, None]).to(torch.int64)  # B x 256
        intersection = (counts[:, 1] * selected).sum(dim=1).to(torch.float64)
        positives = (counts.sum(dim=1) * selected).sum(dim=1).to(torch.float64)
        precision = intersection / positives.clamp(min=1.0)
        recall = intersection / gt_count
        adaptive = torch.where(intersection == 0, 0.0, self._f_beta(precision, recall))

        # Dynamic curves: histogram of q = trunc(pred * 255) (as numpy's astype(np.uint8)), then
        # cumulative sums from bin 255 down, so that [..., i] counts the pixels with q >= 255 - i.
        # (Levels outside the image's [min, max] have no pixels; clamp their bins into range.)
        bins = (lut * 255.0).to(torch.int64).clamp_(0, NUM_THRESHOLDS - 1)
        bins = bins[:, None, :].expand_as(counts)
        hist = torch.zeros_like(counts).scatter_add_(2, bins, counts)
        cumulative = hist.flip(-1).cumsum(-1)
        true_pos = cumulative[:, 1].to(torch.float64)
        pred_pos = (cumulative[:, 0] + cumulative[:, 1]).clamp(min=1).to(torch.float64)
        precision = true_pos / pred_pos
        recall = true_pos / gt_count[:, None]
        fmeasure = self._f_beta(precision, recall)

        self.adaptive_sum += adaptive.sum().to(self.device)
        self.precision_sum += precision.sum(0).to(self.device)
        self.recall_sum += recall.sum(0).to(self.device)
        self.fmeasure_sum += fmeasure.sum(0).to(self.device)
        self.count += batch.batch_size

    def curves(self) -> dict[str, np.ndarray]:
        """Dataset-mean ``precision``, ``recall`` and ``fmeasure`` curves (index i: threshold
        255 - i); raises RuntimeError when no image was added."""
        self._check_not_empty()
        return {
            "precision": (self.precision_sum / self.count).cpu().numpy(),
            "recall": (self.recall_sum / self.count).cpu().numpy(),
            "fmeasure": (self.fmeasure_sum / self.count).cpu().numpy(),
        }

    def compute(self) -> dict[str, float]:
        self._check_not_empty()
        curve = self.fmeasure_sum / self.count
        return {
            "maxF": curve.max().item(),
            "meanF": curve.mean().item(),
            "adpF": (self.adaptive_sum / self.count).item(),
        }


# --------------------------------------------------------------------------------------------
# Front end
# --------------------------------------------------------------------------------------------


class SODMetrics:
    """MAE, maxF, meanF and adpF over a dataset, matching PySODMetrics 1.6.2.

    ``update(pred, gt)`` accepts a batch in either form (numpy arrays or tensors):

    * 8-bit maps as read from PNG files: ``pred`` uint8 and ``gt`` uint8, HxW or BxHxW (or
      Bx1xHxW); the result equals PySODMetrics ``MAE``/``Fmeasure`` fed the same images;
    * model outputs: ``pred`` float probabilities in [0, 1], Bx1xHxW or BxHxW, quantised with
      :func:`prob_to_uint8` (``clamp(round(p * 255), 0, 255)``, the rule of our saved PNG maps);
      a float ``gt`` in [0, 1] (``mask_uint8 / 255``) is recovered as ``round(gt * 255)``, a bool
      ``gt`` as 0/255. The numbers thus equal those of evaluating the saved PNG files.

    If a prediction's HxW differs from its ground truth's, the prediction is resized to the gt
    size before quantisation/scoring: bilinear, ``align_corners=False``, in float64, applied to
    the probability (float input) or to the 0..255 values of the uint8 map (then rounded half to
    even and clamped to uint8). ``pred`` and ``gt`` may also be equal-length lists of single
    images (HxW) of different sizes.

    Computation runs on the device of the input tensors (numpy inputs go to ``device``); the
    state lives on ``device``.
    """

    HIGHER_IS_BETTER: dict[str, bool] = HIGHER_IS_BETTER
    METRIC_NAMES: tuple[str, ...] = METRIC_NAMES

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.mae = MAEAccumulator(self.device)
        self.fmeasure = FmeasureAccumulator(self.device)
        self._accumulators: tuple[_Accumulator, ...] = (self.mae, self.fmeasure)

    def reset(self) -> None:
        """Drop all accumulated images."""
        for acc in self._accumulators:
            acc.reset()

    def state_tensors(self) -> list[torch.Tensor]:
        """The live float64 state tensors of all accumulators (sums and image counts).

        Summing them across processes in place (e.g. ``dist.all_reduce``) makes :meth:`compute`
        return the metrics over the union of the images.
        """
        return [t for acc in self._accumulators for t in acc.state_tensors()]

    @property
    def num_images(self) -> int:
        """Number of images accumulated so far."""
        return self.mae.num_images

    @torch.no_grad()
    def update(self, pred: Any, gt: Any) -> None:
        """Add a batch of predictions and ground truths (see the class docstring for formats)."""
        if isinstance(pred, Sequence) and not isinstance(pred, str | bytes):
            self._update_list(pred, gt)
            return
        pred_t = _as_bhw(_as_tensor(pred, self.device), "pred")
        gt_t = _as_bhw(_as_tensor(gt, self.device), "gt").to(pred_t.device)
        if pred_t.shape[0] != gt_t.shape[0]:
            raise ValueError(f"batch size mismatch: pred {pred_t.shape[0]}, gt {gt_t.shape[0]}")
        if pred_t.shape[0] == 0:
            return
        mask = _gt_to_mask(gt_t)
        pred_u8 = _pred_to_uint8(pred_t, (int(mask.shape[1]), int(mask.shape[2])))
        self._update_prepared(PreparedBatch(pred_u8, mask))

    def _update_list(self, preds: Sequence[Any], gts: Sequence[Any]) -> None:
        if len(preds) != len(gts):
            raise ValueError(f"got {len(preds)} predictions and {len(gts)} ground truths")
        groups: dict[tuple[Any, ...], tuple[list[torch.Tensor], list[torch.Tensor]]] = {}
        for pred, gt in zip(preds, gts, strict=True):
            pred_t = _as_bhw(_as_tensor(pred, self.device), "pred")
            gt_t = _as_bhw(_as_tensor(gt, self.device), "gt").to(pred_t.device)
            mask = _gt_to_mask(gt_t)
            pred_u8 = _pred_to_uint8(pred_t, (int(mask.shape[1]), int(mask.shape[2])))
            key = (*mask.shape[1:], mask.device)
            groups.setdefault(key, ([], []))
            groups[key][0].append(pred_u8)
            groups[key][1].append(mask)
        for pred_list, mask_list in groups.values():
            self._update_prepared(PreparedBatch(torch.cat(pred_list), torch.cat(mask_list)))

    def _update_prepared(self, batch: PreparedBatch) -> None:
        """Feed a prepared batch to every accumulator (the shared preparation is done once)."""
        for acc in self._accumulators:
            acc.update(batch)

    def compute(self) -> dict[str, float]:
        """``{"MAE", "maxF", "meanF", "adpF"}`` over all images; RuntimeError if there are none."""
        if self.num_images == 0:
            raise RuntimeError("SODMetrics.compute(): no images accumulated (call update() first)")
        results: dict[str, float] = {}
        for acc in self._accumulators:
            results.update(acc.compute())
        return {name: results[name] for name in METRIC_NAMES}

    def curves(self) -> dict[str, np.ndarray]:
        """Dataset-mean ``precision``, ``recall``, ``fmeasure`` curves (256 values each).

        Ordered as PySODMetrics: index ``i`` is threshold ``255 - i`` on the 8-bit stretched map
        (index 0: only pixels in bin 255 are positive; index 255: every pixel is positive).
        """
        if self.num_images == 0:
            raise RuntimeError("SODMetrics.curves(): no images accumulated (call update() first)")
        return self.fmeasure.curves()
