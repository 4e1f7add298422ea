"""Dataset base class: loading hooks, seeded augmentation and normalisation for image/mask pairs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from utils.preprocessing import DEFAULT_INPUT_SIZE, PAD_COLOUR, normalise_

_GREY_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # RGB -> luma


def sample_rng(item: int | tuple[int, int, int]) -> tuple[int, np.random.Generator]:
    """The index of a dataset item and its augmentation generator: seeded by the whole
    ``(index, seed, epoch)`` key of ``SeededSampler``, unseeded for a plain index."""
    if isinstance(item, tuple):
        index, seed, epoch = item
        return index, np.random.default_rng([seed, epoch, index])
    return item, np.random.default_rng()


def _positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


class BaseDataSet(Dataset):
    """Image/mask dataset; subclasses implement ``_set_files`` and ``_load_data``.

    ``dataset[i]`` or ``dataset[(index, seed, epoch)]`` (the key yielded by ``SeededSampler``)
    returns ``(image, mask)``: a 3xHxW float32 image normalised with the ImageNet mean/std and a
    1xHxW float32 mask in [0, 1]. With a key, augmentation draws only from
    ``np.random.default_rng([seed, epoch, index])``, so it does not depend on worker count or
    process state; an int index draws from a fresh unseeded generator.

    Training transform (``augment=True``), in order: resize to a square of side
    ``round(base_size * s)``, ``s`` uniform in ``scale_range`` (aspect ratio is not kept, as in
    the U2Net recipe); rotate by an angle uniform in ``[-rotate, rotate]`` degrees; pad
    bottom/right to ``crop_size`` (image with the mean colour, mask with 0) and crop a random
    ``crop_size`` square; flip horizontally with p=0.5; Gaussian blur with p=0.5 (image only);
    brightness/contrast/saturation jitter with factors in ``[1 - c, 1 + c]`` (image only).
    Rotation reflects the borders (``BORDER_REFLECT_101``) of image and mask alike, so the
    reflected image content keeps its matching mask. Otherwise image and mask are resized to
    ``base_size`` x ``base_size``. All resizing is bilinear; masks get soft edges.
    """

    def __init__(
        self,
        data_dir: str,
        split: str,
        base_size: int = DEFAULT_INPUT_SIZE,
        crop_size: int | None = None,
        augment: bool = False,
        scale_range: Sequence[float] | None = None,
        flip: bool = True,
        rotate: float = 0.0,
        blur: bool = False,
        color_jitter: float = 0.0,
    ) -> None:
        _positive_int("base_size", base_size)
        if crop_size is not None:
            _positive_int("crop_size", crop_size)
        if scale_range is not None:
            if (
                isinstance(scale_range, str)
                or len(scale_range) != 2
                or not 0 < scale_range[0] <= scale_range[1]
            ):
                raise ValueError(
                    f"scale_range must be [low, high] with 0 < low <= high, got {scale_range!r}"
                )
            if crop_size is None:
                raise ValueError(
                    "scale_range needs crop_size: without a crop, images of a batch would have "
                    "different sizes"
                )
            scale_range = [float(scale_range[0]), float(scale_range[1])]
        if not 0 <= rotate <= 180:
            raise ValueError(f"rotate must be an angle in degrees in [0, 180], got {rotate!r}")
        if not 0 <= color_jitter < 1:
            raise ValueError(f"color_jitter must be in [0, 1), got {color_jitter!r}")
        self.data_dir = data_dir
        self.split = split
        self.base_size = base_size
        self.crop_size = crop_size
        self.augment = augment
        self.scale_range = scale_range
        self.flip = flip
        self.rotate = float(rotate)
        self.blur = blur
        self.color_jitter = float(color_jitter)
        self.files: list[Any] = []
        self._set_files()

    def _set_files(self) -> None:
        """Fill ``self.files`` with one entry per sample."""
        raise NotImplementedError

    def _load_data(self, index: int) -> tuple[np.ndarray, np.ndarray, str]:
        """Return (HxWx3 uint8 RGB image, HxW uint8 mask in 0..255, sample id)."""
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, item: int | tuple[int, int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        index, rng = sample_rng(item)
        image, mask, image_id = self._load_data(index)
        if image.shape[:2] != mask.shape[:2]:
            raise ValueError(
                f"image and mask of {image_id!r} differ in size: image "
                f"{image.shape[1]}x{image.shape[0]}, mask {mask.shape[1]}x{mask.shape[0]} "
                f"({self.files[index]})"
            )
        if self.augment:
            image, mask = self._augment(image, mask, rng)
        else:
            size = (self.base_size, self.base_size)
            image = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
            mask = cv2.resize(mask, size, interpolation=cv2.INTER_LINEAR)
        image = np.ascontiguousarray(image.transpose(2, 0, 1)).astype(np.float32)  # 3xHxW
        if self.augment and self.color_jitter:
            self._jitter(image, rng)
        normalise_(image)
        mask = np.multiply(mask, np.float32(1 / 255), dtype=np.float32)
        return torch.from_numpy(image), torch.from_numpy(mask[None])

    def _augment(
        self, image: np.ndarray, mask: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Geometric transforms on both, then blur on the image; uint8 in, uint8 out."""
        scale = rng.uniform(*self.scale_range) if self.scale_range else 1.0
        side = max(1, round(self.base_size * scale))
        image = cv2.resize(image, (side, side), interpolation=cv2.INTER_LINEAR)
        mask = cv2.resize(mask, (side, side), interpolation=cv2.INTER_LINEAR)
        if self.rotate:
            centre = ((side - 1) / 2, (side - 1) / 2)
            matrix = cv2.getRotationMatrix2D(centre, rng.uniform(-self.rotate, self.rotate), 1.0)
            warp = {"flags": cv2.INTER_LINEAR, "borderMode": cv2.BORDER_REFLECT_101}
            image = cv2.warpAffine(image, matrix, (side, side), **warp)
            mask = cv2.warpAffine(mask, matrix, (side, side), **warp)
        if self.crop_size:
            crop = self.crop_size
            pad = max(crop - side, 0)
            if pad:
                border = (0, pad, 0, pad, cv2.BORDER_CONSTANT)
                image = cv2.copyMakeBorder(image, *border, value=PAD_COLOUR)
                mask = cv2.copyMakeBorder(mask, *border, value=0)
            y, x = rng.integers(0, side + pad - crop + 1, size=2)
            image, mask = image[y : y + crop, x : x + crop], mask[y : y + crop, x : x + crop]
        if self.flip and rng.random() < 0.5:
            image, mask = cv2.flip(image, 1), cv2.flip(mask, 1)
        if self.blur and rng.random() < 0.5:
            image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.1, 1.5))
        return image, mask

    def _jitter(self, image: np.ndarray, rng: np.random.Generator) -> None:
        """Brightness, contrast, then saturation jitter of a 3xHxW float RGB image in 0..255, in
        place; clipped to 0..255 at the end."""
        low, high = 1 - self.color_jitter, 1 + self.color_jitter
        brightness, contrast, saturation = rng.uniform(low, high, size=3).tolist()
        image *= brightness
        grey = np.tensordot(_GREY_WEIGHTS, image, 1)
        mean = float(grey.mean())
        image -= mean
        image *= contrast
        image += mean
        grey *= contrast  # the grey of the contrast-adjusted image, as grey is linear
        grey += mean * (1 - contrast)
        image -= grey
        image *= saturation
        image += grey
        np.clip(image, 0, 255, out=image)

    def __repr__(self) -> str:
        settings = f"base_size={self.base_size}, augment={self.augment}"
        if self.augment:
            settings += (
                f", crop_size={self.crop_size}, scale_range={self.scale_range}, flip={self.flip}, "
                f"rotate={self.rotate}, blur={self.blur}, color_jitter={self.color_jitter}"
            )
        return (
            f"{type(self).__name__}(split={self.split!r}, images={len(self)}, "
            f"data_dir={self.data_dir!r}, {settings})"
        )
