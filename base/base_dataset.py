"""Dataset bases: seeded samples of a split (``SeededDataSet``) and, on it, image/mask pairs with
the SOD resizing and augmentation (``BaseDataSet``, whose settings are an ``ImageTransform``)."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from utils.io.images import count_01_masks
from utils.preprocessing import DEFAULT_INPUT_SIZE, PAD_COLOUR, normalise_
from utils.runtime.logs import get_logger

_GREY_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # RGB -> luma

_Init = TypeVar("_Init", bound=Callable[..., None])

MASKS_CHECKED = 32
"""How many masks (evenly spaced) a ``BaseDataSet`` checks for the 0/1-encoding notice."""


def sample_rng(item: int | tuple[int, int, int]) -> tuple[int, np.random.Generator]:
    """The index of a dataset item and its augmentation generator: seeded by the whole
    ``(index, seed, epoch)`` key of ``SeededSampler``, unseeded for a plain index."""
    if isinstance(item, tuple):
        index, seed, epoch = item
        return index, np.random.default_rng([seed, epoch, index])
    return item, np.random.default_rng()


def check_positive_int(name: str, value: Any) -> None:
    """Raise ``ValueError`` naming ``name`` unless ``value`` is an integer >= 1 (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


class SeededDataSet(Dataset):
    """The samples of one ``split`` of ``data_dir``; subclasses implement ``_set_files`` and
    ``_sample``.

    ``dataset[i]`` or ``dataset[(index, seed, epoch)]`` (the key yielded by ``SeededSampler``)
    returns ``(image, mask)``: a 3xHxW float32 image normalised with the ImageNet mean/std and a
    1xHxW float32 mask in [0, 1]. With a key, augmentation draws only from
    ``np.random.default_rng([seed, epoch, index])`` (:func:`sample_rng`), so it does not depend
    on worker count or process state; an int index draws from a fresh unseeded generator.

    Hooks: ``_set_files`` fills ``self.files`` (called by ``__init__``); ``_sample(index, rng)``
    returns the HxWx3 uint8 RGB image and the HxW mask in [0, 1] of a sample, augmented when
    ``self.augment``; ``_augment_pixels(pixels, rng)`` may change the 3xHxW float32 image (0..255)
    in place before normalisation; ``_repr_fields`` lists what ``repr`` shows after the split.
    There are ``len(self.files)`` samples unless ``__len__`` says otherwise.
    """

    def __init__(self, data_dir: str, split: str = "train", augment: bool = False) -> None:
        self.data_dir = data_dir
        self.split = split
        self.augment = augment
        self.files: list[Any] = []
        self._set_files()

    def _set_files(self) -> None:
        """Fill ``self.files`` with one entry per file (or pair of files)."""
        raise NotImplementedError

    def _sample(self, index: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(HxWx3 uint8 RGB image, HxW mask in [0, 1]) of sample ``index``."""
        raise NotImplementedError

    def _augment_pixels(self, pixels: np.ndarray, rng: np.random.Generator) -> None:
        """Change the 3xHxW float32 RGB image (0..255) in place; by default nothing."""

    def _repr_fields(self) -> list[str]:
        return [f"files={len(self.files)}", f"data_dir={self.data_dir!r}"]

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, item: int | tuple[int, int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        index, rng = sample_rng(item)
        image, mask = self._sample(index, rng)
        pixels = np.ascontiguousarray(image.transpose(2, 0, 1)).astype(np.float32)  # 3xHxW
        self._augment_pixels(pixels, rng)
        normalise_(pixels)
        target = np.ascontiguousarray(mask, dtype=np.float32)[None]
        return torch.from_numpy(pixels), torch.from_numpy(target)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(split={self.split!r}, {', '.join(self._repr_fields())})"


@dataclass(frozen=True)
class ImageTransform:
    """Resizing and training augmentation of an image and its mask (the ``BaseDataSet`` settings).

    Training (:meth:`augment`, then :meth:`jitter` on the float image), in order: resize to a
    square of side ``round(base_size * s)``, ``s`` uniform in ``scale_range`` (aspect ratio is
    not kept, as in the U2Net recipe); rotate by an angle uniform in ``[-rotate, rotate]``
    degrees; pad bottom/right to ``crop_size`` (image with the mean colour, mask with 0) and crop
    a random ``crop_size`` square; flip horizontally with p=0.5; Gaussian blur with p=0.5 (image
    only); brightness/contrast/saturation jitter with factors in ``[1 - c, 1 + c]`` (image only).
    Rotation reflects the borders (``BORDER_REFLECT_101``) of image and mask alike, so the
    reflected image content keeps its matching mask. Otherwise (:meth:`resize`) image and mask
    are resized to ``base_size`` x ``base_size``. All resizing is bilinear; masks get soft edges.
    """

    base_size: int = DEFAULT_INPUT_SIZE
    crop_size: int | None = None
    scale_range: Sequence[float] | None = None
    flip: bool = True
    rotate: float = 0.0
    blur: bool = False
    color_jitter: float = 0.0

    def __post_init__(self) -> None:
        check_positive_int("base_size", self.base_size)
        if self.crop_size is not None:
            check_positive_int("crop_size", self.crop_size)
        if self.scale_range is not None:
            self._set("scale_range", self._checked_scale_range())
        if not 0 <= self.rotate <= 180:
            raise ValueError(f"rotate must be an angle in degrees in [0, 180], got {self.rotate!r}")
        if not 0 <= self.color_jitter < 1:
            raise ValueError(f"color_jitter must be in [0, 1), got {self.color_jitter!r}")
        self._set("rotate", float(self.rotate))
        self._set("color_jitter", float(self.color_jitter))

    def _set(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)  # normalising a field of the frozen instance

    def _checked_scale_range(self) -> tuple[float, float]:
        scale_range = self.scale_range
        if (
            isinstance(scale_range, str)
            or len(scale_range) != 2
            or not 0 < scale_range[0] <= scale_range[1]
        ):
            raise ValueError(
                f"scale_range must be [low, high] with 0 < low <= high, got {scale_range!r}"
            )
        if self.crop_size is None:
            raise ValueError(
                "scale_range needs crop_size: without a crop, images of a batch would have "
                "different sizes"
            )
        return float(scale_range[0]), float(scale_range[1])

    def resize(self, image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The validation transform: both resized to ``base_size`` x ``base_size``."""
        size = (self.base_size, self.base_size)
        image = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
        return image, cv2.resize(mask, size, interpolation=cv2.INTER_LINEAR)

    def augment(
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
            image, mask = self._crop(image, mask, side, rng)
        if self.flip and rng.random() < 0.5:
            image, mask = cv2.flip(image, 1), cv2.flip(mask, 1)
        if self.blur and rng.random() < 0.5:
            image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.1, 1.5))
        return image, mask

    def _crop(
        self, image: np.ndarray, mask: np.ndarray, side: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """A random ``crop_size`` square of both, padded bottom/right when ``side`` is smaller."""
        crop = self.crop_size
        pad = max(crop - side, 0)
        if pad:
            border = (0, pad, 0, pad, cv2.BORDER_CONSTANT)
            image = cv2.copyMakeBorder(image, *border, value=PAD_COLOUR)
            mask = cv2.copyMakeBorder(mask, *border, value=0)
        y, x = rng.integers(0, side + pad - crop + 1, size=2)
        return image[y : y + crop, x : x + crop], mask[y : y + crop, x : x + crop]

    def jitter(self, image: np.ndarray, rng: np.random.Generator) -> None:
        """Brightness, contrast, then saturation jitter of a 3xHxW float RGB image in 0..255, in
        place; clipped to 0..255 at the end. Nothing (and no draw) when ``color_jitter`` is 0."""
        if not self.color_jitter:
            return
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

    def describe(self, augment: bool) -> str:
        """The settings that act: ``base_size`` and ``augment``, and the others with it."""
        settings = f"base_size={self.base_size}, augment={augment}"
        if augment:
            scale_range = None if self.scale_range is None else list(self.scale_range)
            settings += (
                f", crop_size={self.crop_size}, scale_range={scale_range}, flip={self.flip}, "
                f"rotate={self.rotate}, blur={self.blur}, color_jitter={self.color_jitter}"
            )
        return settings


def takes_fields_of(options: type) -> Callable[[_Init], _Init]:
    """Decorate an ``__init__`` whose ``**kwargs`` are the fields of the dataclass ``options``:
    its signature (``inspect.signature``) then names them, as keyword-only parameters with their
    defaults, so the config keys derived from constructor signatures (``utils.config``) and
    ``help()`` list them. The function itself is unchanged."""

    def decorate(init: _Init) -> _Init:
        signature = inspect.signature(init)
        kept = [p for p in signature.parameters.values() if p.kind is not p.VAR_KEYWORD]
        named = [
            inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default)
            for f in dataclasses.fields(options)
        ]
        init.__signature__ = signature.replace(parameters=kept + named)
        return init

    return decorate


class BaseDataSet(SeededDataSet):
    """Image/mask dataset; subclasses implement ``_set_files`` and ``_load_data``.

    Every sample is a whole image and its mask, resized and, with ``augment``, augmented by an
    :class:`ImageTransform` built from the other keyword arguments (``base_size``,
    ``crop_size``, ``scale_range``, ``flip``, ``rotate``, ``blur``, ``color_jitter``; see there).
    Items are as in :class:`SeededDataSet`: seeded by ``(index, seed, epoch)``, normalised.

    Masks should be read with :func:`utils.io.images.read_mask` (the mask rule: 0/1-encoded
    masks become 0/255). When ``_mask_paths`` names the mask files, :data:`MASKS_CHECKED` of them
    (evenly spaced) are read once at construction and, if any is 0/1-encoded, one warning line on
    the ``u2seg`` logger says how many; ``self.binary_01_masks`` is ``(0/1-encoded, checked)``.
    """

    @takes_fields_of(ImageTransform)
    def __init__(
        self, data_dir: str, split: str = "train", augment: bool = False, **transform: Any
    ) -> None:
        self.transform = ImageTransform(**transform)
        super().__init__(data_dir, split, augment)
        self.binary_01_masks = self._check_mask_encoding()

    def _mask_paths(self) -> Sequence[str]:
        """The mask files (for the 0/1-encoding notice); by default none, so nothing is checked."""
        return []

    def _check_mask_encoding(self) -> tuple[int, int]:
        """Read up to :data:`MASKS_CHECKED` masks and warn once if some are 0/1-encoded."""
        paths = self._mask_paths()
        found, checked = count_01_masks(paths, MASKS_CHECKED)
        if found:
            get_logger().warning(
                "%s(split=%r): %d of %d masks checked (evenly spaced over %d) are 0/1-encoded "
                "(maximum 1); every such mask is read as 0/255",
                type(self).__name__,
                self.split,
                found,
                checked,
                len(paths),
            )
        return found, checked

    def _load_data(self, index: int) -> tuple[np.ndarray, np.ndarray, str]:
        """Return (HxWx3 uint8 RGB image, HxW uint8 mask in 0..255, sample id)."""
        raise NotImplementedError

    def _sample(self, index: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        image, mask, image_id = self._load_data(index)
        if image.shape[:2] != mask.shape[:2]:
            raise ValueError(
                f"image and mask of {image_id!r} differ in size: image "
                f"{image.shape[1]}x{image.shape[0]}, mask {mask.shape[1]}x{mask.shape[0]} "
                f"({self.files[index]})"
            )
        if self.augment:
            image, mask = self.transform.augment(image, mask, rng)
        else:
            image, mask = self.transform.resize(image, mask)
        return image, np.multiply(mask, np.float32(1 / 255), dtype=np.float32)

    def _augment_pixels(self, pixels: np.ndarray, rng: np.random.Generator) -> None:
        if self.augment:
            self.transform.jitter(pixels, rng)

    def _repr_fields(self) -> list[str]:
        return [
            f"images={len(self)}",
            f"data_dir={self.data_dir!r}",
            self.transform.describe(self.augment),
        ]
