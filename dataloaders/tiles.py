"""Reading windows of large image tiles without decoding the whole tile for every window.

Uncompressed TIFFs (the usual format of aerial tiles: Inria, Massachusetts) are memory-mapped
with ``tifffile``: a window read touches only its own rows. Any other file (compressed TIFF,
PNG, JPEG) is decoded once and kept in a small least-recently-used cache of each process (each
DataLoader worker has its own), bounded by ``cache_tiles`` tiles (an image and its mask count as
one tile: the cache holds up to ``2 * cache_tiles`` decoded files).

With an ``imagery`` section (:mod:`utils.imagery`) images are read with rasterio instead
(:class:`utils.io.rasters.RasterBands`: the selected bands, scaled to 8 bits), a window at a time
from files kept open (at most :data:`OPEN_RASTERS`); a tile's percentile limits are computed once
per process. Masks are read as above.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np
import tifffile

from utils.imagery import Imagery
from utils.io.images import read_image, read_mask
from utils.io.rasters import RasterBands

OPEN_RASTERS = 64
"""How many image rasters a :class:`TileReader` with an ``imagery`` section keeps open."""


def _memmap(path: str, mask: bool) -> np.ndarray | None:
    """A read-only memory map of an uncompressed 8-bit RGB (or grey, for masks) TIFF, else None."""
    if Path(path).suffix.lower() not in (".tif", ".tiff"):
        return None
    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            rgb = page.photometric == tifffile.PHOTOMETRIC.RGB and page.samplesperpixel == 3
            grey = page.samplesperpixel == 1 and page.photometric == tifffile.PHOTOMETRIC.MINISBLACK
            if page.dtype != np.uint8 or not (grey if mask else rgb):
                return None
        return tifffile.memmap(path, mode="r")
    except (ValueError, OSError, tifffile.TiffFileError):  # compressed, tiled, odd layout
        return None


class TileReader:
    """Windows of image and mask tiles; see the module docstring."""

    def __init__(self, cache_tiles: int = 4, imagery: Imagery | None = None) -> None:
        self.cache_tiles = cache_tiles
        self.imagery = imagery
        self._maps: dict[str, np.ndarray | None] = {}
        self._decoded: OrderedDict[str, np.ndarray] = OrderedDict()
        self._rasters: OrderedDict[str, RasterBands] = OrderedDict()
        self._limits: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def raster(self, path: str) -> RasterBands:
        """The open :class:`RasterBands` of the image ``path`` (with an ``imagery`` section)."""
        if path in self._rasters:
            self._rasters.move_to_end(path)
            return self._rasters[path]
        raster = RasterBands(path, self.imagery, self._limits.get(path))
        self._limits[path] = raster.limits()
        self._rasters[path] = raster
        while len(self._rasters) > OPEN_RASTERS:
            self._rasters.popitem(last=False)[1].close()
        return raster

    def array(self, path: str, mask: bool = False) -> np.ndarray:
        """The whole tile as an array (HxWx3 RGB or HxW mask): a memory map when possible."""
        if path not in self._maps:
            self._maps[path] = _memmap(path, mask)
        mapped = self._maps[path]
        if mapped is not None:
            return mapped
        if path in self._decoded:
            self._decoded.move_to_end(path)
            return self._decoded[path]
        array = read_mask(path) if mask else read_image(path)
        self._decoded[path] = array
        while len(self._decoded) > 2 * self.cache_tiles:  # image and mask of each tile
            self._decoded.popitem(last=False)
        return array

    def window(self, path: str, y: int, x: int, h: int, w: int, mask: bool = False) -> np.ndarray:
        """The ``h`` x ``w`` window at ``(y, x)`` (a copy, clipped to the tile)."""
        if self.imagery is not None and not mask:
            return self.raster(path).read(y, x, h, w)
        return np.array(self.array(path, mask)[y : y + h, x : x + w])
