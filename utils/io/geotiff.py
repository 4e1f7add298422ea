"""Georeferenced rasters with rasterio: what a GeoTIFF input's georeferencing is, which of its
pixels hold data, and single-band 8-bit GeoTIFF outputs on the input's grid, written atomically.

rasterio is an optional dependency (``requirements-geo.txt``), imported by :func:`rasterio_module`
when a geo feature is used, so that the rest of the project runs without it.

Outputs (:func:`open_geotiff`, :func:`write_geotiff`): one band, uint8, the input's CRS,
transform, width and height, DEFLATE-compressed, tiled in
:data:`TILE` x :data:`TILE` blocks. Pixels without data (nodata in every band of the input, see
:func:`valid_pixels`) are 0 and marked invalid in an internal mask band (GDAL's per-dataset mask,
which rasterio's ``dataset_mask()``/``read(masked=True)``, GDAL and QGIS honour) rather than by a
nodata value: every value 0..255 is a valid probability in an 8-bit map.

Masks are 8-bit 0/255 rather than 1-bit (``NBITS=1``): every reader handles them, their values
are those of the PNG masks, and DEFLATE stores them nearly as compactly (a 1000 x 1000 demo
tile's mask: 12.1 kB, 9.4 kB in 1 bit, 1 MB raw).
"""

from __future__ import annotations

import importlib
import os
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from utils.io.atomic import atomic_path

GEOTIFF_EXTENSIONS = (".tif", ".tiff")
TILE = 256
"""Side in pixels of the square blocks of the GeoTIFF outputs."""
GEO_REQUIREMENTS = "pip install -r requirements-geo.txt"


def geo_module(name: str, feature: str) -> ModuleType:
    """The optional geo package ``name`` (``rasterio``, ``shapely``, ``pyogrio``: those of
    ``requirements-geo.txt``), imported now; ImportError naming ``feature`` (e.g. ``--format
    tif``) and the install command when it is not installed."""
    try:
        return importlib.import_module(name)
    except ImportError as err:
        raise ImportError(f"{feature} needs {name}: {GEO_REQUIREMENTS}") from err


def rasterio_module(feature: str) -> ModuleType:
    """``rasterio``, imported now (:func:`geo_module`)."""
    return geo_module("rasterio", feature)


def has_rasterio() -> bool:
    """Whether rasterio can be imported."""
    try:
        rasterio_module("")
    except ImportError:
        return False
    return True


@dataclass(frozen=True)
class GeoReference:
    """The grid of a raster: ``crs`` (a ``rasterio.crs.CRS`` or None), ``transform`` (an
    ``affine.Affine`` from pixel (col, row) to map coordinates; the identity for a raster
    without georeferencing), ``height`` and ``width`` in pixels, and whether some pixels may be
    nodata (``masked``: a nodata value, an alpha band or a mask band)."""

    crs: Any
    transform: Any
    height: int
    width: int
    masked: bool = False

    @property
    def georeferenced(self) -> bool:
        """Whether the raster has a CRS or a transform other than the identity."""
        return self.crs is not None or not self.transform.is_identity

    @classmethod
    def pixels(cls, height: int, width: int) -> GeoReference:
        """The grid of a raster without georeferencing: no CRS, pixel coordinates."""
        from affine import Affine

        return cls(None, Affine.identity(), height, width)


def is_geotiff_name(path: str | os.PathLike) -> bool:
    """Whether ``path`` has a TIFF extension (:data:`GEOTIFF_EXTENSIONS`, any case)."""
    return Path(path).suffix.lower() in GEOTIFF_EXTENSIONS


def open_raster(path: str | os.PathLike, feature: str) -> Any:
    """``rasterio.open(path)`` for reading, without the warning about a raster that is not
    georeferenced. Raises ``OSError`` naming the path when it cannot be opened, ImportError
    naming ``feature`` without rasterio."""
    rasterio = rasterio_module(feature)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        try:
            return rasterio.open(path)
        except rasterio.errors.RasterioIOError as err:
            raise OSError(f"cannot open {path} as a raster: {err}") from err


def _alpha_is_data(src: Any, bands: Sequence[int] | None) -> bool:
    """Whether one of ``bands`` (numbered from 1) of the open raster ``src`` is its alpha band."""
    from rasterio.enums import ColorInterp

    return bands is not None and any(src.colorinterp[b - 1] == ColorInterp.alpha for b in bands)


def has_nodata(src: Any, bands: Sequence[int] | None = None) -> bool:
    """Whether some pixels of the open raster ``src`` may hold no data (see :func:`data_mask`)."""
    from rasterio.enums import MaskFlags

    if _alpha_is_data(src, bands):  # a pixel is nodata when each band holds its nodata value
        return all(src.nodatavals[b - 1] is not None for b in bands)
    return any(MaskFlags.all_valid not in band for band in src.mask_flag_enums)


def data_mask(
    src: Any,
    window: Any = None,
    bands: Sequence[int] | None = None,
    pixels: np.ndarray | None = None,
) -> np.ndarray:
    """HxW bool: where the open raster ``src`` holds data, in its ``rasterio.windows.Window``
    ``window`` (or whole).

    GDAL's dataset mask: a pixel is nodata when it is nodata in every band (their nodata value),
    or where an alpha band or an internal mask band says so. Except that an alpha band among
    ``bands`` (those an ``imagery`` section reads as data) is data, not a mask: GDAL tags the
    4th band of a 4-band 8-bit GeoTIFF as alpha unless told otherwise, which for RGBN imagery
    is its near-infrared band; then a pixel is nodata when each of ``bands`` holds its nodata
    value. ``pixels``: the values of ``bands`` in the window (C x h x w) when they are read
    already. Raises ``OSError`` naming the file when a read fails."""
    from rasterio.errors import NodataShadowWarning, RasterioIOError

    try:
        if not _alpha_is_data(src, bands):
            with warnings.catch_warnings():  # a nodata value and an alpha band: GDAL's order
                warnings.simplefilter("ignore", NodataShadowWarning)
                return src.dataset_mask(window=window) > 0
        if pixels is None:
            pixels = src.read(list(bands), window=window)
    except RasterioIOError as err:
        raise OSError(f"cannot read {src.name}: {err}") from err
    valid = np.zeros(pixels.shape[1:], bool)
    for values, b in zip(pixels, bands, strict=True):
        nodata = src.nodatavals[b - 1]
        if nodata is None:
            return np.ones(pixels.shape[1:], bool)
        valid |= ~np.isnan(values) if np.isnan(nodata) else values != nodata
    return valid


def read_georeference(
    path: str | os.PathLike, feature: str = "GeoTIFF outputs", bands: Sequence[int] | None = None
) -> GeoReference:
    """The :class:`GeoReference` of the raster file ``path`` (``masked``: :func:`has_nodata`
    with ``bands``). Raises ``OSError`` naming the path when rasterio cannot open it, ImportError
    (naming ``feature``) without rasterio."""
    with open_raster(path, feature) as src:
        return GeoReference(src.crs, src.transform, src.height, src.width, has_nodata(src, bands))


def valid_pixels(
    path: str | os.PathLike, window: Any = None, bands: Sequence[int] | None = None
) -> np.ndarray:
    """:func:`data_mask` of the raster file ``path``. Raises ``OSError`` naming the path."""
    with open_raster(path, "reading nodata") as src:
        return data_mask(src, window, bands)


def geotiff_profile(reference: GeoReference) -> dict[str, Any]:
    """rasterio creation options of a one-band uint8 output on ``reference``'s grid: tiled
    :data:`TILE` blocks (striped when the raster is smaller than a block), DEFLATE."""
    tiled = reference.height >= TILE and reference.width >= TILE
    profile = {
        "driver": "GTiff",
        "height": reference.height,
        "width": reference.width,
        "count": 1,
        "dtype": "uint8",
        "crs": reference.crs,
        "transform": reference.transform,
        "compress": "deflate",  # no predictor: it saves 3% on a map and costs 24% on a mask
        "tiled": tiled,
    }
    if tiled:
        profile |= {"blockxsize": TILE, "blockysize": TILE}
    return profile


@contextmanager
def open_geotiff(
    path: str | os.PathLike, reference: GeoReference, feature: str = "--format tif"
) -> Iterator[Any]:
    """An open rasterio writer (``DatasetWriter``) of a one-band uint8 GeoTIFF on
    ``reference``'s grid (:func:`geotiff_profile`), for writing windows as they are computed.

    The file is written to a temporary file beside ``path`` that replaces it when the block ends
    without an error (:func:`utils.io.atomic.atomic_path`), creating the parent folders; on an
    error it is removed and any previous ``path`` is intact. Raises ImportError (naming
    ``feature``) without rasterio, ``OSError`` for a write that fails.
    """
    rasterio = rasterio_module(feature)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with (
        atomic_path(path) as tmp,
        rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        try:
            with rasterio.open(tmp, "w", **geotiff_profile(reference)) as dst:
                yield dst
        except rasterio.errors.RasterioIOError as err:
            raise OSError(f"cannot write {path}: {err}") from err


def write_window(dst: Any, array: np.ndarray, row: int, valid: np.ndarray | None = None) -> None:
    """Write the uint8 ``array`` (h x W, full width) into the open writer ``dst`` (see
    :func:`open_geotiff`) from pixel row ``row``; where the bool ``valid`` (h x W) is false the
    pixels are written as 0 and marked invalid in the internal mask band."""
    from rasterio.windows import Window

    window = Window(0, row, array.shape[1], array.shape[0])
    if valid is not None:
        array = np.where(valid, array, np.uint8(0))
        dst.write_mask(valid.astype(np.uint8) * np.uint8(255), window=window)
    dst.write(array, 1, window=window)


def write_geotiff(
    path: str | os.PathLike,
    array: np.ndarray,
    reference: GeoReference,
    valid: np.ndarray | None = None,
) -> None:
    """Write the HxW uint8 ``array`` as a one-band GeoTIFF on ``reference``'s grid, atomically
    (:func:`open_geotiff`); ``valid`` (HxW bool or None): as :func:`write_window`. Raises
    ValueError when ``array``'s shape is not the grid's."""
    if array.shape != (reference.height, reference.width):
        raise ValueError(
            f"{path}: the array is {array.shape}, the raster grid is "
            f"{(reference.height, reference.width)} (height, width)"
        )
    with open_geotiff(path, reference) as dst:
        write_window(dst, array, 0, valid)
