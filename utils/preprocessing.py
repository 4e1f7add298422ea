"""The input convention of U2Seg models, defined once for training, validation and inference.

Images are 8-bit RGB, normalised with the ImageNet mean and standard deviation as
``(x - MEAN_255) * INV_STD_255`` in float32, so inference inputs equal validation inputs bit for
bit. Padding uses the mean colour (``PAD_COLOUR``), which normalises to about 0. Without another
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

DEFAULT_INPUT_SIZE = 320
"""Side of the square model input of the U2Net recipe (training resize, validation, inference)."""


def normalise_(image: np.ndarray) -> np.ndarray:
    """Normalise a 3xHxW float32 image of 0..255 values with the ImageNet mean/std, in place."""
    image -= MEAN_255
    image *= INV_STD_255
    return image


def denormalise(images: torch.Tensor) -> torch.Tensor:
    """Undo the ImageNet normalisation of a Bx3xHxW batch; the result is in [0, 1]."""
    mean = images.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = images.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (images * std + mean).clamp(0, 1)
