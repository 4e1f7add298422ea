"""Windows per second sampled from a large tile, uncompressed and LZW TIFF: ``TileReader`` and the
real training dataset against decoding the whole tile for every sample.

``python bench/tile_sampling.py [--size 5000] [--crop 512] [--windows 200] [--baseline-windows 20]
[--cache-tiles 2] [--seed 0]`` writes one synthetic aerial-looking ``size`` x ``size`` RGB tile
(seeded: smooth colour field, roads, rotated rectangular buildings, pixel noise) and its 0/255
building mask to a temporary folder twice, as uncompressed TIFF and as LZW TIFF (OpenCV), and
prints their sizes and write times. Then, per file, ``crop`` x ``crop`` windows (image and mask)
are read three ways, in this process:

- (a) ours: ``dataloaders.tiles.TileReader(cache_tiles)`` (a fresh one per file), ``--windows``
  windows at positions drawn uniformly from ``default_rng(seed)``;
- (b) baseline: for each of the first ``--baseline-windows`` of those positions, the whole tile is
  decoded (``utils.io.images.read_image`` and ``read_mask``) and the window cropped; the windows
  read by (a) at these positions are checked to equal (b)'s (the ``identical`` line);
- (c) ours through the real dataset: ``InriaBuildingDataset`` (split train, ``crop_size`` = crop,
  ``augment``, ``windows_per_epoch`` = ``--windows``, ``cache_tiles``, default ``building_bias``
  0.5) over a folder in the Inria layout linking the file as ``austin6.tif`` in ``images/`` and
  ``gt/``, reading ``dataset[(i, 0, 1)]``: the full per-sample cost (building-biased positions,
  flips and rot90, float32 normalisation, tensors); its positions are its own.

How to read the table: ``first (ms)`` is the latency of the first sample of a row (for (a) and (c)
on the LZW file it includes decoding the whole tile once, which then stays in the cache; for (c)
also the building map computed from the whole mask); ``win/s`` and ``ms/win`` are the steady
rate over the other samples; ``all ms/win`` is the mean over every sample, first included (so it
depends on the number of samples). The ratios are (a)/(b) and (c)/(b) of win/s per file.

Caveats. The uncompressed file is memory-mapped (the ``path`` line says which way each file is
read) and was just written, so it is in the OS page cache: these rates are warm-cache rates; a
cold read from disk costs one disk read of the window's rows (about crop x width x 3 bytes).
Each DataLoader worker has its own ``TileReader`` cache, so with LZW (or any compressed) tiles
the first window of each tile in each worker pays one whole-tile decode, and an epoch over many
large compressed tiles with a cache smaller than the number of tiles degrades towards the
baseline (one decode per window). For huge tiles, store them as uncompressed TIFF, e.g.
``tifffile.imwrite(path, array)`` or ``gdal_translate -co COMPRESS=NONE in.tif out.tif``.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dataloaders.buildings import InriaBuildingDataset
from dataloaders.tiles import TileReader
from utils.io.images import read_image, read_mask

MIB = 2**20
FORMATS = {"uncompressed": 1, "LZW": 5}  # cv2.IMWRITE_TIFF_COMPRESSION values


def aerial_tile(size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A ``size`` x ``size`` uint8 RGB tile that looks vaguely aerial, and its 0/255 mask."""
    rng = np.random.default_rng(seed)
    ground = rng.integers(60, 170, (16, 16, 3)).astype(np.float32)
    ground[..., 1] += 20  # greenish fields and parks
    tile = cv2.resize(np.clip(ground, 0, 255).astype(np.uint8), (size, size), cv2.INTER_CUBIC)
    mask = np.zeros((size, size), np.uint8)
    road = max(3, size // 300)
    for _ in range(max(2, size // 500)):  # roads: horizontal and vertical grey bands
        grey = tuple(int(v) for v in rng.integers(90, 140) + rng.integers(-5, 6, 3))
        at = int(rng.integers(0, size))
        if rng.random() < 0.5:
            cv2.rectangle(tile, (0, at), (size, at + road), grey, -1)
        else:
            cv2.rectangle(tile, (at, 0), (at + road, size), grey, -1)
    for _ in range(max(4, (size // 120) ** 2)):  # buildings: rotated rectangles, roof colours
        centre = tuple(float(v) for v in rng.uniform(0, size, 2))
        sides = tuple(float(v) for v in rng.uniform(12, 60, 2))
        corners = cv2.boxPoints((centre, sides, float(rng.uniform(0, 90)))).astype(np.int32)
        roof = tuple(int(v) for v in rng.integers(40, 230, 3))
        cv2.fillPoly(tile, [corners], roof)
        cv2.fillPoly(mask, [corners], 255)
    for row in range(0, size, 512):  # sensor noise, in slices to keep temporaries small
        block = tile[row : row + 512].astype(np.int16)
        block += rng.integers(-4, 5, block.shape, dtype=np.int16)
        tile[row : row + 512] = np.clip(block, 0, 255)
    return tile, mask


def write_tiles(folder: Path, size: int, seed: int) -> dict[str, tuple[Path, Path]]:
    """Write the tile and mask in every format of FORMATS; ``{format: (image, mask)}``."""
    start = time.perf_counter()
    tile, mask = aerial_tile(size, seed)
    bgr = cv2.cvtColor(tile, cv2.COLOR_RGB2BGR)
    print(
        f"synthetic {size}x{size} tile and mask (seed {seed}): {time.perf_counter() - start:.1f} s"
    )
    raw = tile.nbytes + mask.nbytes
    paths = {}
    for name, compression in FORMATS.items():
        image_path, mask_path = folder / f"{name}_image.tif", folder / f"{name}_mask.tif"
        start = time.perf_counter()
        for path, array in ((image_path, bgr), (mask_path, mask)):
            if not cv2.imwrite(str(path), array, [cv2.IMWRITE_TIFF_COMPRESSION, compression]):
                sys.exit(f"cv2.imwrite could not write {path}")
        seconds = time.perf_counter() - start
        stored = image_path.stat().st_size + mask_path.stat().st_size
        print(
            f"{name:>12}: image {image_path.stat().st_size / MIB:6.1f} MiB + mask "
            f"{mask_path.stat().st_size / MIB:5.1f} MiB ({stored / raw:.0%} of raw), "
            f"written in {seconds:.1f} s",
            flush=True,
        )
        paths[name] = (image_path, mask_path)
    return paths


def inria_root(folder: Path, image: Path, mask: Path) -> Path:
    """An Inria-layout folder under ``folder`` linking ``image`` and ``mask`` as austin6.tif."""
    train = folder / "AerialImageDataset" / "train"
    for sub, target in (("images", image), ("gt", mask)):
        (train / sub).mkdir(parents=True)
        (train / sub / "austin6.tif").symlink_to(target)
    return folder


@dataclass
class Row:
    """One way of sampling windows of one file."""

    file: str
    method: str
    samples: int
    first: float  # seconds of the first sample
    rest: float  # seconds of the other samples

    @property
    def rate(self) -> float:
        """Steady windows per second (first sample excluded)."""
        return (self.samples - 1) / self.rest

    def cells(self) -> str:
        return (
            f"{self.file:<13} {self.method:<38} {self.samples:>7} {self.first * 1000:>10.1f} "
            f"{self.rate:>8.1f} {1000 / self.rate:>8.2f} "
            f"{(self.first + self.rest) * 1000 / self.samples:>11.2f}"
        )


def measure(file: str, method: str, samples: int, sample: Callable[[int], object]) -> Row:
    """Time ``sample(i)`` for ``i`` in ``range(samples)``: the first one apart."""
    gc.collect()
    start = time.perf_counter()
    sample(0)
    first = time.perf_counter() - start
    start = time.perf_counter()
    for i in range(1, samples):
        sample(i)
    row = Row(file, method, samples, first, time.perf_counter() - start)
    print(row.cells(), flush=True)
    return row


def rows_ours(
    name: str, image_file: str, mask_file: str, positions: np.ndarray, args: argparse.Namespace
) -> tuple[Row, list[tuple[np.ndarray, np.ndarray]], bool]:
    """Row (a) of one file (its reader and cache are freed on return), the windows read at the
    first ``--baseline-windows`` positions and whether image and mask were memory-mapped."""
    reader = TileReader(cache_tiles=args.cache_tiles)
    kept: list[tuple[np.ndarray, np.ndarray]] = []
    crop = args.crop

    def ours(i: int) -> None:
        y, x = (int(v) for v in positions[i])
        image = reader.window(image_file, y, x, crop, crop)
        mask = reader.window(mask_file, y, x, crop, crop, mask=True)
        if i < args.baseline_windows:
            kept.append((image, mask))

    row = measure(name, "(a) ours: TileReader", args.windows, ours)
    mapped = all(
        isinstance(reader.array(path, mask), np.memmap)  # after the clock stopped
        for path, mask in ((image_file, False), (mask_file, True))
    )
    return row, kept, mapped


def sample_file(
    name: str,
    image_path: Path,
    mask_path: Path,
    root: Path,
    positions: np.ndarray,
    args: argparse.Namespace,
) -> tuple[list[Row], bool, bool]:
    """Rows (a), (b), (c) of one file, whether (a)'s windows equal (b)'s and whether (a) read
    the file memory-mapped."""
    image_file, mask_file, crop = str(image_path), str(mask_path), args.crop
    row, kept, mapped = rows_ours(name, image_file, mask_file, positions, args)
    rows = [row]
    same = True

    def baseline(i: int) -> None:
        nonlocal same
        y, x = (int(v) for v in positions[i])
        image = np.array(read_image(image_file)[y : y + crop, x : x + crop])
        mask = np.array(read_mask(mask_file)[y : y + crop, x : x + crop])
        same &= np.array_equal(image, kept[i][0]) and np.array_equal(mask, kept[i][1])

    rows.append(measure(name, "(b) baseline: decode whole tile", args.baseline_windows, baseline))
    kept.clear()
    dataset = InriaBuildingDataset(
        str(root),
        crop_size=crop,
        augment=True,
        windows_per_epoch=args.windows,
        cache_tiles=args.cache_tiles,
    )
    method = "(c) ours: InriaBuildingDataset[(i,0,1)]"
    rows.append(measure(name, method, args.windows, lambda i: dataset[(i, 0, 1)]))
    return rows, same, mapped


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=5000, help="tile side (default 5000)")
    parser.add_argument("--crop", type=int, default=512, help="window side (default 512)")
    parser.add_argument(
        "--windows", type=int, default=200, help="samples of (a) and (c) (default 200)"
    )
    parser.add_argument(
        "--baseline-windows", type=int, default=20, help="samples of (b) (default 20)"
    )
    parser.add_argument(
        "--cache-tiles",
        type=int,
        default=2,
        help="tiles kept decoded per TileReader (image and mask count as one tile; default 2)",
    )
    parser.add_argument("--seed", type=int, default=0, help="tile and positions (default 0)")
    args = parser.parse_args()
    if args.windows < 2 or args.baseline_windows < 2:
        parser.error("--windows and --baseline-windows must be at least 2")
    if not 0 < args.crop <= args.size:
        parser.error("--crop must be in 1..--size")
    if args.baseline_windows > args.windows:
        parser.error("--baseline-windows must not exceed --windows (it reuses their positions)")
    return args


def main() -> None:
    args = parse_args()
    crop = args.crop
    print(
        f"{os.cpu_count()} CPUs, numpy {np.__version__}, OpenCV {cv2.__version__} "
        f"({cv2.getNumThreads()} threads); one process, no DataLoader"
    )
    positions = np.random.default_rng(args.seed).integers(
        0, args.size - crop + 1, (args.windows, 2)
    )
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        paths = write_tiles(folder, args.size, args.seed)
        print(
            "the files were just written, so they are in the OS page cache: the memory-mapped "
            "rates are warm-cache rates"
        )
        print(
            f"\n{crop}x{crop} windows (image + mask); first = first sample, win/s and ms/win = "
            "steady (first excluded), all = mean incl. first"
        )
        print(
            f"{'file':<13} {'method':<38} {'samples':>7} {'first (ms)':>10} {'win/s':>8} "
            f"{'ms/win':>8} {'all ms/win':>11}"
        )
        same, mapped = True, {}
        for name, (image_path, mask_path) in paths.items():
            root = inria_root(folder / f"inria_{name}", image_path, mask_path)
            file_rows, file_same, mapped[name] = sample_file(
                name, image_path, mask_path, root, positions, args
            )
            rows += file_rows
            same &= file_same
    print(f"\nwindows of (a) identical to the whole-tile decode of (b): {'yes' if same else 'NO'}")
    for name in paths:
        how = "memory-mapped" if mapped[name] else "decoded once, then cached"
        print(f"path: TileReader read the {name} file {how}")
    for name in paths:
        a, b, c = (row for row in rows if row.file == name)
        print(
            f"{name}: (a)/(b) {a.rate / b.rate:.1f}x, (c)/(b) {c.rate / b.rate:.1f}x (steady "
            f"win/s); first sample of (a) {a.first * 1000:.0f} ms vs {1000 / b.rate:.0f} ms per "
            "baseline sample"
        )


if __name__ == "__main__":
    main()
