"""The input convention of U2Seg models, defined once for training, validation and inference.

Images are 8-bit RGB, normalised with the ImageNet mean and standard deviation as
``(x - MEAN_255) * INV_STD_255`` in float32, so inference inputs equal validation inputs bit for
bit. The ``normalisation`` setting (:data:`NORMALISATIONS`) says what comes first: nothing
(``"imagenet"``: ``x / 255``, then mean/std) or a gain of ``255 / max(x)`` (``"official"``: the
official U2Net code divides each image by its own maximum, over all channels, before the
mean/std; ``data_loader.ToTensorLab`` in xuebinqin/U-2-Net). Padding uses the mean colour
(``PAD_COLOUR``), which normalises to about 0. Without another
setting, models see ``DEFAULT_INPUT_SIZE`` x ``DEFAULT_INPUT_SIZE`` inputs (the U2Net recipe).

Inputs of another number of channels (multi-band imagery, :mod:`utils.imagery`) are normalised
channel by channel with :func:`channel_mean_std`: the first three as R, G and B, each further one
with the mean of the three ImageNet means and of the three deviations.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

MEAN_255 = np.array(IMAGENET_MEAN, dtype=np.float32)[:, None, None] * 255
"""3x1x1 float32: the mean in 0..255 units."""
INV_STD_255 = 1 / (np.array(IMAGENET_STD, dtype=np.float32)[:, None, None] * 255)
"""3x1x1 float32: the reciprocal of the standard deviation in 0..255 units."""
PAD_COLOUR = tuple(round(v * 255) for v in IMAGENET_MEAN)
"""RGB 0..255 colour of padding: normalises to about 0."""


@functools.cache
def channel_mean_std(channels: int) -> tuple[np.ndarray, np.ndarray]:
    """``(mean, inverse deviation)`` in 0..255 units, Cx1x1 float32 each, of ``channels``
    input channels: :data:`MEAN_255` and :data:`INV_STD_255` for 3; channel ``i`` of any other
    count takes the ImageNet values of channel ``i`` below 3, their mean from 3 on. Computed once
    per count (a sample's normalisation asks for them): do not change the arrays."""
    if channels == 3:
        return MEAN_255, INV_STD_255
    extra = max(0, channels - 3)
    mean = np.array([*IMAGENET_MEAN, *[np.mean(IMAGENET_MEAN)] * extra][:channels], np.float32)
    std = np.array([*IMAGENET_STD, *[np.mean(IMAGENET_STD)] * extra][:channels], np.float32)
    return mean[:, None, None] * 255, 1 / (std[:, None, None] * 255)


def pad_values(channels: int) -> tuple[int, ...]:
    """The 0..255 padding value of each of ``channels`` input channels: its mean
    (:func:`channel_mean_std`; :data:`PAD_COLOUR` for 3), which normalises to about 0."""
    return tuple(round(float(v)) for v in channel_mean_std(channels)[0].reshape(-1))


NORMALISATIONS = ("imagenet", "official")
"""``imagenet``: ``x / 255`` then the ImageNet mean/std; ``official``: ``x / max(x)`` first (the
official U2Net training and test code; an all-black image keeps gain 1)."""

DEFAULT_INPUT_SIZE = 320
"""Side of the square model input of the U2Net recipe (training resize, validation, inference)."""


def check_normalisation(normalisation: str) -> None:
    """ValueError naming the valid settings unless ``normalisation`` is one of them."""
    if normalisation not in NORMALISATIONS:
        valid = ", ".join(repr(n) for n in NORMALISATIONS)
        raise ValueError(f"normalisation must be one of {valid}, got {normalisation!r}")


def official_gain(maximum: float) -> float:
    """``255 / maximum``, the factor that maps an image whose largest value is ``maximum``
    (0..255) to the official ``x / max(x)`` in 0..255 units; 1 for an all-black image."""
    return 255.0 / maximum if maximum > 0 else 1.0


def normalise_(image: np.ndarray, normalisation: str = "imagenet") -> np.ndarray:
    """Normalise a CxHxW float32 image of 0..255 values in place: with ``"official"``, first
    scaled by :func:`official_gain` of its maximum; then the ImageNet mean/std
    (:func:`channel_mean_std`)."""
    if normalisation == "official":
        image *= np.float32(official_gain(float(image.max())))
    mean, inv_std = channel_mean_std(image.shape[0])
    image -= mean
    image *= inv_std
    return image


def denormalise(images: torch.Tensor) -> torch.Tensor:
    """Undo the normalisation of a BxCxHxW batch for display: Bx3xHxW in [0, 1], its first three
    channels (the first one as grey when there are fewer)."""
    mean, inv_std = channel_mean_std(images.shape[1])
    mean = images.new_tensor(mean.reshape(1, -1, 1, 1)) / 255
    std = 1 / (images.new_tensor(inv_std.reshape(1, -1, 1, 1)) * 255)
    shown = (images * std + mean).clamp(0, 1)
    return shown[:, :3] if shown.shape[1] >= 3 else shown[:, :1].expand(-1, 3, -1, -1)
