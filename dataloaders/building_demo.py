"""Synthetic aerial building dataset, generated on first use in the Inria layout (no download).

Layout (that of the Inria Aerial Image Labeling dataset)::

    <data_dir>/AerialImageDataset/train/images/<city><n>.tif   RGB, tile_size x tile_size, uint8
    <data_dir>/AerialImageDataset/train/gt/<city><n>.tif       single channel uint8, 0 or 255
    <data_dir>/AerialImageDataset/test/images/<city><n>.tif    RGB, no gt (as in Inria)

The cities are ``CITIES`` ("austin", "vienna"). ``num_tiles`` training tiles are split between
them (``city_tile_counts``), numbered 1..k per city, so that with the default 6 per city tiles
1..5 (Inria's usual validation tiles) and at least one training tile exist per city. Each city
also has one test tile, numbered k + 1 (a tile of its own, not a copy of a training tile). All
TIFFs are uncompressed GeoTIFFs, georeferenced as the Inria tiles are: a UTM CRS per city
(:data:`CITY_GRIDS`), 0.3 m pixels, tiles side by side in a row from the city's origin (tile
``n`` starts ``(n - 1) * tile_size`` pixels east of it); read them with OpenCV (BGR), any TIFF
reader, or rasterio / GDAL / QGIS for the georeferencing. The masks are 255 exactly on roof
pixels and 0 elsewhere (shadows, trees, roads and paved lots are background).

Content, at a fixed ground resolution (buildings 15..80 px whatever the tile size, which only
sets the area covered): a grass / dry grass / soil ground with low-frequency variation and
noise; paved lots (asphalt or concrete, some with parking lines); straight, diagonal and curved
asphalt roads, some with pavements and dashed centre lines; tree canopies in clusters, along
roads and touching roofs; rectangular and L-shaped buildings at random or road-aligned
orientations with roofs from a realistic palette (red/brown tiles, dark grey, grey close to the
asphalt, light concrete), gabled roofs shaded by the sun in two halves with a ridge, flat roofs
with a parapet and rooftop boxes, and a soft cast shadow away from the sun. "austin" is
suburban (smaller houses, more trees and curved roads), "vienna" denser (larger buildings, grid
roads, more tiles and concrete). Most tiles have buildings on about 10..28 % of their pixels,
some are sparse (2..6 %). Every tile is drawn from its own seed ``[TILE_CONTENT,
city_index, n]``, so the data is the same on every run and machine and each tile is independent
of the others (changing ``num_tiles`` adds or removes tiles, it does not change them).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import cv2
import numpy as np
import tifffile

from dataloaders.generated import ensure_generated

BUILDING_DEMO_VERSION = 2  # of the files (generated data of another version is replaced)
TILE_CONTENT = 1
"""The version of the tiles' content, part of their seeds: version 2 of the files (georeferenced
GeoTIFFs) holds the pixels of version 1."""
CITIES = ("austin", "vienna")
PIXEL_SIZE = 0.3
"""Ground sampling distance of the demo tiles in metres (that of the Inria dataset)."""
CITY_GRIDS = {  # city: (EPSG code of its UTM zone, easting, northing of tile 1's top-left corner)
    "austin": (32614, 620_000.0, 3_350_000.0),  # UTM 14N, central Austin
    "vienna": (32633, 600_000.0, 5_340_000.0),  # UTM 33N, central Vienna
}

# roof classes: (colours RGB, probability of a gabled roof)
_ROOFS = (
    (((160, 74, 54), (142, 64, 50), (178, 100, 74), (150, 86, 62)), 0.85),  # red tiles
    (((112, 80, 62), (98, 72, 60), (128, 98, 78)), 0.7),  # brown
    (((70, 72, 78), (56, 58, 64), (84, 86, 92)), 0.6),  # dark grey
    (((112, 113, 116), (122, 121, 118), (104, 106, 110)), 0.3),  # grey, close to asphalt
    (((196, 192, 184), (212, 208, 198), (176, 175, 170)), 0.05),  # light concrete
)
_STYLES = {
    "austin": {
        "density": (0.10, 0.22),
        "sparse": 0.3,
        "size_beta": (1.6, 2.6),
        "l_shape": 0.35,
        "roads": (1, 4),
        "curved": 0.5,
        "grid": 0.5,
        "clusters": (5, 14),
        "height": (3.0, 9.0),
        "roofs": (0.15, 0.25, 0.3, 0.15, 0.15),
        "dry": 0.5,
    },
    "vienna": {
        "density": (0.14, 0.28),
        "sparse": 0.15,
        "size_beta": (2.4, 1.8),
        "l_shape": 0.4,
        "roads": (2, 5),
        "curved": 0.15,
        "grid": 0.85,
        "clusters": (2, 8),
        "height": (5.0, 14.0),
        "roofs": (0.4, 0.1, 0.12, 0.18, 0.2),
        "dry": -0.5,
    },
}
_PAD = 128  # margin of the occupancy grid, for buildings crossing the tile border


def city_tile_counts(num_tiles: int) -> dict[str, int]:
    """Number of training tiles per city (the first cities get the remainder)."""
    base, extra = divmod(num_tiles, len(CITIES))
    return {city: base + (i < extra) for i, city in enumerate(CITIES)}


def _smooth(rng: np.random.Generator, size: int, cell: float) -> np.ndarray:
    """size x size float32 smooth noise (zero mean, unit std) with features about ``cell`` px."""
    n = max(int(size / cell), 1) + 3
    field = cv2.resize(
        rng.standard_normal((n, n)).astype(np.float32), (size, size), interpolation=cv2.INTER_CUBIC
    )
    field -= field.mean()
    return field / max(float(field.std()), 1e-6)


def _axes(phi: float) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors along ``phi`` and across it (turned by +90 degrees)."""
    return np.array([np.cos(phi), np.sin(phi)]), np.array([-np.sin(phi), np.cos(phi)])


def _rect(cx: float, cy: float, a: float, b: float, phi: float) -> np.ndarray:
    """4x2 corners of a rectangle centred on (cx, cy), half sizes a (along phi) and b."""
    d1, d2 = _axes(phi)
    signs = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]])
    return np.array([cx, cy]) + signs[:, :1] * a * d1 + signs[:, 1:] * b * d2


def _pixels(points: np.ndarray) -> np.ndarray:
    """Points rounded to int32 pixel coordinates, as OpenCV draws them."""
    return np.round(points).astype(np.int32)


def _fill(image: np.ndarray, polygon: np.ndarray, colour: object) -> None:
    cv2.fillPoly(image, [_pixels(polygon)], colour)


def _segment(image: np.ndarray, p0: np.ndarray, p1: np.ndarray, colour: object) -> None:
    """A 1 px line from ``p0`` to ``p1`` (rounded to pixels)."""
    cv2.line(image, tuple(np.round(p0).astype(int)), tuple(np.round(p1).astype(int)), colour, 1)


def _darkening(shadow: np.ndarray, strength: float) -> np.ndarray:
    """HxWx1 float32 factor that darkens by ``strength`` where the uint8 ``shadow`` is 255."""
    return (1 - np.float32(strength / 255) * shadow.astype(np.float32))[:, :, None]


def _ground(rng: np.random.Generator, size: int, style: dict) -> np.ndarray:
    """size x size x 3 float32 ground: grass, dry grass and soil with low-frequency variation."""
    grass, dry, soil = (
        (np.array(c) + rng.uniform(-10, 10, 3)).astype(np.float32)
        for c in ((84, 110, 58), (148, 140, 98), (138, 116, 90))
    )
    small = max(size // 4, 16)  # the low-frequency part is drawn at a quarter of the size
    w_dry = 1 / (1 + np.exp(-(1.8 * _smooth(rng, small, 40) + style["dry"] + rng.normal(0, 0.5))))
    w_soil = np.clip((_smooth(rng, small, 17.5) - 1.2) * 1.5, 0, 1)
    image = grass + w_dry[:, :, None] * (dry - grass)
    image += w_soil[:, :, None] * (soil - image)
    image *= (1 + 0.07 * _smooth(rng, small, 9))[:, :, None]
    image = cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR)
    return image * (1 + 0.05 * _smooth(rng, size, 4))[:, :, None]


def _roads(
    rng: np.random.Generator, image: np.ndarray, style: dict, count: int, theta0: float
) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray, float]]]:
    """Draw ``count`` roads on ``image``; return their mask and (points, tangents, half width)."""
    size = image.shape[0]
    mask = np.zeros((size, size), np.uint8)
    roads = []
    for _ in range(count):
        centre = rng.uniform(0.1 * size, 0.9 * size, 2)
        if rng.random() < style["curved"]:  # quadratic Bezier between two far points
            a = rng.uniform(0, 2 * np.pi)
            ends = centre + 0.9 * size * np.array(
                [[np.cos(a), np.sin(a)], [-np.cos(a), -np.sin(a)]]
            )
            ctrl = rng.uniform(0, size, 2)
            t = np.linspace(-0.6, 1.6, 160)[:, None]
            pts = (1 - t) ** 2 * ends[0] + 2 * t * (1 - t) * ctrl + t**2 * ends[1]
        else:  # straight: along the tile's grid, or diagonal
            a = theta0 + rng.integers(2) * np.pi / 2
            if rng.random() > style["grid"]:
                a = rng.uniform(0, np.pi)
            t = np.linspace(-1.5 * size, 1.5 * size, 160)[:, None]
            pts = centre + t * np.array([np.cos(a), np.sin(a)])
        tangents = np.gradient(pts, axis=0)
        tangents /= np.linalg.norm(tangents, axis=1, keepdims=True) + 1e-9
        half = road_half = rng.uniform(8, 15)
        ipts = [_pixels(pts)]
        if rng.random() < 0.5:  # pavement
            half += rng.uniform(3, 5)
            pavement = (rng.uniform(150, 185) + rng.uniform(-6, 6, 3)).tolist()
            cv2.polylines(image, ipts, False, pavement, round(2 * half))
        cv2.polylines(mask, ipts, False, 255, round(2 * half))
        asphalt = (rng.uniform(92, 128) + rng.uniform(-5, 5, 3)).tolist()
        cv2.polylines(image, ipts, False, asphalt, round(2 * road_half))
        if rng.random() < 0.5:  # dashed centre line
            paint = (rng.uniform(175, 215) + rng.uniform(-5, 5, 3)).tolist()
            for i in range(0, len(pts) - 2, 4):
                cv2.line(image, tuple(ipts[0][i]), tuple(ipts[0][i + 2]), paint, 1)
        roads.append((pts, tangents, half))
    return mask, roads


def _lots(rng: np.random.Generator, image: np.ndarray, count: int) -> None:
    """Draw ``count`` paved lots (asphalt or concrete rectangles, some with parking lines)."""
    size = image.shape[0]
    for _ in range(count):
        cx, cy = rng.uniform(0, size, 2)
        a, b, phi = rng.uniform(15, 60), rng.uniform(12, 40), rng.uniform(0, np.pi)
        grey = rng.uniform(95, 130) if rng.random() < 0.6 else rng.uniform(160, 200)
        _fill(image, _rect(cx, cy, a, b, phi), (grey,) * 3)
        if rng.random() < 0.5:
            d1, d2 = _axes(phi)
            for s in np.arange(-a + 5, a - 2, 7):
                p0, p1 = np.array([cx, cy]) + s * d1 + b * d2, np.array([cx, cy]) + s * d1
                _segment(image, p0, p1, (210, 210, 205))


def _building(
    rng: np.random.Generator, style: dict, max_side: float
) -> list[tuple[float, float, float, float]]:
    """Parts (x, y, a, b) of a rectangular or L-shaped footprint, in local axis-aligned coords."""
    long = 15 + (max_side - 15) * rng.beta(*style["size_beta"])
    wide = max(long * rng.uniform(0.45, 0.95), 12.0)
    parts = [(0.0, 0.0, long / 2, wide / 2)]
    if long > 24 and rng.random() < style["l_shape"]:
        w2, l2 = max(wide * rng.uniform(0.5, 0.9), 10.0), long * rng.uniform(0.3, 0.65)
        sx, sy = rng.choice((-1, 1), 2)
        half_y = (wide / 2 + l2) / 2
        parts.append((sx * (long - w2) / 2, sy * half_y, w2 / 2, half_y))
    return parts


def _place(occ: np.ndarray, polys: list[np.ndarray], gap: int, size: int) -> float | None:
    """Mark ``polys`` (tile coords) in ``occ`` unless within ``gap`` px of it; return the area."""
    pts = [p + _PAD for p in polys]
    lo = np.floor(np.min([p.min(0) for p in pts], 0)).astype(int) - gap - 1
    hi = np.ceil(np.max([p.max(0) for p in pts], 0)).astype(int) + gap + 2
    if (lo < 0).any() or (hi > occ.shape[::-1]).any():
        return None
    local = [_pixels(p - lo) for p in pts]
    patch = np.zeros((hi[1] - lo[1], hi[0] - lo[0]), np.uint8)
    for poly in local:
        cv2.fillPoly(patch, [poly], 1)
    inflated = cv2.polylines(patch.copy(), local, True, 1, 2 * gap + 1)
    window = occ[lo[1] : hi[1], lo[0] : hi[0]]
    if (window & inflated).any():
        return None
    window |= patch
    y0, x0 = max(_PAD - lo[1], 0), max(_PAD - lo[0], 0)
    y1, x1 = max(_PAD + size - lo[1], 0), max(_PAD + size - lo[0], 0)
    return float(patch[y0:y1, x0:x1].sum())


@dataclass(frozen=True)
class _Scene:
    """The draws that shape a whole tile, and its random generator."""

    rng: np.random.Generator
    style: dict
    size: int
    sparse: bool  # few buildings (2..6 %), few lots and roads
    density: float  # target fraction of roof pixels
    theta0: float  # orientation of the street grid
    away: np.ndarray  # direction of cast shadows (away from the sun)

    @property
    def scale(self) -> float:
        """Tile area relative to a 1000 px tile is ``scale**2`` (counts of lots, trees...)."""
        return self.size / 1000


def _scene(city_index: int, n: int, size: int) -> _Scene:
    rng = np.random.default_rng([TILE_CONTENT, city_index, n])
    style = _STYLES[CITIES[city_index]]
    sparse = rng.random() < style["sparse"]
    density = rng.uniform(0.02, 0.06) if sparse else rng.uniform(*style["density"])
    theta0 = rng.uniform(0, np.pi / 2) if rng.random() < 0.6 else 0.0
    sun = rng.uniform(0, 2 * np.pi)
    away = np.array([np.cos(sun), np.sin(sun)])
    return _Scene(rng, style, size, sparse, density, theta0, away)


Road = tuple[np.ndarray, np.ndarray, float]  # points, unit tangents, half width
Building = tuple[list[tuple], list[np.ndarray]]  # parts (cx, cy, a, b, phi) and their corners


def _ground_lots_roads(scene: _Scene) -> tuple[np.ndarray, np.ndarray, list[Road]]:
    """The ground with paved lots and roads, slightly blurred; the road mask; the roads."""
    rng, size = scene.rng, scene.size
    image = _ground(rng, size, scene.style)
    _lots(rng, image, rng.poisson((6 if not scene.sparse else 1) * scene.scale**2))
    n_roads = rng.integers(*scene.style["roads"]) if not scene.sparse else rng.integers(0, 2)
    count = int(np.ceil(n_roads * max(scene.scale, 0.3)))
    road_mask, roads = _roads(rng, image, scene.style, count, scene.theta0)
    return cv2.GaussianBlur(image, (3, 3), 0.6), road_mask, roads


def _pose(scene: _Scene, roads: list[Road], parts: list[tuple]) -> tuple[np.ndarray, float] | None:
    """Centre and orientation of a footprint: along a road and facing it, or free (on the
    tile's grid or not); None for a road outside the tile."""
    rng, size = scene.rng, scene.size
    if roads and rng.random() < 0.6:
        pts, tangents, half = roads[rng.integers(len(roads))]
        inside = np.flatnonzero(((pts > -40) & (pts < size + 40)).all(1))
        if not len(inside):
            return None
        i = inside[rng.integers(len(inside))]
        phi = np.arctan2(tangents[i, 1], tangents[i, 0]) + rng.integers(2) * np.pi / 2
        depth = max(np.hypot(x, y) + max(a, b) for x, y, a, b in parts)
        side = rng.choice((-1, 1)) * np.array([-tangents[i, 1], tangents[i, 0]])
        return pts[i] + side * (half + rng.uniform(4, 14) + 0.8 * depth), phi
    centre = rng.uniform(-40, size + 40, 2)
    phi = scene.theta0 + rng.integers(4) * np.pi / 2 + rng.normal(0, 0.05)
    if rng.random() > scene.style["grid"]:
        phi = rng.uniform(0, np.pi)
    return centre, phi


def _buildings(scene: _Scene, road_mask: np.ndarray, roads: list[Road]) -> list[Building]:
    """Footprints by rejection sampling against roads and each other, until the target area."""
    rng, size = scene.rng, scene.size
    occ = np.zeros((size + 2 * _PAD,) * 2, np.uint8)
    occ[_PAD:-_PAD, _PAD:-_PAD] = cv2.dilate(road_mask, np.ones((7, 7), np.uint8)) > 0
    max_side = min(80.0, 0.45 * size)
    buildings = []
    area, target = 0.0, scene.density * size * size
    for _ in range(int(60 + 25 * target / 900)):
        if area >= target:
            break
        parts = _building(rng, scene.style, max_side)
        pose = _pose(scene, roads, parts)
        if pose is None:
            continue
        centre, phi = pose
        rot = np.array([[np.cos(phi), -np.sin(phi)], [np.sin(phi), np.cos(phi)]])
        world = [(*(rot @ (x, y) + centre), a, b, phi) for x, y, a, b in parts]
        polys = [_rect(*part) for part in world]
        placed = _place(occ, polys, int(rng.integers(2, 9)), size)
        if placed is not None:
            area += placed
            buildings.append((world, polys))
    return buildings


def _tree_crowns(
    scene: _Scene, roads: list[Road], buildings: list[Building]
) -> list[tuple[float, float, float]]:
    """(x, y, radius) of tree crowns: clusters, rows along some roads, some touching roofs."""
    rng, trees = scene.rng, []
    for _ in range(int(np.ceil(rng.integers(*scene.style["clusters"]) * scene.scale**2))):
        c, k = rng.uniform(0, scene.size, 2), rng.integers(3, 16)
        trees += [(*(c + rng.normal(0, 30, 2)), rng.uniform(6, 16)) for _ in range(k)]
    for pts, tangents, half in roads:
        if rng.random() < 0.4:
            side = np.stack([-tangents[:, 1], tangents[:, 0]], 1) * (half + 6)
            step = int(rng.integers(3, 6))
            trees += [(*(pts[i] + side[i]), rng.uniform(5, 9)) for i in range(0, len(pts), step)]
    for _, polys in buildings:
        if rng.random() < 0.3:
            corner = polys[0][rng.integers(4)]
            out = corner - polys[0].mean(0)
            r = rng.uniform(6, 15)
            trees.append((*(corner + out / np.linalg.norm(out) * r * 0.5), r))
    return trees


def _trees(scene: _Scene, image: np.ndarray, trees: list[tuple[float, float, float]]) -> float:
    """Draw the tree shadows, then the crowns, on ``image``; return the shadow strength."""
    rng, size = scene.rng, scene.size
    tree_mask = np.zeros((size, size), np.uint8)
    shadow = np.zeros((size, size), np.uint8)
    for x, y, r in trees:
        cv2.circle(tree_mask, (round(x), round(y)), round(r), 255, -1)
        sx, sy = np.array((x, y)) + scene.away * r * 1.1
        cv2.circle(shadow, (round(sx), round(sy)), round(r), 255, -1)
    strength = rng.uniform(0.4, 0.6)
    image *= _darkening(cv2.GaussianBlur(shadow, (7, 7), 2), strength)
    shade = cv2.GaussianBlur(tree_mask, (0, 0), 4).astype(np.float32) / 255
    texture = 0.62 + 0.45 * shade + 0.1 * _smooth(rng, size, 3)
    leaf = (np.array((44, 72, 36)) + rng.uniform(-8, 8, 3)).astype(np.float32)
    alpha = cv2.GaussianBlur(tree_mask, (3, 3), 0)[:, :, None].astype(np.float32) / 255
    image += alpha * (leaf * texture[:, :, None] - image)
    return strength


def _building_shadows(
    scene: _Scene, image: np.ndarray, buildings: list[Building], strength: float
) -> None:
    """Darken ``image`` by the footprints swept away from the sun over each height."""
    shadow = np.zeros((scene.size, scene.size), np.uint8)
    for _, polys in buildings:
        height = scene.rng.uniform(*scene.style["height"])
        for t in (0.0, 0.25, 0.5, 0.75, 1.0):
            for poly in polys:
                _fill(shadow, poly + t * height * scene.away, 255)
    image *= _darkening(cv2.GaussianBlur(shadow, (5, 5), 1.5), strength)


def _gabled(roof: np.ndarray, part: tuple, colour: np.ndarray, away: np.ndarray) -> None:
    """Two halves lit by the sun on either side of a ridge along the part's long side."""
    cx, cy, a, b, phi = part
    d1, d2 = _axes(phi)
    for s in (-1, 1):
        lit = 1 - 0.18 * s * float(d2 @ away)
        half = _rect(cx + s * b / 2 * d2[0], cy + s * b / 2 * d2[1], a, b / 2, phi)
        _fill(roof, half, (colour * lit).tolist())
    centre = np.array([cx, cy])
    _segment(roof, centre - a * d1, centre + a * d1, (colour * 1.12).tolist())


def _flat(
    rng: np.random.Generator, roof: np.ndarray, part: tuple, poly: np.ndarray, colour: np.ndarray
) -> None:
    """A parapet along the outline ``poly`` and up to three rooftop boxes."""
    cx, cy, a, b, phi = part
    d1, d2 = _axes(phi)
    cv2.polylines(roof, [_pixels(poly)], True, (colour * 0.85).tolist(), 3)
    for _ in range(rng.integers(0, 4)):
        if a > 8 and b > 8:
            u, v = rng.uniform(-a + 6, a - 6), rng.uniform(-b + 6, b - 6)
            centre = (cx + u * d1[0] + v * d2[0], cy + u * d1[1] + v * d2[1])
            box = _rect(*centre, rng.uniform(2, 4), rng.uniform(2, 4), phi)
            _fill(roof, box, (colour * rng.choice((0.75, 1.2))).tolist())


def _roofs(scene: _Scene, buildings: list[Building]) -> tuple[np.ndarray, np.ndarray]:
    """The roofs (colour from the city's palette; gabled or flat) and their 0/255 mask."""
    rng, size = scene.rng, scene.size
    roof = np.zeros((size, size, 3), np.float32)
    mask = np.zeros((size, size), np.uint8)
    for world, polys in buildings:
        colours, gable_prob = _ROOFS[rng.choice(len(_ROOFS), p=scene.style["roofs"])]
        colour = np.array(colours[rng.integers(len(colours))], np.float32)
        colour = colour * rng.uniform(0.9, 1.1) + rng.uniform(-6, 6, 3)
        gabled = rng.random() < gable_prob
        for (cx, cy, a, b, phi), poly in zip(world, polys, strict=True):
            _fill(mask, poly, 255)
            _fill(roof, poly, colour.tolist())
            part = (cx, cy, a, b, phi) if a >= b else (cx, cy, b, a, phi + np.pi / 2)
            if gabled:  # the ridge along the long side
                _gabled(roof, part, colour, scene.away)
            else:
                _flat(rng, roof, part, poly, colour)
    return roof, mask


def _tile(city_index: int, n: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One (size x size x 3 uint8 RGB image, size x size uint8 0/255 mask) tile."""
    scene = _scene(city_index, n, size)
    image, road_mask, roads = _ground_lots_roads(scene)
    buildings = _buildings(scene, road_mask, roads)
    strength = _trees(scene, image, _tree_crowns(scene, roads, buildings))
    _building_shadows(scene, image, buildings, strength)
    roof, mask = _roofs(scene, buildings)
    np.copyto(image, roof, where=mask[:, :, None] > 0)
    noise = (scene.rng.random(image.shape, np.float32) - np.float32(0.5)) * np.float32(12)
    image += noise
    return np.clip(image, 0, 255).astype(np.uint8), mask


def _geotiff_tags(epsg: int, east: float, north: float) -> list[tuple[int, str, int, tuple, bool]]:
    """tifffile ``extratags`` that georeference a raster whose top-left corner is at ``(east,
    north)`` in the projected CRS ``EPSG:epsg`` with square :data:`PIXEL_SIZE` pixels (GeoTIFF
    1.0, OGC 19-008r4: ModelPixelScaleTag 33550, ModelTiepointTag 33922, GeoKeyDirectoryTag
    34735 with GTModelTypeGeoKey = projected, GTRasterTypeGeoKey = PixelIsArea and
    ProjectedCSTypeGeoKey = ``epsg``)."""
    keys = (1, 1, 0, 3, 1024, 0, 1, 1, 1025, 0, 1, 1, 3072, 0, 1, epsg)
    return [
        (33550, "d", 3, (PIXEL_SIZE, PIXEL_SIZE, 0.0), True),
        (33922, "d", 6, (0.0, 0.0, 0.0, east, north, 0.0), True),
        (34735, "H", len(keys), keys, True),
    ]


def _write(path: str, array: np.ndarray, tags: list[tuple[int, str, int, tuple, bool]]) -> None:
    """Write an uncompressed GeoTIFF (HxW grey or HxWx3 RGB) with the GeoTIFF ``tags``."""
    photometric = "rgb" if array.ndim == 3 else "minisblack"
    tifffile.imwrite(path, array, photometric=photometric, extratags=tags)


def _generate(root: str, num_tiles: int, tile_size: int) -> None:
    base = os.path.join(root, "AerialImageDataset")
    dirs = {
        d: os.path.join(base, *d.split("/")) for d in ("train/images", "train/gt", "test/images")
    }
    for folder in dirs.values():
        os.makedirs(folder)
    for city_index, (city, count) in enumerate(city_tile_counts(num_tiles).items()):
        for n in range(1, count + 2):  # tile count + 1 is the test tile
            image, mask = _tile(city_index, n, tile_size)
            epsg, east, north = CITY_GRIDS[city]
            tags = _geotiff_tags(epsg, east + (n - 1) * tile_size * PIXEL_SIZE, north)
            if n <= count:
                _write(os.path.join(dirs["train/images"], f"{city}{n}.tif"), image, tags)
                _write(os.path.join(dirs["train/gt"], f"{city}{n}.tif"), mask, tags)
            else:
                _write(os.path.join(dirs["test/images"], f"{city}{n}.tif"), image, tags)


def ensure_building_demo(
    data_dir: str = "data/building_demo", num_tiles: int = 12, tile_size: int = 1000
) -> None:
    """Generate the synthetic building dataset into ``data_dir`` unless it is there already.

    ``num_tiles`` training tiles (at least 2, split between ``CITIES``) of ``tile_size`` px
    (at least 64), plus one test tile per city. Data of other parameters or of another generator
    version is replaced; a non-empty folder that is not generated data is refused
    (``FileExistsError``). See ``dataloaders.generated.ensure_generated``.
    """
    if num_tiles < len(CITIES) or tile_size < 64:
        raise ValueError(
            f"num_tiles must be >= {len(CITIES)} and tile_size >= 64, "
            f"got {num_tiles} and {tile_size}"
        )
    expected = {
        "dataset": "building_demo",
        "version": BUILDING_DEMO_VERSION,
        "num_tiles": num_tiles,
        "tile_size": tile_size,
    }
    ensure_generated(
        data_dir, expected, lambda root: _generate(root, num_tiles, tile_size), "building demo"
    )
