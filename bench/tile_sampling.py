"""Windows per second sampled from a large tile, uncompressed and LZW TIFF: ``TileReader`` and the
real training dataset against decoding the whole tile for every sample.

``python -m bench.tile_sampling [--size 5000] [--crop 512] [--windows 200]
[--baseline-windows 20] [--cache-tiles 2] [--seed 0]`` writes one synthetic aerial-looking
``size`` x ``size`` RGB tile (``bench.common.synthetic_image``, seeded: smooth greenish colour
field, grey roads, rotated rectangular buildings, pixel noise) and its 0/255 building mask to a
temporary folder twice, as uncompressed TIFF and as LZW TIFF (OpenCV), and prints their sizes
and write times. Then, per file, ``crop`` x ``crop`` windows (image and mask) are read three
ways, in this process:

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

Each row is timed by ``bench.common.measure``, the first sample apart. How to read the table:
``first (ms)`` is the latency of the first sample of a row (for (a) and (c) on the LZW file it
includes decoding the whole tile once, which then stays in the cache; for (c) also the building
map computed from the whole mask); ``win/s`` and ``ms/win`` are the steady rate over the other
samples; ``all ms/win`` is the mean over every sample, first included (so it depends on the
number of samples). The ratios are (a)/(b) and (c)/(b) of win/s per file.

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
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make the repository's packages importable
    sys.path.insert(0, str(ROOT))

import cv2
import numpy as np

from bench.common import MIB, Row, Scene, argument_parser, measure, synthetic_image
from dataloaders.buildings import InriaBuildingDataset
from dataloaders.tiles import TileReader
from utils.io.images import read_image, read_mask

FORMATS = {"uncompressed": 1, "LZW": 5}  # cv2.IMWRITE_TIFF_COMPRESSION values


def aerial_tile(size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A ``size`` x ``size`` uint8 RGB tile that looks vaguely aerial, and its 0/255 mask:
    greenish fields, grey roads (not in the mask), buildings as rotated rectangles (sides 5 to
    60 pixels, roof colours) and weak sensor noise."""
    buildings = max(4, (size // 120) ** 2)
    scene = Scene(
        field=(16, 16),
        colours=(60, 170),
        green=20,
        roads=max(2, size // 500),
        road=max(3, size // 300),
        shapes=(buildings, buildings),
        radius=(6, 30),
        boxes=1.0,
        noise=4,
    )
    return synthetic_image(size, size, scene, np.random.default_rng(seed))


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


def sample_row(file: str, method: str, samples: int, sample: Callable[[int], object]) -> Row:
    """Time ``sample(i)`` for ``i`` in ``range(samples)``, the first one apart; print the row."""

    def one(i: int) -> None:
        sample(i)

    row = measure(method, one, samples, first_apart=True)
    assert row.first is not None
    print(
        f"{file:<13} {row.name:<38} {row.calls:>7} {row.first * 1000:>10.1f} "
        f"{row.steady:>8.1f} {1000 / row.steady:>8.2f} {row.per_call * 1000:>11.2f}",
        flush=True,
    )
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

    row = sample_row(name, "(a) ours: TileReader", args.windows, ours)
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

    method = "(b) baseline: decode whole tile"
    rows.append(sample_row(name, method, args.baseline_windows, baseline))
    kept.clear()
    dataset = InriaBuildingDataset(
        str(root),
        crop_size=crop,
        augment=True,
        windows_per_epoch=args.windows,
        cache_tiles=args.cache_tiles,
    )
    method = "(c) ours: InriaBuildingDataset[(i,0,1)]"
    rows.append(sample_row(name, method, args.windows, lambda i: dataset[(i, 0, 1)]))
    return rows, same, mapped


def parse_args() -> argparse.Namespace:
    """The command line, checked."""
    parser = argument_parser(__doc__)
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


def print_table_header(crop: int) -> None:
    """The notes and the column titles of the table."""
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


def summary(rows: dict[str, list[Row]], same: bool, mapped: dict[str, bool]) -> None:
    """The identity check, the path each file took and the ratios per file."""
    print(f"\nwindows of (a) identical to the whole-tile decode of (b): {'yes' if same else 'NO'}")
    for name in rows:
        how = "memory-mapped" if mapped[name] else "decoded once, then cached"
        print(f"path: TileReader read the {name} file {how}")
    for name, (a, b, c) in rows.items():
        assert a.first is not None
        print(
            f"{name}: (a)/(b) {a.steady / b.steady:.1f}x, (c)/(b) {c.steady / b.steady:.1f}x "
            f"(steady win/s); first sample of (a) {a.first * 1000:.0f} ms vs "
            f"{1000 / b.steady:.0f} ms per baseline sample"
        )


def main() -> None:
    """Write the files, sample each of them three ways and print the ratios."""
    args = parse_args()
    print(
        f"{os.cpu_count()} CPUs, numpy {np.__version__}, OpenCV {cv2.__version__} "
        f"({cv2.getNumThreads()} threads); one process, no DataLoader"
    )
    positions = np.random.default_rng(args.seed).integers(
        0, args.size - args.crop + 1, (args.windows, 2)
    )
    rows: dict[str, list[Row]] = {}
    same, mapped = True, {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        paths = write_tiles(folder, args.size, args.seed)
        print_table_header(args.crop)
        for name, (image_path, mask_path) in paths.items():
            root = inria_root(folder / f"inria_{name}", image_path, mask_path)
            rows[name], file_same, mapped[name] = sample_file(
                name, image_path, mask_path, root, positions, args
            )
            same &= file_same
    summary(rows, same, mapped)


if __name__ == "__main__":
    main()
