"""Training windows per second from a 4-band 16-bit GeoTIFF read through an ``imagery`` section,
side by side with the 8-bit RGB tile path and with a whole-tile read per window.

``python bench/imagery_windows.py [--size 5000] [--crop 512] [--windows 100]
[--baseline-windows 5] [--seed 0]`` writes, to a temporary folder, a synthetic ``size`` x
``size`` tile (``bench.tile_sampling.aerial_tile``) three ways with rasterio: as a 3-band uint8
uncompressed GeoTIFF (the RGB path: memory-mapped by ``dataloaders.tiles.TileReader``), and as a
4-band uint16 GeoTIFF (12-bit values: the RGB tile times 16 plus a NIR band), uncompressed and
DEFLATE-compressed in 256 x 256 blocks. Then ``crop`` x ``crop`` windows at positions drawn from
``default_rng(seed)`` are read, in this process, by:

- (rgb) ``TileReader()`` on the RGB tile;
- (imagery) ``TileReader(imagery=...)`` on each 4-band tile, bands ``[4, 1, 2]``, with ``divide``
  and with ``percentile`` scaling (whose first window includes the pass over the whole tile);
- (whole) for the first ``--baseline-windows`` positions, the whole 4-band tile read with rasterio
  and scaled (``utils.io.rasters.read_bands``), then cropped: what a loader without windowed
  reads costs; its windows are checked to equal (imagery)'s (the ``identical`` line).

The table is ``bench.tile_sampling``'s (image windows only here): ``first`` is the first window's
latency, ``win/s`` and ``ms/win`` the steady rate over the others. The files were just written,
so they are in the OS page cache (warm-cache rates).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make the repository's packages importable
    sys.path.insert(0, str(ROOT))

import numpy as np

from bench.common import Row, argument_parser
from bench.tile_sampling import aerial_tile, print_table_header, sample_row
from dataloaders.tiles import TileReader
from utils.imagery import Imagery
from utils.io.geotiff import rasterio_module
from utils.io.rasters import read_bands

BANDS = [4, 1, 2]


def write_tiles(folder: Path, size: int, seed: int) -> dict[str, Path]:
    """The RGB uint8 tile and the 4-band uint16 tiles; ``{name: path}``."""
    rasterio = rasterio_module("bench/imagery_windows.py")
    rgb, mask = aerial_tile(size, seed)
    nir = (mask.astype(np.uint16) * 12 + rgb[:, :, 1] * 4).astype(np.uint16)
    rgbn = np.concatenate([rgb.transpose(2, 0, 1).astype(np.uint16) * 16, nir[None]])
    grid = {"height": size, "width": size, "crs": "EPSG:32614"}
    grid["transform"] = rasterio.transform.from_origin(620_000, 3_350_000, 0.3, 0.3)
    files = {
        "rgb uint8": (rgb.transpose(2, 0, 1), {}),
        "rgbn uint16": (rgbn, {}),
        "rgbn deflate": (rgbn, {"compress": "deflate", "tiled": True}),
    }
    paths = {}
    for name, (bands, options) in files.items():
        path = folder / f"{name.replace(' ', '_')}.tif"
        profile = {"driver": "GTiff", "count": len(bands), "dtype": bands.dtype.name}
        with rasterio.open(path, "w", **profile, **grid, **options) as dst:
            dst.write(bands)
        print(f"{name:>13}: {path.stat().st_size / 2**20:7.1f} MiB", flush=True)
        paths[name] = path
    return paths


def row(file: str, method: str, positions: np.ndarray, read: Callable[[int, int], None]) -> Row:
    """Time ``read(y, x)`` at each of ``positions`` (``bench.tile_sampling.sample_row``)."""
    return sample_row(file, method, len(positions), lambda i: read(*positions[i]))


def steady_ms(result: Row) -> float:
    """Mean milliseconds per window, the first excluded."""
    return 1000 / result.steady


def rows_4_band(
    file: str, path: str, scale: str, positions: np.ndarray, args: argparse.Namespace
) -> dict[str, Row]:
    """The (imagery) row of one file and scaling, and with ``percentile`` the (whole) row."""
    divisor = {"divisor": 4095} if scale == "divide" else {}
    imagery = Imagery.from_config({"bands": BANDS, "scale": scale, **divisor})
    reader, c = TileReader(imagery=imagery), args.crop
    windows: list[np.ndarray] = []

    def window(y: int, x: int) -> None:
        windows.append(reader.window(path, y, x, c, c))

    rows = {f"{file} {scale}": row(file, f"imagery {scale}", positions, window)}
    if scale == "percentile":
        wholes: list[np.ndarray] = []

        def whole(y: int, x: int) -> None:
            wholes.append(read_bands(path, imagery)[y : y + c, x : x + c])

        rows[f"{file} whole"] = row(
            file, "whole tile per window", positions[: args.baseline_windows], whole
        )
        same = all(np.array_equal(a, b) for a, b in zip(wholes, windows, strict=False))
        print(f"{'':<13} identical windows (imagery vs whole): {same}")
    return rows


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--size", type=int, default=5000)
    parser.add_argument("--crop", type=int, default=512)
    parser.add_argument("--windows", type=int, default=100)
    parser.add_argument("--baseline-windows", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    positions = np.random.default_rng(args.seed).integers(
        0, args.size - args.crop + 1, (args.windows, 2)
    )
    c = args.crop
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_tiles(Path(tmp), args.size, args.seed)
        print_table_header(c)
        print("(here image windows only: the masks are read as without an imagery section)")
        rgb = TileReader()
        rgb_path = str(paths["rgb uint8"])
        steady = {
            "rgb": row("rgb uint8", "rgb (memory map)", positions,
                       lambda y, x: rgb.window(rgb_path, y, x, c, c)),
        }  # fmt: skip
        for file in ("rgbn uint16", "rgbn deflate"):
            for scale in ("divide", "percentile"):
                steady |= rows_4_band(file, str(paths[file]), scale, positions, args)
        print("steady ms/win against the RGB memory map:")
        for name, result in steady.items():
            ratio = steady_ms(result) / steady_ms(steady["rgb"])
            print(f"  {name:<26} {steady_ms(result):8.2f} ms  {ratio:8.2f}x")


if __name__ == "__main__":
    main()
