"""Building-footprint datasets sampled as windows of aerial tiles: WHU, Inria, Massachusetts, VOC.

Every dataset is a list of (image, mask) tiles of any size. Masks are binarised with ``> 0``
(building = 1) whatever their encoding (0/1, 0/255, palette PNG). Images are read as 8-bit RGB
(:func:`utils.io.images.read_image`: 16-bit data is scaled by 1/257, grey is replicated, more than
4 bands is refused with a message naming the file), or, with the config's ``imagery`` section, as
the bands it selects, scaled as it says (:mod:`utils.imagery`, read with rasterio), whatever
their number, bit depth and nodata.

Training (``augment``): an epoch is ``windows_per_epoch`` windows of ``crop_size`` pixels (default:
one per ``crop_size``-square area of the tiles), each from a tile chosen by index and a position
drawn from ``(seed, epoch, index)``: with probability ``building_bias`` the window is centred
near a random building cell of the tile (from a 32-pixel grid of the mask, computed once per
tile and process), else uniformly. Then a random flip and 90-degree rotation (nadir imagery has
no up; no aspect distortion). A tile smaller than the crop is padded (image with the mean
colour, :func:`utils.preprocessing.pad_values`, mask with background). Windows are read with
:class:`dataloaders.tiles.TileReader` (memory-mapped uncompressed TIFFs, else a per-process cache
of decoded tiles; rasterio windows with ``imagery``).

Validation (no ``augment``): a fixed grid of non-overlapping ``crop_size`` windows covering every
tile, the last row and column shifted inside the tile (so their overlap is scored twice; for
whole-tile scores use ``inference.py --mode sliding --gt``).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from base.base_dataloader import BaseDataLoader
from base.base_dataset import SeededDataSet, check_positive_int
from dataloaders.building_demo import ensure_building_demo
from dataloaders.generated import MARKER
from dataloaders.tiles import TileReader
from utils.imagery import Imagery
from utils.inference.windows import window_starts
from utils.io.images import find_images, image_size
from utils.io.rasters import raster_size
from utils.metrics.groups import INRIA_TILE, inria_city
from utils.preprocessing import pad_values
from utils.runtime.logs import get_logger

GRID = 32  # cell size of the building map used for biased sampling


def _pairs(image_dir: str, mask_dir: str, stems: list[str] | None = None) -> list[tuple[str, str]]:
    """(image, mask) paths paired by file name without extension; every image needs a mask."""
    images = find_images(image_dir, recursive=False)
    masks = find_images(mask_dir, recursive=False, what="mask")
    stems = sorted(images) if stems is None else stems
    missing = [s for s in stems if s not in images or s not in masks]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} image(s) without an image file in {image_dir} or a mask in "
            f"{mask_dir}, e.g. {missing[:3]}; images and masks are paired by name"
        )
    if not stems:
        raise FileNotFoundError(f"no image in {image_dir}")
    return [(str(images[s]), str(masks[s])) for s in stems]


class BuildingDataset(SeededDataSet):
    """Windows of building tiles; subclasses fill ``self.files`` with (image, mask) paths.

    A :class:`SeededDataSet` beside ``BaseDataSet``: its samples are windows read from the tiles
    (see the module docstring), not whole images resized, so the keys ``base_size``,
    ``scale_range`` etc. of the image datasets do not apply here. ``imagery`` (the loader hands
    it from the config): how the images' bands are selected and scaled, None for 8-bit RGB.
    """

    reads_rasters = True

    def __init__(
        self,
        data_dir: str,
        split: str = "train",
        crop_size: int = 512,
        augment: bool = False,
        windows_per_epoch: int | None = None,
        building_bias: float = 0.5,
        cache_tiles: int = 4,
        imagery: Imagery | None = None,
    ) -> None:
        if not 0 <= building_bias <= 1:
            raise ValueError(f"building_bias must be in [0, 1], got {building_bias}")
        check_positive_int("crop_size", crop_size)
        self.crop_size = crop_size
        self.windows_per_epoch = windows_per_epoch
        self.building_bias = building_bias
        self.cache_tiles = cache_tiles
        self.imagery = imagery
        self._reader: TileReader | None = None
        self._cells: dict[int, np.ndarray] = {}
        super().__init__(data_dir, split, augment)
        self.sizes = [
            image_size(image) if imagery is None else raster_size(image, imagery)
            for image, _ in self.files
        ]
        self.windows = self._grid()

    # -- reading --------------------------------------------------------------------------

    @property
    def reader(self) -> TileReader:
        if self._reader is None:  # one per process (a worker gets the dataset without it)
            self._reader = TileReader(self.cache_tiles, self.imagery)
        return self._reader

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_reader": None, "_cells": {}}

    def _window(self, tile: int, y: int, x: int) -> tuple[np.ndarray, np.ndarray]:
        """Image (HxWxC uint8: RGB, or the imagery's bands) and binary mask (0/1) of the crop at
        (y, x), padded to the crop."""
        image_path, mask_path = self.files[tile]
        crop = self.crop_size
        image = self.reader.window(image_path, y, x, crop, crop)
        mask = self.reader.window(mask_path, y, x, crop, crop, mask=True)
        if image.shape[:2] != mask.shape[:2]:
            raise ValueError(f"{image_path} and {mask_path} differ in size")
        mask = (mask > 0).astype(np.uint8)
        pad_h, pad_w = crop - image.shape[0], crop - image.shape[1]
        if pad_h or pad_w:
            padded = np.empty((crop, crop, image.shape[2]), np.uint8)
            padded[:] = pad_values(image.shape[2])
            padded[: image.shape[0], : image.shape[1]] = image
            image = padded
            mask = cv2.copyMakeBorder(mask, 0, pad_h, 0, pad_w, cv2.BORDER_CONSTANT, value=0)
        return image, mask

    # -- sampling -------------------------------------------------------------------------

    def _grid(self) -> list[tuple[int, int, int]]:
        windows = []
        for tile, (h, w) in enumerate(self.sizes):
            ys = window_starts(h, min(self.crop_size, h), min(self.crop_size, h))
            xs = window_starts(w, min(self.crop_size, w), min(self.crop_size, w))
            windows += [(tile, y, x) for y in ys for x in xs]
        return windows

    def __len__(self) -> int:
        if not self.augment:
            return len(self.windows)
        if self.windows_per_epoch:
            return self.windows_per_epoch
        return sum(max(1, round(h * w / self.crop_size**2)) for h, w in self.sizes)

    def _building_cells(self, tile: int) -> np.ndarray:
        """(row, col) of the GRID cells of a tile that hold building pixels."""
        if tile not in self._cells:
            mask = self.reader.array(self.files[tile][1], mask=True)
            h, w = mask.shape[:2]
            rows, cols = math.ceil(h / GRID), math.ceil(w / GRID)
            padded = np.zeros((rows * GRID, cols * GRID), bool)
            padded[:h, :w] = np.asarray(mask) > 0
            cells = padded.reshape(rows, GRID, cols, GRID).any(axis=(1, 3))
            self._cells[tile] = np.argwhere(cells)
        return self._cells[tile]

    def _random_window(self, tile: int, rng: np.random.Generator) -> tuple[int, int]:
        h, w = self.sizes[tile]
        max_y, max_x = max(h - self.crop_size, 0), max(w - self.crop_size, 0)
        if rng.random() < self.building_bias:
            cells = self._building_cells(tile)
            if len(cells):
                cy, cx = cells[rng.integers(len(cells))] * GRID + rng.integers(0, GRID, 2)
                y = int(np.clip(cy - self.crop_size // 2, 0, max_y))
                x = int(np.clip(cx - self.crop_size // 2, 0, max_x))
                return y, x
        return int(rng.integers(0, max_y + 1)), int(rng.integers(0, max_x + 1))

    def _sample(self, index: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Validation: window ``index`` of the grid; training: a random window of tile
        ``index % tiles``, randomly flipped and turned by a multiple of 90 degrees."""
        if not self.augment:
            return self._window(*self.windows[index])
        tile = self._file_index(index)
        image, mask = self._window(tile, *self._random_window(tile, rng))
        if rng.random() < 0.5:
            image, mask = image[:, ::-1], mask[:, ::-1]
        turns = int(rng.integers(4))
        return np.rot90(image, turns), np.rot90(mask, turns)

    def _file_index(self, index: int) -> int:
        """The tile of sample ``index``: of its grid window, or ``index % tiles`` (training)."""
        return index % len(self.files) if self.augment else self.windows[index][0]

    def tile_of(self, index: int) -> int:
        """The tile (index into :meth:`tile_names`) that sample ``index`` comes from."""
        return self._file_index(index)

    def tile_names(self) -> list[str]:
        """The name of each tile: its image file name without extension."""
        return [Path(image).stem for image, _ in self.files]

    def tile_groups(self) -> list[str | None]:
        """The group of each tile for per-group scores (None: the tiles of one folder form no
        groups but the whole)."""
        return [None] * len(self.files)

    def _repr_fields(self) -> list[str]:
        return [
            f"tiles={len(self.files)}",
            f"windows={len(self)}",
            f"crop_size={self.crop_size}",
            f"augment={self.augment}",
            f"data_dir={self.data_dir!r}",
            *([f"imagery={self.imagery.to_config()}"] if self.imagery else []),
        ]


class WHUBuildingDataset(BuildingDataset):
    """WHU building (aerial): ``<data_dir>/{train,val,test}/{image,label}/`` 512x512 tiles."""

    def __init__(
        self, data_dir: str, split: str = "train", image_dir: str = "image",
        mask_dir: str = "label", **kwargs: Any,
    ) -> None:  # fmt: skip
        self.image_dir, self.mask_dir = image_dir, mask_dir
        super().__init__(data_dir, split, **kwargs)

    def _set_files(self) -> None:
        root = os.path.join(self.data_dir, self.split)
        self.files = _pairs(os.path.join(root, self.image_dir), os.path.join(root, self.mask_dir))


DEMO_TILES = 16  # 8 per city: with val_tiles 2, 12 training and 4 validation tiles


class InriaBuildingDataset(BuildingDataset):
    """Inria Aerial Image Labeling: ``<data_dir>/AerialImageDataset/train/{images,gt}/``.

    ``split`` ``train`` holds tiles 6 and up of each city, ``val`` tiles 1 to 5 (the usual
    convention; ``val_tiles``), decided from the file name only (``austin12.tif`` -> 12). The
    ``test`` tiles have no ground truth: predict them with ``inference.py``. ``demo``: first write
    the synthetic building demo (``DEMO_TILES`` tiles, see :mod:`dataloaders.building_demo`) to
    ``data_dir`` if it is not there.
    """

    def __init__(
        self, data_dir: str, split: str = "train", root: str = "AerialImageDataset",
        image_dir: str = "images", mask_dir: str = "gt", val_tiles: int = 5, demo: bool = False,
        **kwargs: Any,
    ) -> None:  # fmt: skip
        if split not in ("train", "val"):
            raise ValueError(
                f"Inria split must be 'train' or 'val' (tiles 1..{val_tiles} of each city), got "
                f"{split!r}; the test tiles have no ground truth: use inference.py on them"
            )
        self.root, self.image_dir, self.mask_dir = root, image_dir, mask_dir
        self.val_tiles = val_tiles
        if not demo and os.path.isfile(os.path.join(data_dir, MARKER)):
            get_logger().warning(
                "%s holds the synthetic building demo, not the Inria dataset: its numbers are not "
                "comparable with published ones (configs/inria_demo.json trains on it)",
                data_dir,
            )
        if demo:
            try:
                ensure_building_demo(data_dir, num_tiles=DEMO_TILES)
            except FileExistsError as err:
                raise FileExistsError(
                    f"{err}; if it holds the real Inria dataset, set demo to false (e.g. --opt "
                    "train_loader.args.demo=false val_loader.args.demo=false)"
                ) from None
        super().__init__(data_dir, split, **kwargs)

    def tile_groups(self) -> list[str | None]:
        """The city of each tile (``austin12`` -> ``austin``): the benchmark reports per city."""
        return [inria_city(name) for name in self.tile_names()]

    def _set_files(self) -> None:
        folder = os.path.join(self.data_dir, self.root, "train")
        image_dir = os.path.join(folder, self.image_dir)
        stems = []
        for stem in find_images(image_dir, recursive=False):
            found = INRIA_TILE.match(stem)
            if found is None:
                raise ValueError(f"{image_dir}: {stem!r} is not an Inria tile name like austin12")
            if (int(found["number"]) <= self.val_tiles) == (self.split == "val"):
                stems.append(stem)
        self.files = _pairs(image_dir, os.path.join(folder, self.mask_dir), stems)


class MassachusettsBuildingDataset(BuildingDataset):
    """Massachusetts Buildings: ``<data_dir>/{split}/`` images and ``<data_dir>/{split}_labels/``
    masks, 1500x1500 tiles (``image_dir`` / ``mask_dir`` may name other folders; ``{split}`` is
    replaced)."""

    def __init__(
        self, data_dir: str, split: str = "train", image_dir: str = "{split}",
        mask_dir: str = "{split}_labels", **kwargs: Any,
    ) -> None:  # fmt: skip
        self.image_dir, self.mask_dir = image_dir, mask_dir
        super().__init__(data_dir, split, **kwargs)

    def _set_files(self) -> None:
        image_dir = os.path.join(self.data_dir, self.image_dir.format(split=self.split))
        mask_dir = os.path.join(self.data_dir, self.mask_dir.format(split=self.split))
        self.files = _pairs(image_dir, mask_dir)


class VOCBinaryDataset(BuildingDataset):
    """Own data in the VOC layout: ``JPEGImages/`` + ``SegmentationClass/`` (any class > 0 is the
    foreground), split by ``ImageSets/Segmentation/{split}.txt`` when it exists (else every
    image of the folders is in every split)."""

    def __init__(
        self, data_dir: str, split: str = "train", image_dir: str = "JPEGImages",
        mask_dir: str = "SegmentationClass", **kwargs: Any,
    ) -> None:  # fmt: skip
        self.image_dir, self.mask_dir = image_dir, mask_dir
        super().__init__(data_dir, split, **kwargs)

    def _set_files(self) -> None:
        listing = os.path.join(self.data_dir, "ImageSets", "Segmentation", f"{self.split}.txt")
        stems = None
        if os.path.isfile(listing):
            with open(listing) as f:
                stems = [line.split()[0] for line in f if line.strip()]
        image_dir = os.path.join(self.data_dir, self.image_dir)
        self.files = _pairs(image_dir, os.path.join(self.data_dir, self.mask_dir), stems)


class _BuildingLoader(BaseDataLoader):
    """A loader of windows: validation comes from a split of tiles, not from ``val_split``."""

    supports_val_split = False


class WHUBuilding(_BuildingLoader):
    dataset_class = WHUBuildingDataset


class InriaBuilding(_BuildingLoader):
    dataset_class = InriaBuildingDataset


class MassachusettsBuilding(_BuildingLoader):
    dataset_class = MassachusettsBuildingDataset


class VOCBinary(_BuildingLoader):
    dataset_class = VOCBinaryDataset
