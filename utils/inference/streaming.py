"""Sliding-window prediction of big rasters in bands of rows, each written as soon as it is
finished, so that memory stays bounded by the window and the raster's width, not its area.

:meth:`utils.inference.predictor.Predictor.predict_tensors` holds the whole image (3 bytes a
pixel), two float32 accumulators (8 bytes) and, for the 8-bit map, a float64 copy (8 bytes): 6.2
GiB of peak RSS for a 20000 x 20000 tile. Here (:func:`slide_rows`) the raster is read one row of
windows at a time with rasterio, and the accumulators cover only the rows that overlapping
windows still add to (at most a window plus a stride); rows that no later window touches are
divided, quantised and written into the GeoTIFF outputs (:func:`utils.io.geotiff.open_geotiff`).

The windows, their order, the blending and the arithmetic are those of ``Predictor._slide`` and
``_flip_averaged``, so the maps are identical to the in-memory path's. It applies
(:func:`streamable`) in sliding mode at ``scale`` 1 without ``post_norm`` (a resize and a min-max
normalisation need the whole map), to 3-band uint8 rasters that rasterio reads (any raster with an
``imagery`` section, read by :class:`utils.io.rasters.RasterBands`) whose map and mask are
written as GeoTIFF, when the outputs are among ``map``, ``mask`` and ``polygons``
(footprints need the whole mask: with ``polygons``, the 8-bit map and mask are kept in memory, 2
bytes a pixel, and their extraction takes about 4 more).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from utils.inference.geo_outputs import GeoOutputs
from utils.inference.outputs import OUTPUT_MARKER, output_path
from utils.inference.predictor import Predictor
from utils.inference.windows import blend_weights, window_grid
from utils.io.geotiff import (
    GeoReference,
    data_mask,
    is_geotiff_name,
    open_geotiff,
    rasterio_module,
    write_window,
)
from utils.io.rasters import RasterBands
from utils.metrics.prepare import prob_to_uint8
from utils.preprocessing import official_gain

STREAMED_KINDS = frozenset({"map", "mask", "polygons"})
GDAL_CACHE_MB = 256
"""GDAL's block cache while streaming (its default, 5% of the RAM, holds finished tiles of
the outputs for nothing: 2.0 instead of 1.0 GiB of peak RSS at 20000 x 20000 with 23 GiB)."""
Rows = Callable[[int, int], np.ndarray]
"""``rows(start, count)``: rows ``start .. start + count`` of a raster as count x W x C uint8."""


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


def slide_rows(
    predictor: Predictor,
    rows: Rows,
    shape: tuple[int, int],
    emit: Callable[[int, torch.Tensor], None],
    on_windows: Callable[[int], None] | None = None,
) -> None:
    """Sliding-window probabilities of an image of ``shape`` (height, width) read by ``rows``,
    passed to ``emit(start, probs)`` in consecutive bands (``probs``: rows ``start ..`` of the
    HxW float32 map, on the predictor's device) as soon as no later window adds to them.

    ``on_windows(n)`` is called after each batch of ``n`` windows. Raises ``OSError`` when a
    read fails.
    """
    opts, device = predictor.options, predictor.device
    height, width = shape
    (wh, ww), corners = window_grid(height, width, opts.window, opts.window_stride)
    weight = blend_weights((wh, ww), opts.blend, device)
    gain = _gain(predictor, rows, shape)
    views = (False, True) if opts.flip else (False,)
    totals = {view: torch.zeros((0, width), device=device) for view in views}
    sums = {view: torch.zeros((0, width), device=device) for view in views}
    columns: dict[int, list[int]] = {}  # window row -> its windows' x, in Predictor's order
    for y, x in corners:
        columns.setdefault(y, []).append(x)
    starts, done = list(columns), 0
    for i, y in enumerate(starts):
        band = torch.from_numpy(rows(y, wh)).to(device)
        grow = y + wh - done - totals[False].shape[0]
        for view in views:
            if grow > 0:
                totals[view] = torch.cat([totals[view], torch.zeros((grow, width), device=device)])
                sums[view] = torch.cat([sums[view], torch.zeros((grow, width), device=device)])
            pixels = band.flip(1) if view else band
            for chunk in _chunks(columns[y], opts.batch_size):
                windows = torch.stack([pixels[:, x : x + ww] for x in chunk])
                probs = predictor.forward(
                    windows, None if gain is None else gain.expand(len(chunk))
                )
                for x, prob in zip(chunk, probs, strict=True):
                    totals[view][y - done : y - done + wh, x : x + ww].addcmul_(prob, weight)
                    sums[view][y - done : y - done + wh, x : x + ww] += weight
                if on_windows:
                    on_windows(len(chunk))
        finished = (starts[i + 1] if i + 1 < len(starts) else height) - done
        emit(done, _blend_rows(totals, sums, finished))
        for view in views:
            totals[view], sums[view] = totals[view][finished:], sums[view][finished:]
        done += finished


def _blend_rows(
    totals: dict[bool, torch.Tensor], sums: dict[bool, torch.Tensor], count: int
) -> torch.Tensor:
    """The first ``count`` rows of the blended map: ``total / weight`` of the image, averaged
    with the mirrored image's mirrored back when there is one (as ``Predictor`` computes it)."""
    prob = totals[False][:count] / sums[False][:count]
    if True in totals:
        mirrored = totals[True][:count] / sums[True][:count]
        prob = (prob + mirrored.flip(-1)) / 2
    return prob


def _chunks(items: list[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _gain(predictor: Predictor, rows: Rows, shape: tuple[int, int]) -> torch.Tensor | None:
    """The official normalisation's gain of the whole image (its maximum, read band by band),
    as a 1-element float32 tensor on the device; None for the ImageNet normalisation."""
    if predictor.normalisation != "official":
        return None
    step = max(1, predictor.options.window)
    peak = max(int(rows(y, min(step, shape[0] - y)).max()) for y in range(0, shape[0], step))
    return torch.tensor([official_gain(float(peak))], dtype=torch.float32, device=predictor.device)


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
        bands = None if imagery is None else files.enter_context(RasterBands(path, imagery))

        def rows(start: int, count: int) -> np.ndarray:
            if bands is not None:
                return bands.read(start, 0, count, src.width)
            window = Window(0, start, src.width, count)
            try:
                return np.ascontiguousarray(src.read((1, 2, 3), window=window).transpose(1, 2, 0))
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
            slide_rows(predictor, rows, src.shape, emit, bar.update)
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
