"""Building footprints from a mask: one polygon per 4-connected region of foreground pixels,
holes kept, in map coordinates, written as GeoJSON and GeoPackage.

- Shapes: the mask's regions are labelled (``scipy.ndimage.label``, 4-connected like
  ``rasterio.features.shapes``) and polygonised by ``shapes`` through the raster's affine
  transform, in strips of regions (:data:`STRIP_ROWS`) rather than all at once, since
  ``shapes`` copies what it is given (inference.py's peak RSS for the map, mask and polygons
  of a 20000 x 20000 tile with 48,828 buildings: 3.3 GiB, 9.3 GiB all at once): one polygon
  per region, its edges on the pixel borders, with a hole for each enclosed background region
  (or building inside a courtyard).
- ``min_area`` (map units²): regions of a smaller area (pixel count times the pixel's area) are
  dropped. ``simplify`` (map units): Douglas-Peucker tolerance, topology preserved (shapely's
  ``simplify(preserve_topology=True)``: rings stay valid, holes are kept); 0 keeps the exact
  pixel outlines, whose areas sum to the mask's area.
- Properties: ``area`` (map units², of the written polygon) and ``mean_prob`` (the mean of the
  8-bit map over the region's pixels, / 255, in 0..1).
- GeoJSON (:func:`write_geojson`): coordinates in the raster's CRS, named by a ``crs`` member
  (``urn:ogc:def:crs:EPSG::<code>``, or the CRS's WKT when it has no EPSG code), the form GDAL
  (so QGIS) reads and writes for a CRS other than WGS84 (RFC 7946 dropped ``crs`` and asks for
  WGS84 longitude/latitude: reproject with ``ogr2ogr -t_srs EPSG:4326`` where that is needed).
  A raster without georeferencing gives pixel coordinates (x = column, y = row, origin at the
  top-left corner), which the file says in its ``crs`` member's place: ``"coordinates":
  "pixels"``, with no ``crs``.
- GeoPackage (:func:`write_geopackage`): the same features in an OGC GeoPackage, a
  ``footprints`` layer of Polygons in the raster's CRS, written by GDAL's GPKG driver through
  pyogrio (with its spatial index).
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from utils.io.atomic import atomic_path, write_text
from utils.io.geotiff import GeoReference, geo_module, rasterio_module

FEATURE = "--save polygons"
TABLE = "footprints"
"""The feature table of the GeoPackage outputs."""
STRIP_ROWS = 512
"""Footprints are polygonised in strips of regions whose top rows span this many rows (a strip
reaches down to its regions' lowest row), to bound the copies ``shapes`` makes."""


@dataclass(frozen=True)
class Footprint:
    """One building: ``geometry`` (a shapely Polygon in map coordinates), ``area`` (map
    units²) and ``mean_prob`` (0..1)."""

    geometry: Any
    area: float
    mean_prob: float


def footprints(
    mask: np.ndarray,
    saliency: np.ndarray,
    reference: GeoReference,
    simplify: float = 0.0,
    min_area: float = 0.0,
) -> list[Footprint]:
    """The footprints of the HxW ``mask`` (foreground: non-zero) with their mean of the HxW
    uint8 ``saliency``, on ``reference``'s grid, in the order of their first pixel (row by
    row); see the module docstring for ``simplify`` and ``min_area``. Raises ValueError for
    arrays of another shape than the grid, ImportError without rasterio or shapely."""
    rasterio = rasterio_module(FEATURE)
    grid = (reference.height, reference.width)
    if mask.shape != grid or saliency.shape != grid:
        raise ValueError(
            f"mask {mask.shape} and map {saliency.shape} must both have the raster's "
            f"(height, width) {grid}"
        )
    labels, _ = ndimage.label(mask != 0, output=np.int32)  # 4-connected, like shapes()
    boxes = ndimage.find_objects(labels)  # labels are numbered in the order of their top row
    found: list[Footprint] = []
    with rasterio.Env():  # one GDAL environment for all the shapes() calls (else one each)
        first = 1
        while first <= len(boxes):
            top = boxes[first - 1][0].start
            last = first
            while last < len(boxes) and boxes[last][0].start < top + STRIP_ROWS:
                last += 1
            bottom = max(box[0].stop for box in boxes[first - 1 : last])
            rows = slice(top, bottom)
            found += _strip_footprints(labels[rows], saliency[rows], (first, last), top, reference)
            first = last + 1
    kept = [item for item in found if item.area >= min_area]  # exact: pixels x pixel area
    return [_simplified(item, simplify) for item in kept] if simplify > 0 else kept


def _strip_footprints(
    labels: np.ndarray,
    saliency: np.ndarray,
    span: tuple[int, int],
    top: int,
    reference: GeoReference,
) -> list[Footprint]:
    """The exact footprints of the regions labelled ``span`` (first, last; inclusive) in the
    rows of ``labels`` (and ``saliency``) that start at row ``top`` of the raster."""
    import shapely
    from rasterio.features import shapes

    first, last = span
    selected = (labels >= first) & (labels <= last)
    index = labels[selected] - first
    pixels = np.bincount(index, minlength=last - first + 1)
    sums = np.bincount(index, weights=saliency[selected], minlength=last - first + 1)
    corner = _shifted(reference.transform, top, 0)
    regions = sorted(
        ((int(value), geometry) for geometry, value in shapes(labels, selected, transform=corner)),
        key=lambda pair: pair[0],
    )
    found = []
    for label, geometry in regions:
        polygon = shapely.geometry.shape(geometry)
        i = label - first
        found.append(Footprint(polygon, float(polygon.area), float(sums[i]) / (255 * pixels[i])))
    return found


def _simplified(item: Footprint, tolerance: float) -> Footprint:
    """``item`` with its polygon simplified (topology preserved) and its area updated."""
    polygon = item.geometry.simplify(tolerance, preserve_topology=True)
    return Footprint(polygon, float(polygon.area), item.mean_prob)


def _shifted(transform: Any, row: int, col: int) -> Any:
    """The affine transform of the pixel grid that starts at (``row``, ``col``) of
    ``transform``'s (written out: affine 3 deprecates ``*`` between transforms)."""
    from affine import Affine

    t = transform
    return Affine(t.a, t.b, t.c + t.a * col + t.b * row, t.d, t.e, t.f + t.d * col + t.e * row)


def crs_member(reference: GeoReference) -> dict[str, Any]:
    """The top-level members of a GeoJSON FeatureCollection that name its coordinates: a
    ``crs`` (see the module docstring), or ``"coordinates": "pixels"`` without georeferencing."""
    crs = reference.crs
    if not reference.georeferenced:
        return {"coordinates": "pixels"}
    if crs is None:  # a transform without a CRS: map units of an unknown system
        return {}
    code = crs.to_epsg()
    name = f"urn:ogc:def:crs:EPSG::{code}" if code else crs.to_wkt()
    return {"crs": {"type": "name", "properties": {"name": name}}}


def feature_collection(found: list[Footprint], reference: GeoReference) -> dict[str, Any]:
    """A GeoJSON FeatureCollection of ``found`` (ids from 1, properties ``area`` and
    ``mean_prob``) with :func:`crs_member`'s members."""
    import shapely

    features = [
        {
            "type": "Feature",
            "id": i,
            "properties": {"area": item.area, "mean_prob": round(item.mean_prob, 6)},
            "geometry": json.loads(shapely.to_geojson(item.geometry)),
        }
        for i, item in enumerate(found, start=1)
    ]
    return {"type": "FeatureCollection", **crs_member(reference), "features": features}


def write_geojson(path: str | os.PathLike, found: list[Footprint], reference: GeoReference) -> None:
    """Write :func:`feature_collection` to ``path`` atomically (compact JSON, parent folders
    created)."""
    text = json.dumps(feature_collection(found, reference), separators=(",", ":"))
    write_text(path, text + "\n")


def write_geopackage(
    path: str | os.PathLike, found: list[Footprint], reference: GeoReference
) -> None:
    """Write ``found`` as the ``footprints`` layer (``fid``, ``geom`` Polygon, ``area``,
    ``mean_prob``) of a new GeoPackage at ``path`` in ``reference``'s CRS (none: GDAL's undefined
    Cartesian SRS), with pyogrio (GDAL's GPKG driver), atomically (parent folders created).
    Raises ImportError without pyogrio, ``OSError`` naming the path when GDAL cannot write it."""
    import shapely

    pyogrio = geo_module("pyogrio", FEATURE)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    geometry = np.array([shapely.to_wkb(item.geometry) for item in found], dtype=object)
    fields = [
        np.array([item.area for item in found], np.float64),
        np.array([item.mean_prob for item in found], np.float64),
    ]
    crs = None if reference.crs is None else reference.crs.to_wkt()
    with atomic_path(path) as tmp, warnings.catch_warnings():
        # GDAL warns that the temporary name does not end in .gpkg; the file gets its name after
        warnings.filterwarnings("ignore", "The filename extension should be", RuntimeWarning)
        warnings.filterwarnings("ignore", "'crs' was not provided", UserWarning)  # pixels
        try:
            pyogrio.raw.write(
                tmp, geometry, fields, ["area", "mean_prob"], layer=TABLE, driver="GPKG",
                geometry_type="Polygon", crs=crs,
            )  # fmt: skip
        except pyogrio.errors.DataSourceError as err:
            raise OSError(f"cannot write {path}: {err}") from err
