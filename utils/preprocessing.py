"""The input convention of U2Seg models, defined once for training, validation and inference.

Images are 8-bit RGB, normalised with the ImageNet mean and standard deviation as
``(x - MEAN_255) * INV_STD_255`` in float32, so inference inputs equal validation inputs bit for
bit. The ``normalisation`` setting (:data:`NORMALISATIONS`) says what comes first: nothing
(``"imagenet"``: ``x / 255``, then mean/std) or a gain of ``255 / max(x)`` (``"official"``: the
official U2Net code divides each image by its own maximum, over all channels, before the
mean/std; ``data_loader.ToTensorLab`` in xuebinqin/U-2-Net). Padding uses the mean colour
(``PAD_COLOUR``), which normalises to about 0. Without another
setting, models see ``DEFAULT_INPUT_SIZE`` x ``DEFAULT_INPUT_SIZE`` inputs (the U2Net recipe).
"""

from __future__ import annotations

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
    """Normalise a 3xHxW float32 image of 0..255 values in place: with ``"official"``, first
    scaled by :func:`official_gain` of its maximum; then the ImageNet mean/std."""
    if normalisation == "official":
        image *= np.float32(official_gain(float(image.max())))
    image -= MEAN_255
    image *= INV_STD_255
    return image


def denormalise(images: torch.Tensor) -> torch.Tensor:
    """Undo the ImageNet normalisation of a Bx3xHxW batch; the result is in [0, 1]."""
    mean = images.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = images.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (images * std + mean).clamp(0, 1)
