"""Inference outputs for georeferenced inputs: the map and mask as GeoTIFF on the input's grid,
and building footprints (``polygons``) as GeoJSON and GeoPackage.

:class:`GeoOutputs` writes one image's outputs like :func:`utils.inference.outputs.write_outputs`
(same arguments), which it calls for the kinds it does not handle itself:

- ``format`` (:data:`FORMATS`): ``png`` writes the map and mask as PNG; ``tif`` as GeoTIFF
  (``maps/KEY.tif``, ``masks/KEY.tif``; see :mod:`utils.io.geotiff`) with the input's CRS,
  transform and size when the input is a TIFF that rasterio reads, else on a pixel grid
  without CRS; ``auto`` (the default) as GeoTIFF for georeferenced TIFF inputs (a CRS or a
  transform other than the identity) and as PNG for the others, or for all when rasterio is not
  installed (:attr:`GeoOutputs.note` then says so).
- Pixels that are nodata in every band of the input are 0 and masked in the GeoTIFFs, and never
  part of a footprint.
- ``polygons``: ``polygons/KEY.geojson`` and ``polygons/KEY.gpkg`` (see
  :mod:`utils.inference.polygons`), in the input's CRS, or in pixels when it has none.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from utils.inference.outputs import output_path, write_outputs
from utils.inference.polygons import footprints, write_geojson, write_geopackage
from utils.io.geotiff import (
    GEO_REQUIREMENTS,
    GeoReference,
    geo_module,
    has_rasterio,
    is_geotiff_name,
    rasterio_module,
    read_georeference,
    valid_pixels,
    write_geotiff,
)
from utils.io.images import write_image

FORMATS = ("auto", "png", "tif")
RASTER_KINDS = ("map", "mask")
"""The kinds :class:`GeoOutputs` writes as GeoTIFF in the ``tif`` format."""


@dataclass(frozen=True)
class GeoOptions:
    """``format`` (:data:`FORMATS`), and for ``polygons`` the ``simplify`` tolerance (map units)
    and the ``min_area`` (map units²) of :func:`utils.inference.polygons.footprints`."""

    format: str = "auto"
    simplify: float = 0.0
    min_area: float = 0.0

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"unknown format {self.format!r}; valid: {', '.join(FORMATS)}")
        if self.simplify < 0 or self.min_area < 0:
            raise ValueError(
                f"simplify and min_area must be 0 or more, got {self.simplify} and {self.min_area}"
            )


class GeoOutputs:
    """Writes each image's outputs (see the module docstring); ``sources`` maps each input's key
    to its file, whose georeferencing and nodata are read when its outputs are written;
    ``bands``: the bands the model reads as data (its ``imagery`` section's), which are never
    taken for an alpha mask (:func:`utils.io.geotiff.data_mask`).

    Raises ImportError naming the option when ``format`` is ``tif`` or ``kinds`` has
    ``polygons`` and rasterio is not installed.
    """

    def __init__(
        self,
        options: GeoOptions,
        sources: dict[str, Path],
        kinds: tuple[str, ...],
        bands: tuple[int, ...] | None = None,
    ) -> None:
        self.options = options
        self.sources = sources
        self.bands = bands
        if options.format == "tif":
            rasterio_module("--format tif")
        if "polygons" in kinds:  # checked before any prediction
            for name in ("rasterio", "shapely", "pyogrio"):
                geo_module(name, "--save polygons")
        tiffs = any(is_geotiff_name(path) for path in sources.values())
        self.rasterio = tiffs and has_rasterio()  # whether TIFF inputs are read with rasterio
        self.note = ""
        if options.format == "auto" and tiffs and not self.rasterio:
            self.note = (
                "note: TIFF inputs are written as PNG without georeferencing; for GeoTIFF "
                f"outputs install rasterio: {GEO_REQUIREMENTS}"
            )

    def reference(self, key: str, shape: tuple[int, int]) -> GeoReference:
        """The grid of ``key``'s input: its file's when it is a TIFF and rasterio is
        installed, else pixels of ``shape`` (height, width)."""
        path = self.sources[key]
        if self.rasterio and is_geotiff_name(path):
            reference = read_georeference(path, bands=self.bands)
            if (reference.height, reference.width) == shape:
                return reference
        return GeoReference.pixels(*shape)

    def needs_grid(self, key: str, kinds: tuple[str, ...]) -> bool:
        """Whether ``key``'s outputs depend on its grid (polygons, or a map or mask that may be
        GeoTIFF); if not, they are written as :func:`write_outputs` writes them, without
        rasterio."""
        if "polygons" in kinds or self.options.format == "tif":
            return True
        auto = self.options.format == "auto" and self.rasterio
        return auto and is_geotiff_name(self.sources[key])

    def as_geotiff(self, reference: GeoReference) -> bool:
        """Whether the map and mask on ``reference``'s grid are written as GeoTIFF."""
        return self.options.format == "tif" or (
            self.options.format == "auto" and reference.georeferenced
        )

    def __call__(
        self,
        out_dir: Path,
        key: str,
        kinds: tuple[str, ...],
        image: np.ndarray,
        saliency: np.ndarray,
        mask: np.ndarray | None,
    ) -> None:
        """Write ``kinds`` for ``key``; arguments as for
        :func:`utils.inference.outputs.write_outputs` (``mask`` needed for ``polygons``)."""
        if not self.needs_grid(key, kinds):
            write_outputs(out_dir, key, kinds, image, saliency, mask)
            return
        reference = self.reference(key, saliency.shape)
        valid = valid_pixels(self.sources[key], bands=self.bands) if reference.masked else None
        rasters = {"map": saliency, "mask": mask}
        for kind in RASTER_KINDS:
            if kind in kinds:
                self.write_raster(output_path(out_dir, kind, key), rasters[kind], reference, valid)
        if "polygons" in kinds:
            self.write_polygons(
                output_path(out_dir, "polygons", key), mask, saliency, reference, valid
            )
        others = tuple(kind for kind in kinds if kind not in (*RASTER_KINDS, "polygons"))
        if others:
            write_outputs(out_dir, key, others, image, saliency, mask)

    def write_raster(
        self,
        path: Path,
        array: np.ndarray,
        reference: GeoReference,
        valid: np.ndarray | None,
    ) -> None:
        """Write ``array`` at ``path`` (a ``.png`` path) as PNG, or as GeoTIFF (``.tif``)."""
        if self.as_geotiff(reference):
            write_geotiff(path.with_suffix(".tif"), array, reference, valid)
        else:
            write_image(path, array)

    def write_polygons(
        self,
        path: Path,
        mask: np.ndarray | None,
        saliency: np.ndarray,
        reference: GeoReference,
        valid: np.ndarray | None,
    ) -> None:
        """Write the footprints of ``mask`` (valid pixels only) at ``path`` (``.geojson``) and
        beside it as ``.gpkg``."""
        if mask is None:
            raise ValueError("polygons need the mask: compute it for the 'polygons' kind")
        if valid is not None:
            mask = np.where(valid, mask, np.uint8(0))
        found = footprints(mask, saliency, reference, self.options.simplify, self.options.min_area)
        write_geojson(path, found, reference)
        write_geopackage(path.with_suffix(".gpkg"), found, reference)
