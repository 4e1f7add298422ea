"""Building footprints: one polygon per building with holes, areas equal to the mask's, the
min-area and simplify options, GeoJSON and GeoPackage files in the raster's CRS."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from tests.inference.test_geotiff_outputs import (
    NODATA_ROWS,
    ROTATED,
    TRANSFORM,
    red_is_probability,
    run_cli,
    write_input_tif,
)
from utils.inference.polygons import footprints
from utils.io.geotiff import GeoReference

rasterio = pytest.importorskip("rasterio")
shapely = pytest.importorskip("shapely")
from rasterio.transform import xy  # noqa: E402

PIXEL_AREA = 0.25  # TRANSFORM's 0.5 m pixels
NODATA = 220
"""The nodata value of the CLI test's input, also the red (probability) of its buildings."""


def buildings_mask() -> np.ndarray:
    """A 40x50 0/255 mask: a 12x14 courtyard building with a 4x5 hole, a 3x3 shed, and an
    L-shaped building touching the shed at a corner only (so a separate 4-connected region)."""
    mask = np.zeros((40, 50), np.uint8)
    mask[5:17, 5:19] = 255
    mask[9:13, 9:14] = 0  # the courtyard
    mask[25:28, 30:33] = 255  # the shed
    mask[28:36, 33:36] = 255  # the L: vertical bar, touching the shed at (28, 33) / (27, 32)
    mask[33:36, 36:44] = 255  # the L: horizontal bar
    return mask


def test_one_polygon_per_building_with_its_hole_area_and_mean():
    mask = buildings_mask()
    saliency = np.where(mask > 0, 200, 10).astype(np.uint8)
    saliency[25:28, 30:33] = 240
    reference = GeoReference("EPSG:32631", TRANSFORM, 40, 50)
    found = footprints(mask, saliency, reference)
    assert len(found) == 3
    by_area = sorted(found, key=lambda f: f.area)
    shed, courtyard, ell = by_area[0], by_area[2], by_area[1]
    assert shed.area == pytest.approx(9 * PIXEL_AREA)
    assert courtyard.area == pytest.approx((12 * 14 - 4 * 5) * PIXEL_AREA)
    assert ell.area == pytest.approx((8 * 3 + 3 * 8) * PIXEL_AREA)
    assert len(courtyard.geometry.interiors) == 1  # the hole is kept
    assert shapely.Polygon(courtyard.geometry.interiors[0]).area == pytest.approx(20 * PIXEL_AREA)
    assert shed.mean_prob == pytest.approx(240 / 255) and ell.mean_prob == pytest.approx(200 / 255)
    (x0, x1), (y0, y1) = xy(TRANSFORM, [5, 17], [5, 19], offset="ul")
    assert courtyard.geometry.bounds == pytest.approx((x0, y1, x1, y0))
    assert all(f.geometry.is_valid for f in found)


def test_min_area_drops_small_buildings_and_simplify_keeps_holes():
    mask = buildings_mask()
    reference = GeoReference("EPSG:32631", TRANSFORM, 40, 50)
    saliency = mask.copy()
    kept = footprints(mask, saliency, reference, min_area=10 * PIXEL_AREA)
    assert sorted(round(f.area / PIXEL_AREA) for f in kept) == [48, 148]
    disc = np.zeros((80, 80), np.uint8)
    cv2.circle(disc, (40, 40), 30, 255, -1)
    cv2.circle(disc, (40, 40), 10, 0, -1)
    grid = GeoReference("EPSG:32631", TRANSFORM, 80, 80)
    exact = footprints(disc, disc, grid)[0]
    simple = footprints(disc, disc, grid, simplify=1.0)[0]  # 2 pixels
    count = shapely.get_num_coordinates
    assert count(simple.geometry) < count(exact.geometry) / 3
    assert len(simple.geometry.interiors) == 1 and simple.geometry.is_valid
    assert simple.area == pytest.approx(exact.area, rel=0.05)


def test_empty_mask_gives_no_footprint():
    empty = np.zeros((8, 9), np.uint8)
    assert footprints(empty, empty, GeoReference.pixels(8, 9)) == []
    with pytest.raises(ValueError, match=r"\(8, 10\)"):
        footprints(empty, empty, GeoReference.pixels(8, 10))


def read_geopackage(path) -> tuple[list[tuple], str | None]:
    """The ``(polygon, area, mean_prob)`` of each feature of the ``footprints`` layer, as GDAL
    reads them (pyogrio), and the layer's CRS."""
    pyogrio = pytest.importorskip("pyogrio")
    info = pyogrio.read_info(path, layer="footprints")
    assert info["driver"] == "GPKG" and info["geometry_type"] == "Polygon"
    _, _, geometry, (area, mean_prob) = pyogrio.raw.read(path, layer="footprints")
    rows = list(zip(shapely.from_wkb(geometry), area, mean_prob, strict=True))
    return rows, info["crs"]


@pytest.mark.parametrize(("mode", "transform"), [("single", TRANSFORM), ("sliding", ROTATED)])
def test_cli_polygons_in_the_tile_with_the_mask_area(
    checkpoint,
    tmp_path,
    monkeypatch,
    mode,
    transform,
):
    red_is_probability(monkeypatch)
    image = np.zeros((40, 50, 3), np.uint8)
    image[..., 1] = 90
    image[..., 0] = buildings_mask() // 255 * 220
    image[37:40, 0:3, 0] = 220  # a building on the tile's corner
    image[:NODATA_ROWS] = NODATA  # nodata rows (cutting the courtyard building's first row)
    write_input_tif(tmp_path / "in" / "tile.tif", image, transform, nodata=NODATA)
    out = tmp_path / "out"
    args = ["--mode", mode, "--window", "32", "--save", "mask,polygons", "--simplify", "0"]
    assert run_cli("-m", checkpoint, "-i", tmp_path / "in", "-o", out, *args) == 0
    collection = json.loads((out / "polygons" / "tile.geojson").read_text())
    assert collection["crs"]["properties"]["name"] == "urn:ogc:def:crs:EPSG::32631"
    shapes = [shapely.geometry.shape(f["geometry"]) for f in collection["features"]]
    assert len(shapes) == 4  # no footprint of the nodata rows (whose red is 220 too)
    with rasterio.open(out / "masks" / "tile.tif") as src:
        rows, cols = [0, 0, src.height, src.height], [0, src.width, src.width, 0]
        tile = shapely.Polygon(np.column_stack(xy(src.transform, rows, cols, offset="ul")))
        mask_area = (src.read(1) == 255).sum() * abs(src.transform.determinant)
    assert all(tile.buffer(1e-6).contains(shape) for shape in shapes)
    areas = [f["properties"]["area"] for f in collection["features"]]
    assert sum(areas) == pytest.approx(mask_area, rel=0.01)
    assert sum(shape.area for shape in shapes) == pytest.approx(mask_area, rel=0.01)
    assert all(
        f["properties"]["mean_prob"] == pytest.approx(220 / 255, abs=1e-3)
        for f in collection["features"]
    )
    rows, crs = read_geopackage(out / "polygons" / "tile.gpkg")
    assert crs == "EPSG:32631" and len(rows) == 4
    for (polygon, area, _), shape in zip(rows, shapes, strict=True):
        assert polygon.equals(shape) and area == pytest.approx(shape.area)


def test_cli_min_area_and_pixel_coordinates_without_georeferencing(
    checkpoint,
    tmp_path,
    monkeypatch,
):
    red_is_probability(monkeypatch)
    image = np.zeros((40, 50, 3), np.uint8)
    image[..., 0] = buildings_mask()  # BGR for cv2: red is the last channel
    cv2.imwrite(str(tmp_path / "photo.png"), image[:, :, ::-1])
    out = tmp_path / "out"
    args = ["--save", "polygons", "--min-area", "10"]
    assert run_cli("-m", checkpoint, "-i", tmp_path / "photo.png", "-o", out, *args) == 0
    collection = json.loads((out / "polygons" / "photo.geojson").read_text())
    assert collection["coordinates"] == "pixels" and "crs" not in collection
    areas = sorted(f["properties"]["area"] for f in collection["features"])
    assert areas == [48, 148]  # the 9-pixel shed is dropped
    shapes = [shapely.geometry.shape(f["geometry"]) for f in collection["features"]]
    assert all(shapely.box(0, 0, 50, 40).contains(shape) for shape in shapes)
    assert not (out / "maps").exists()  # only what --save asks
    rows, crs = read_geopackage(out / "polygons" / "photo.gpkg")
    assert crs is None and len(rows) == 2


def test_cli_refuses_polygon_options_without_polygons(checkpoint, tmp_path):
    with pytest.raises(SystemExit):
        run_cli("-m", checkpoint, "-i", tmp_path, "-o", tmp_path / "o", "--min-area", "3")
