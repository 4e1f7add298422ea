"""Dataset bases: seeded samples of a split (``SeededDataSet``) and, on it, image/mask pairs with
the SOD resizing and augmentation (``BaseDataSet``, whose settings are an ``ImageTransform``)."""

from __future__ import annotations

import bisect
import dataclasses
import inspect
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from utils.io.images import count_01_masks, image_size
from utils.preprocessing import DEFAULT_INPUT_SIZE, NORMALISATIONS, PAD_COLOUR, normalise_
from utils.runtime.logs import get_logger

_GREY_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # RGB -> luma

_Init = TypeVar("_Init", bound=Callable[..., None])

MASKS_CHECKED = 32
"""How many masks (evenly spaced) a ``BaseDataSet`` checks for the 0/1-encoding notice."""

PAIR_MISMATCH_POLICIES = ("resize_mask", "error", "skip")
"""Values of the ``pair_mismatch`` argument of ``BaseDataSet`` (the first is the default)."""

PAIRS_NAMED = 5
"""How many mismatched pairs the one log line of the pre-flight size check names."""

MAX_REPLACEMENTS = 8
"""How many other samples ``SeededDataSet`` tries in place of one whose files cannot be read."""


def sample_rng(item: int | tuple[int, int, int]) -> tuple[int, np.random.Generator]:
    """The index of a dataset item and its augmentation generator: seeded by the whole
    ``(index, seed, epoch)`` key of ``SeededSampler``, unseeded for a plain index."""
    if isinstance(item, tuple):
        index, seed, epoch = item
        return index, np.random.default_rng([seed, epoch, index])
    return item, np.random.default_rng()


def fit_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The HxW uint8 ``mask`` resized to ``size`` (height, width): nearest neighbour for a binary
    mask (values 0 and 255 only), which so stays binary; bilinear for a soft mask."""
    binary = not np.any((mask != 0) & (mask != 255))
    interpolation = cv2.INTER_NEAREST_EXACT if binary else cv2.INTER_LINEAR
    return cv2.resize(mask, (size[1], size[0]), interpolation=interpolation)


def check_positive_int(name: str, value: Any) -> None:
    """Raise ``ValueError`` naming ``name`` unless ``value`` is an integer >= 1 (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


class SeededDataSet(Dataset):
    """The samples of one ``split`` of ``data_dir``; subclasses implement ``_set_files`` and
    ``_sample``.

    ``dataset[i]`` or ``dataset[(index, seed, epoch)]`` (the key yielded by ``SeededSampler``)
    returns ``(image, mask)``: a CxHxW float32 image (C = 3, or the bands of an ``imagery``
    section) normalised as ``normalisation`` says and a
    1xHxW float32 mask in [0, 1]. With a key, augmentation draws only from
    ``np.random.default_rng([seed, epoch, index])`` (:func:`sample_rng`), so it does not depend
    on worker count or process state; an int index draws from a fresh unseeded generator. A
    sample whose files cannot be read raises ``OSError``, or, after :meth:`track_skipped` (which
    ``BaseDataLoader`` calls), is replaced by the next readable one and flagged in ``skipped``.

    Hooks: ``_set_files`` fills ``self.files`` (called by ``__init__``); ``_sample(index, rng)``
    returns the HxWxC uint8 image (RGB) and the HxW mask in [0, 1] of a sample, augmented when
    ``self.augment``; ``_augment_pixels(pixels, rng)`` may change the 3xHxW float32 image (0..255)
    in place before normalisation; ``_repr_fields`` lists what ``repr`` shows after the split;
    ``_file_index(index)`` is the entry of ``self.files`` a sample reads (for ``image_files``).
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

    def _file_index(self, index: int) -> int:
        """The entry of ``self.files`` that sample ``index`` reads; by default ``index``."""
        return index

    def image_files(self, indices: Iterable[int]) -> set[str]:
        """The image files the samples ``indices`` read, as real paths (symbolic links
        resolved), to tell whether two loaders read the same images. An entry of ``self.files``
        is a path or a tuple whose first item is the image's path; entries of other kinds (e.g.
        arrays) give no path."""
        entries = (self.files[self._file_index(index)] for index in indices)
        images = (entry[0] if isinstance(entry, tuple) and entry else entry for entry in entries)
        return {
            os.path.realpath(image) for image in images if isinstance(image, (str, os.PathLike))
        }

    subset: str | None = None
    """Set by a loader that reads only some of the samples (a ``val_split``): what ``repr`` shows
    in place of the number of samples, e.g. ``"10 of 12 (2 held out for validation ...)"``."""

    normalisation: str = NORMALISATIONS[0]
    """How images are normalised (:data:`utils.preprocessing.NORMALISATIONS`); the loader sets it
    from the config's top-level ``normalisation``."""
    skipped: torch.Tensor | None = None
    """Set by :meth:`track_skipped`: one uint8 flag per sample, 1 once it was skipped; while it
    is None, an unreadable sample raises its ``OSError``."""
    replacement_pool: Sequence[int] | None = None
    """The sorted indices a skipped sample may be replaced by (None: every sample)."""

    def track_skipped(self, pool: Sequence[int] | None = None) -> None:
        """Skip unreadable samples from now on (see ``__getitem__``) and record them in
        ``self.skipped``: a uint8 tensor with one flag per sample, in shared memory, so that the
        DataLoader workers (forked or spawned, persistent or not) set the flags that the main
        process reads; the reader clears it (``skipped.zero_()``) before a pass. Call it before
        the workers start. Replacements are drawn from ``pool`` (e.g. the loader's part of a
        ``val_split``), or from all samples."""
        self.skipped = torch.zeros(len(self), dtype=torch.uint8).share_memory_()
        self.replacement_pool = None if pool is None else sorted(pool)

    def skip_reason(self, index: int) -> str:
        """Why sample ``index`` is skipped: its read error, read again here (a worker process's
        exception does not reach the main process)."""
        try:
            self._sample(index, np.random.default_rng(0))
        except OSError as err:
            return str(err)
        return f"sample {index} failed to read in a worker but reads now"

    def _replacement(
        self, item: int | tuple[int, int, int], index: int, err: OSError
    ) -> tuple[np.ndarray, np.ndarray, np.random.Generator]:
        """Image, mask and generator of the sample that replaces the unreadable sample ``index``:
        the first readable one after it in ``replacement_pool`` (cyclically, at most
        :data:`MAX_REPLACEMENTS` tried), augmented from its own ``(index, seed, epoch)`` key, so
        the result depends on nothing but the key. Each unreadable one is flagged in ``skipped``."""
        self.skipped[index] = 1
        pool = range(len(self)) if self.replacement_pool is None else self.replacement_pool
        start = bisect.bisect_right(pool, index)
        tried = 0
        for k in range(min(MAX_REPLACEMENTS, len(pool))):
            candidate = pool[(start + k) % len(pool)]
            if candidate == index:
                continue
            key = (candidate, *item[1:]) if isinstance(item, tuple) else candidate
            _, rng = sample_rng(key)
            tried += 1
            try:
                image, mask = self._sample(candidate, rng)
            except OSError:
                self.skipped[candidate] = 1
                continue
            return image, mask, rng
        raise OSError(
            f"{type(self).__name__}(split={self.split!r}): sample {index} and the {tried} samples "
            f"tried in its place cannot be read; first error: {err}"
        ) from err

    def __getitem__(self, item: int | tuple[int, int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """The sample of ``item``. One whose files cannot be read (``OSError``) raises, or, once
        :meth:`track_skipped` was called, is replaced by another (:meth:`_replacement`)."""
        index, rng = sample_rng(item)
        try:
            image, mask = self._sample(index, rng)
        except OSError as err:
            if self.skipped is None:
                raise
            image, mask, rng = self._replacement(item, index, err)
        pixels = np.ascontiguousarray(image.transpose(2, 0, 1)).astype(np.float32)  # CxHxW
        self._augment_pixels(pixels, rng)
        normalise_(pixels, self.normalisation)
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
    defaults and annotations, so the config keys derived from constructor signatures
    (``utils.config``, which checks values against the annotations) and ``help()`` list them.
    The function itself is unchanged."""

    def decorate(init: _Init) -> _Init:
        signature = inspect.signature(init)
        kept = [p for p in signature.parameters.values() if p.kind is not p.VAR_KEYWORD]
        named = [
            inspect.Parameter(
                f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default, annotation=f.type
            )
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
    masks become 0/255). When ``_pair_paths`` names the files, :data:`MASKS_CHECKED` of the masks
    (evenly spaced) are read once at construction and, if any is 0/1-encoded, one warning line on
    the ``u2seg`` logger says how many; ``self.binary_01_masks`` is ``(0/1-encoded, checked)``.

    Image/mask size mismatches: when ``_pair_paths`` names the (image, mask) files of every
    entry of ``self.files``, the sizes of all of them are read from the file headers (no
    decoding, no random draw, order kept) once at construction, and every pair whose sizes
    differ is handled at once by ``pair_mismatch`` (see :data:`PAIR_MISMATCH_POLICIES`):
    ``"resize_mask"`` (the default) logs one warning line (the count and the first
    :data:`PAIRS_NAMED` pairs) and resizes each such mask to its image when it is loaded
    (:func:`fit_mask`: nearest for 0/255 masks, bilinear for soft ones); ``"error"`` raises
    ``ValueError`` listing every pair; ``"skip"`` drops those pairs from ``self.files`` and logs
    them. ``self.mismatched_pairs`` lists them as ``(image, mask)`` paths. Files whose header
    cannot be read are left to fail when loaded. Datasets without ``_pair_paths`` are not
    checked: a mismatch met at load time is resized (with a warning) under ``"resize_mask"``,
    else an error.
    """

    @takes_fields_of(ImageTransform)
    def __init__(
        self,
        data_dir: str,
        split: str = "train",
        augment: bool = False,
        *,
        pair_mismatch: str = PAIR_MISMATCH_POLICIES[0],
        **transform: Any,
    ) -> None:
        if pair_mismatch not in PAIR_MISMATCH_POLICIES:
            raise ValueError(
                f"pair_mismatch must be one of {', '.join(map(repr, PAIR_MISMATCH_POLICIES))}, "
                f"got {pair_mismatch!r}"
            )
        self.pair_mismatch = pair_mismatch
        self.transform = ImageTransform(**transform)
        self._mask_warned: set[int] = set()  # mismatched pairs already logged
        super().__init__(data_dir, split, augment)
        self.mismatched_pairs = self._check_pair_sizes()
        self.binary_01_masks = self._check_mask_encoding()

    def _pair_paths(self) -> Sequence[tuple[str, str]]:
        """The (image file, mask file) of every entry of ``self.files``, in order (for the size
        check and the 0/1-encoding notice); by default none, so neither is done."""
        return []

    def _check_pair_sizes(self) -> list[tuple[str, str]]:
        """The pre-flight size check of every pair of ``_pair_paths`` (see the class); returns
        the (image, mask) paths of the pairs whose sizes differ."""
        pairs = self._pair_paths()
        if not pairs:
            return []
        if len(pairs) != len(self.files):
            raise ValueError(
                f"{type(self).__name__}._pair_paths gave {len(pairs)} pairs for "
                f"{len(self.files)} files"
            )
        found: list[tuple[int, str]] = []
        for index, (image_path, mask_path) in enumerate(pairs):
            try:
                image_hw, mask_hw = image_size(image_path), image_size(mask_path)
            except OSError:
                continue  # its read error comes when it is loaded
            if image_hw != mask_hw:
                found.append(
                    (
                        index,
                        f"{os.path.basename(image_path)} {image_hw[1]}x{image_hw[0]} vs "
                        f"{os.path.basename(mask_path)} {mask_hw[1]}x{mask_hw[0]}",
                    )
                )
        if not found:
            return []
        mismatched = [tuple(pairs[index]) for index, _ in found]
        what = (
            f"{type(self).__name__}(split={self.split!r}, data_dir={self.data_dir!r}): "
            f"{len(found)} of {len(pairs)} image/mask pairs differ in size (image WxH vs mask WxH)"
        )
        if self.pair_mismatch == "error":
            listed = "".join(f"\n  {text}" for _, text in found)
            raise ValueError(
                f'{what}:{listed}\nset pair_mismatch to "resize_mask" (resize each mask to its '
                'image when loaded) or "skip" (drop these pairs)'
            )
        named = ", ".join(text for _, text in found[:PAIRS_NAMED])
        named += ", ..." if len(found) > PAIRS_NAMED else ""
        if self.pair_mismatch == "skip":
            dropped = {index for index, _ in found}
            self.files = [f for i, f in enumerate(self.files) if i not in dropped]
            action = f'dropped (pair_mismatch="skip"), {len(self.files)} samples remain'
        else:
            action = 'each mask is resized to its image when loaded (pair_mismatch="resize_mask")'
            self._mask_warned.update(index for index, _ in found)
        get_logger().warning("%s: %s; %s", what, named, action)
        return mismatched

    def _check_mask_encoding(self) -> tuple[int, int]:
        """Read up to :data:`MASKS_CHECKED` masks and warn once if some are 0/1-encoded."""
        paths = [mask for _, mask in self._pair_paths()]
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
            mask = self._mismatched_mask(index, image_id, image, mask)
        if self.augment:
            image, mask = self.transform.augment(image, mask, rng)
        else:
            image, mask = self.transform.resize(image, mask)
        return image, np.multiply(mask, np.float32(1 / 255), dtype=np.float32)

    def _mismatched_mask(
        self, index: int, image_id: str, image: np.ndarray, mask: np.ndarray
    ) -> np.ndarray:
        """The mask of a pair whose sizes differ, resized to its image under ``"resize_mask"``
        (warned once per sample unless the pre-flight check listed it); else an error."""
        sizes = (
            f"image and mask of {image_id!r} differ in size: image "
            f"{image.shape[1]}x{image.shape[0]}, mask {mask.shape[1]}x{mask.shape[0]} "
            f"({self.files[index]})"
        )
        if self.pair_mismatch != "resize_mask":
            raise ValueError(f"{sizes}; pair_mismatch={self.pair_mismatch!r}")
        if index not in self._mask_warned:
            self._mask_warned.add(index)
            get_logger().warning("%s; the mask is resized to the image", sizes)
        return fit_mask(mask, image.shape[:2])

    def _augment_pixels(self, pixels: np.ndarray, rng: np.random.Generator) -> None:
        if self.augment:
            self.transform.jitter(pixels, rng)

    def _repr_fields(self) -> list[str]:
        return [
            f"images={self.subset or len(self)}",
            f"data_dir={self.data_dir!r}",
            self.transform.describe(self.augment),
        ]
