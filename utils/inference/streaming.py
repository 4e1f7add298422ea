"""Sliding-window prediction of big rasters in bands of rows, each written as soon as it is
finished, so that memory stays bounded by the window and the raster's width, not its area.

In memory, :meth:`utils.inference.predictor.Predictor.predict_tensors` holds the whole image (3
bytes a pixel), its map (4 bytes) and, for the 8-bit map, a float64 copy (8 bytes). Here the
raster is read with rasterio one row of windows at a time by the same
:func:`utils.inference.sliding.slide_rows`, and the rows it finishes are quantised and written
into the GeoTIFF outputs (:func:`utils.io.geotiff.open_geotiff`) at once, so the maps are those
of the in-memory path. It applies (:func:`streamable`) in sliding mode at ``scale`` 1 without
``post_norm`` (a resize and a min-max normalisation need the whole map), to 3-band uint8 rasters
that rasterio reads (any raster with an ``imagery`` section, read by
:class:`utils.io.rasters.RasterBands`) whose map and mask are written as GeoTIFF, when the
outputs are among ``map``, ``mask`` and ``polygons`` (footprints need the whole mask: with
``polygons``, the 8-bit map and mask are kept in memory, 2 bytes a pixel, and their extraction
takes about 4 more).
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from utils.inference.geo_outputs import GeoOutputs
from utils.inference.outputs import OUTPUT_MARKER, output_path
from utils.inference.predictor import Predictor
from utils.inference.sliding import slide_rows
from utils.io.geotiff import (
    GeoReference,
    data_mask,
    is_geotiff_name,
    open_geotiff,
    rasterio_module,
    write_window,
)
from utils.io.rasters import RasterBands, interleave_bands
from utils.metrics.prepare import prob_to_uint8

STREAMED_KINDS = frozenset({"map", "mask", "polygons"})
GDAL_CACHE_MB = 256
"""GDAL's block cache while streaming (its default, 5% of the RAM, holds finished tiles of
the outputs for nothing: 2.0 instead of 1.0 GiB of peak RSS at 20000 x 20000 with 23 GiB)."""


def streamable(predictor: Predictor, geo: GeoOutputs, kinds: tuple[str, ...], path: Path) -> bool:
    """Whether ``path``'s outputs are predicted and written band by band (see the module
    docstring); False for a file rasterio cannot open (the in-memory path reports it)."""
    opts = predictor.options
    if opts.mode != "sliding" or opts.scale != 1 or opts.post_norm or not geo.rasterio:
        return False
    if not set(kinds) <= STREAMED_KINDS or not is_geotiff_name(path):
        return False
    rasterio = rasterio_module("streaming")
    try:
        with rasterio.open(path) as src:
            layout = (src.count, src.dtypes[0])
            reference = GeoReference(src.crs, src.transform, src.height, src.width)
    except rasterio.errors.RasterioIOError:
        return False
    readable = predictor.imagery is not None or layout == (3, "uint8")
    return readable and geo.as_geotiff(reference)


def stream_file(
    predictor: Predictor,
    item: tuple[str, Path],
    out_dir: Path,
    kinds: tuple[str, ...],
    threshold: float,
    geo: GeoOutputs,
) -> None:
    """Predict the raster of ``item`` (key, path) band by band and write its ``kinds`` (see the
    module docstring). Raises ``OSError`` naming the file when it cannot be read or written."""
    rasterio = rasterio_module("streaming")
    key, path = item
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB):
        try:
            src = rasterio.open(path)
        except rasterio.errors.RasterioIOError as err:
            raise OSError(f"cannot read {path}: {err}") from err
        _stream(predictor, src, (key, path), out_dir, kinds, threshold, geo)


def _stream(
    predictor: Predictor,
    src: Any,
    item: tuple[str, Path],
    out_dir: Path,
    kinds: tuple[str, ...],
    threshold: float,
    geo: GeoOutputs,
) -> None:
    """:func:`stream_file` of the open rasterio dataset ``src``."""
    from rasterio.windows import Window

    rasterio = rasterio_module("streaming")
    key, path = item
    with src, ExitStack() as files:
        reference = geo.reference(key, src.shape)
        outputs = {
            kind: files.enter_context(
                open_geotiff(output_path(out_dir, kind, key).with_suffix(".tif"), reference)
            )
            for kind in ("map", "mask")
            if kind in kinds
        }
        keep = "polygons" in kinds
        full = {kind: np.zeros(src.shape, np.uint8) for kind in ("map", "mask")} if keep else {}
        imagery = predictor.imagery
        reader = None if imagery is None else files.enter_context(RasterBands(path, imagery))

        def rows(start: int, count: int) -> np.ndarray:
            if reader is not None:
                return reader.read(start, 0, count, src.width)
            window = Window(0, start, src.width, count)
            try:
                return interleave_bands(src.read((1, 2, 3), window=window))
            except rasterio.errors.RasterioIOError as err:
                raise OSError(f"cannot read {path}: {err}") from err

        def emit(start: int, prob: torch.Tensor) -> None:
            bands = {
                "map": prob_to_uint8(prob).cpu().numpy(),
                "mask": (prob >= threshold).to(torch.uint8).mul_(255).cpu().numpy(),
            }
            window = Window(0, start, src.width, prob.shape[0])
            valid = data_mask(src, window, geo.bands) if reference.masked else None
            if valid is not None:  # nodata: 0 in the files and never part of a footprint
                bands = {kind: np.where(valid, band, np.uint8(0)) for kind, band in bands.items()}
            for kind, dst in outputs.items():
                write_window(dst, bands[kind], start, valid)
            for kind, array in full.items():
                array[start : start + prob.shape[0]] = bands[kind]

        with _window_bar(predictor, src.shape) as bar:
            slide_rows(predictor, rows, src.shape, emit, bar.update, predictor.options.flip)
    if keep:
        target = output_path(out_dir, "polygons", key)
        geo.write_polygons(target, full["mask"], full["map"], reference, None)


def _window_bar(predictor: Predictor, shape: tuple[int, int]) -> tqdm:
    """A progress bar over the windows of an image of ``shape``."""
    windows = predictor.count_windows(*shape)
    return tqdm(total=windows, unit="win", desc="windows", leave=False, disable=None)


def stream_files(
    predictor: Predictor,
    items: list[tuple[str, Path]],
    out_dir: Path,
    kinds: tuple[str, ...],
    threshold: float,
    geo: GeoOutputs,
) -> tuple[int, list[str]]:
    """:func:`stream_file` for each ``(key, path)`` of ``items``; a file that cannot be read or
    written, or that runs out of GPU memory, is skipped. Returns ``(images written, failure
    messages naming the files)``, like :func:`utils.inference.files.predict_files`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / OUTPUT_MARKER).touch()
    written, failures = 0, []
    for key, path in items:
        try:
            stream_file(predictor, (key, path), out_dir, kinds, threshold, geo)
            written += 1
        except OSError as err:
            failures.append(f"{path}: {err}")
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            failures.append(f"{path}: out of GPU memory; use a smaller --window or --batch-size")
    return written, failures
