"""Probability maps at each image's original size: single, multi-scale and sliding-window modes.

Every mode takes 8-bit RGB images (as read by :func:`utils.io.images.read_image`), or HxWxC
8-bit images of the bands an ``imagery`` section selects and scales (:mod:`utils.imagery`, read by
:func:`utils.io.rasters.read_model_input`), and returns float32 HxW saliency probabilities on the
predictor's device, computed as follows.

- Input: resized with ``cv2.INTER_LINEAR`` (the validation pipeline's resize) and normalised with
  the same float32 operations as the datasets, so an image at the validation size gets exactly
  the validation input. With ``normalisation="official"`` each model input is first scaled by
  ``255 / max`` (:func:`utils.preprocessing.official_gain`): the max of the resized image, in
  sliding mode of the whole (scaled) image, so that all its windows share one gain.
- ``single``: one forward at ``size`` x ``size``; ``multiscale``: one per scale, at
  ``round(size * scale)`` squared; ``sliding``: the image (optionally resized by ``scale``) is
  cut into ``window`` squares every ``stride`` pixels, the last ones shifted inside the border,
  predicted in batches and blended with normalised weights (see :mod:`utils.inference.windows`).
- Output: each prediction is resized bilinearly to the original size (antialiased when
  shrinking) and the predictions are averaged there.
- ``flip``: the mirrored image goes through the same pipeline and its result is mirrored back
  before averaging, so a left-right symmetric image gets an exactly symmetric map.
- ``post_norm``: the official test script's per-image min-max normalisation of the final map.
- :meth:`Predictor.fuse`: the same computation with BatchNorm folded into the convolutions (and
  the ReLUs fused into them on the CPU), channels-last; faster, within 1e-4, not bit-identical.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from utils.imagery import Imagery
from utils.inference.fusion import fuse_conv_bn
from utils.inference.sliding import slide_rows
from utils.inference.windows import window_grid
from utils.io.rasters import read_model_input
from utils.preprocessing import (
    DEFAULT_INPUT_SIZE,
    channel_mean_std,
    check_normalisation,
    official_gain,
)
from utils.runtime.precision import autocast, check_amp, memory_format

PREDICTION_MODES = ("single", "multiscale", "sliding")
MULTISCALE_SCALES = (0.75, 1.0, 1.25)
"""The default scales of ``multiscale`` mode (factors of ``size``)."""


@dataclass(frozen=True)
class PredictOptions:
    """How to predict; see the module docstring. ``stride`` defaults to ``window`` less the
    ``overlap`` fraction of it; ``batch_size`` counts images (single, multiscale) or windows."""

    mode: str = "single"
    size: int = DEFAULT_INPUT_SIZE
    scales: tuple[float, ...] = MULTISCALE_SCALES
    flip: bool = False
    window: int = 512
    overlap: float = 0.25
    stride: int | None = None
    scale: float = 1.0
    blend: str = "gaussian"
    batch_size: int = 8
    post_norm: bool = False

    def __post_init__(self) -> None:
        if self.mode not in PREDICTION_MODES:
            raise ValueError(f"unknown mode {self.mode!r}; valid: {', '.join(PREDICTION_MODES)}")
        for name in ("size", "window", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not self.scales or min(self.scales) <= 0 or self.scale <= 0:
            raise ValueError(f"scales must be positive, got {self.scales} and {self.scale}")
        if not 0 <= self.overlap < 1:
            raise ValueError(f"overlap must be in [0, 1), got {self.overlap}")
        if self.stride is not None and not 1 <= self.stride <= self.window:
            raise ValueError(
                f"stride must be between 1 and the window ({self.window}), got {self.stride}: a "
                "larger stride would leave pixels unpredicted"
            )

    @property
    def window_stride(self) -> int:
        if self.stride is not None:
            return self.stride
        return max(1, self.window - round(self.window * self.overlap))


def default_batch_size(device: torch.device) -> int:
    """8 on a GPU; 1 on the CPU, where batching does not speed convolutions up and multiplies
    the activation memory (a lite U2Net at 512x512: about 0.45 GiB per window)."""
    return 8 if device.type == "cuda" else 1


def resize_probability(prob: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize (``align_corners=False``) of an HxW map; antialiased when shrinking."""
    if tuple(prob.shape) == tuple(size):
        return prob
    shrink = size[0] < prob.shape[0] or size[1] < prob.shape[1]
    return F.interpolate(
        prob[None, None], size=size, mode="bilinear", align_corners=False, antialias=shrink
    )[0, 0]


def min_max_normalise(prob: torch.Tensor) -> torch.Tensor:
    """``(p - min) / (max - min)``, the official post-normalisation; a constant map is kept."""
    low, high = prob.min(), prob.max()
    return (prob - low) / (high - low) if high > low else prob


ImageInput = np.ndarray | str | os.PathLike
"""An HxWxC uint8 array (RGB, or the bands of the predictor's ``imagery``), or the path of an
image file (read with :func:`utils.io.rasters.read_model_input`)."""


class Predictor:
    """Runs a model (in eval mode, returning Bx1xHxW probabilities) on images; see the module
    docstring.

    ``amp``: ``off``, ``fp16`` (CUDA) or ``bf16`` autocast of the forward (see
    :mod:`utils.runtime.precision`); ``channels_last``: the model and its inputs in channels-last
    memory format; ``normalisation``: as the model was trained (see
    :data:`utils.preprocessing.NORMALISATIONS`); ``imagery``: how image files are read, as the
    model was trained (:mod:`utils.imagery`; None: 8-bit RGB). :meth:`fuse` makes it faster on the
    CPU (``fused`` says whether it was called). Raises ValueError when the model's input channels
    are not those the images are read with (3, or one per band of ``imagery``).
    """

    def __init__(
        self,
        model: nn.Module,
        options: PredictOptions | None = None,
        device: torch.device | str = "cpu",
        amp: str = "off",
        channels_last: bool = False,
        normalisation: str = "imagenet",
        imagery: Imagery | None = None,
    ) -> None:
        self.device = torch.device(device)
        self.imagery = imagery
        self.channels = 3 if imagery is None else imagery.channels
        _check_channels(model, self.channels)
        check_amp(amp, self.device)
        check_normalisation(normalisation)
        self.normalisation = normalisation
        self.fused = False
        self.options = options or PredictOptions()
        self.amp = amp
        self.memory_format = memory_format(channels_last)
        self.model = model.eval().to(self.device, memory_format=self.memory_format)
        mean, inv_std = channel_mean_std(self.channels)
        self._mean = torch.from_numpy(mean).to(self.device)
        self._inv_std = torch.from_numpy(inv_std).to(self.device)

    def fuse(self) -> Predictor:
        """Run a copy of the model with its Conv-BatchNorm(-ReLU) sequences fused
        (:func:`utils.inference.fusion.fuse_conv_bn`), in channels-last format; returns this
        predictor.

        Faster on the CPU (see the README's speed table); probabilities within 1e-4 of the
        unfused model's (2e-5 measured for U2NETP at 320x320), not bit-identical."""
        self.memory_format = memory_format(True)
        fused = fuse_conv_bn(copy.deepcopy(self.model))
        self.model = fused.to(self.device, memory_format=self.memory_format)
        self.fused = True
        return self

    @torch.inference_mode()
    def forward(self, batch: torch.Tensor, gains: torch.Tensor | None = None) -> torch.Tensor:
        """Probabilities (BxHxW float32) for a BxHxWxC uint8 batch on the device; ``gains``
        (B float32, official normalisation) scale each input first."""
        x = batch.permute(0, 3, 1, 2).float().contiguous(memory_format=self.memory_format)
        if gains is not None:
            x *= gains.view(-1, 1, 1, 1)
        x -= self._mean
        x *= self._inv_std
        with autocast(self.device, self.amp):
            prob = self.model(x)
        return prob[:, 0].float()

    def predict(self, image: ImageInput) -> np.ndarray:
        """The HxW float32 probability map (0..1) of one image, at the image's size.

        ``image``: an HxWxC uint8 array (RGB, or the bands of ``imagery``) or an image file's
        path. Raises ``OSError`` naming the file when it cannot be read, ValueError for an empty
        array or one of another shape or dtype, TypeError for anything else (e.g. a list: use
        :meth:`predict_batch`).
        """
        return self.predict_batch([image])[0]

    def predict_batch(self, images: Sequence[ImageInput]) -> list[np.ndarray]:
        """:meth:`predict` for each of ``images`` (batched as the options say)."""
        arrays = [self._as_input(image) for image in images]
        return [prob.cpu().numpy() for prob in self.predict_tensors(arrays)]

    def predict_tensors(
        self, images: Sequence[np.ndarray], on_windows: Callable[[int], None] | None = None
    ) -> list[torch.Tensor]:
        """The HxW float32 probability map of each HxWxC uint8 image, on the device.

        ``on_windows(n)`` is called after each batch of ``n`` windows in sliding mode.
        """
        opts = self.options
        if opts.mode == "sliding" and opts.scale == 1:  # flip averaged row by row, inside
            probs = [self._slide(image, on_windows, opts.flip) for image in images]
        elif opts.mode == "sliding":  # flip averaged after the resize: exactly symmetric maps
            slide = partial(self._slide, on_windows=on_windows, flip=False)
            probs = self._average([self._flip_averaged(images, lambda v: [slide(x) for x in v])])
        else:
            scales = opts.scales if opts.mode == "multiscale" else (1.0,)
            per_scale = [
                self._flip_averaged(images, lambda v, s=s: self._resized(v, round(opts.size * s)))
                for s in scales
            ]
            probs = self._average(per_scale)
        return [min_max_normalise(p) for p in probs] if opts.post_norm else probs

    def count_windows(self, height: int, width: int) -> int:
        """How many windows sliding mode runs on an image of this size (flip included)."""
        opts = self.options
        h, w = self._scaled_size(height, width)
        return len(window_grid(h, w, opts.window, opts.window_stride)[1]) * (1 + opts.flip)

    def _scaled_size(self, height: int, width: int) -> tuple[int, int]:
        """The (height, width) sliding mode cuts windows from (``scale`` times the image)."""
        scale = self.options.scale
        return max(1, round(height * scale)), max(1, round(width * scale))

    # -- helpers ------------------------------------------------------------------------------

    def _flip_averaged(
        self,
        images: Sequence[np.ndarray],
        predict: Callable[[Sequence[np.ndarray]], list[torch.Tensor]],
    ) -> list[torch.Tensor]:
        """``predict(images)``, or with flip the sum of it and of the mirrored images'
        predictions mirrored back (one call for both, so they share batches); the sum is
        divided by the number of terms in :meth:`_average`."""
        if not self.options.flip:
            return predict(images)
        probs = predict([*images, *(_mirrored(image) for image in images)])
        n = len(images)
        return [probs[i] + probs[n + i].flip(-1) for i in range(n)]

    def _average(self, per_scale: list[list[torch.Tensor]]) -> list[torch.Tensor]:
        """Average the per-scale (flip-summed) maps of each image."""
        terms = len(per_scale) * (1 + self.options.flip)
        totals = per_scale[0]
        for maps in per_scale[1:]:
            totals = [total + p for total, p in zip(totals, maps, strict=True)]
        return [total / terms for total in totals] if terms > 1 else totals

    def _resized(self, images: Sequence[np.ndarray], side: int) -> list[torch.Tensor]:
        """Predict each image resized to ``side`` x ``side``; maps at the original sizes."""
        side = max(1, side)
        probs: list[torch.Tensor] = []
        for start in range(0, len(images), self.options.batch_size):
            chunk = images[start : start + self.options.batch_size]
            batch = np.stack([_resized(image, side, side) for image in chunk])
            out = self.forward(
                torch.from_numpy(batch).to(self.device, non_blocking=True), self._gains(batch)
            )
            probs += [
                resize_probability(p, image.shape[:2]) for p, image in zip(out, chunk, strict=True)
            ]
        return probs

    def _slide(
        self, image: np.ndarray, on_windows: Callable[[int], None] | None, flip: bool
    ) -> torch.Tensor:
        """Blended sliding-window prediction of one image (averaged with its mirror's with
        ``flip``), at its original size: :func:`utils.inference.sliding.slide_rows` over the
        image, resized by ``scale``."""
        height, width = image.shape[:2]
        scaled = image
        if self.options.scale != 1:
            scaled = _resized(image, *self._scaled_size(height, width))
        prob = torch.empty(scaled.shape[:2], device=self.device)

        def keep(start: int, rows: torch.Tensor) -> None:
            prob[start : start + rows.shape[0]] = rows

        slide_rows(self, lambda start, count: scaled[start : start + count], prob.shape, keep,
                   on_windows, flip)  # fmt: skip
        return resize_probability(prob, (height, width))

    def _gains(self, images: np.ndarray) -> torch.Tensor | None:
        """The official-normalisation gain of each of the BxHxWxC ``images`` (None with the
        ImageNet normalisation), float32 on the device."""
        if self.normalisation != "official":
            return None
        peaks = images.reshape(len(images), -1).max(axis=1)
        gains = [official_gain(float(peak)) for peak in peaks]
        return torch.tensor(gains, dtype=torch.float32, device=self.device)

    def _as_input(self, image: ImageInput) -> np.ndarray:
        """``image`` as an HxWxC uint8 array (a path is read with ``read_model_input``)."""
        if isinstance(image, str | os.PathLike):
            return read_model_input(image, self.imagery)
        expected = "RGB" if self.imagery is None else f"{self.channels}-band"
        if not isinstance(image, np.ndarray):
            raise TypeError(
                f"expected an HxWx{self.channels} uint8 {expected} array or an image path, got "
                f"{type(image).__name__} (predict_batch takes a list of them)"
            )
        if (
            image.dtype != np.uint8
            or image.ndim != 3
            or image.shape[2] != self.channels
            or not image.size
        ):
            raise ValueError(
                f"expected an HxWx{self.channels} uint8 {expected} image, got a {image.dtype} "
                f"array of shape {image.shape}"
            )
        return image


def _resized(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """The HxWxC ``image`` resized to ``height`` x ``width`` (``cv2.INTER_LINEAR``), HxWxC also
    for one channel (OpenCV returns 2-D arrays for those)."""
    out = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
    return out.reshape(height, width, image.shape[2])


def _mirrored(image: np.ndarray) -> np.ndarray:
    """The HxWxC ``image`` mirrored left-right (``cv2.flip``), HxWxC also for one channel."""
    return cv2.flip(image, 1).reshape(image.shape)


def _check_channels(model: nn.Module, channels: int) -> None:
    """ValueError unless the first convolution of ``model`` takes ``channels`` inputs."""
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if first is None or first.in_channels == channels:
        return
    how = (
        "as RGB: no imagery section says which bands to read"
        if channels == 3
        else f"with {channels} bands (the imagery section)"
    )
    raise ValueError(
        f"the model takes {first.in_channels} input channels but images are read {how}; give "
        "the config it was trained with (inference.py -c), whose imagery section selects "
        f"{first.in_channels} bands"
    )
