"""Time sliding-window prediction of one large tile: ``Predictor`` against a bare forward and a
naive loop.

``python -m bench.sliding [--variant lite] [--size 5000] [--window 512] [--overlap 0.25]
[--batch-size N] [--device auto] [--threads N]`` cuts one synthetic RGB tile
(``bench.common.synthetic_image``, seed 0: smooth colour field, discs and rotated rectangles,
pixel noise) into the same grid of windows (``utils.inference.windows.window_grid``: every
``stride`` = window less the overlap, the last ones shifted inside the border) and runs a randomly
initialised U2Net (``torch.manual_seed(0)``, eval mode, ``torch.inference_mode``) three ways:
- (a) ours: ``Predictor(mode="sliding").predict_tensors([tile])``, the whole sliding mode (Gaussian
  blending, accumulators on the device, windows in batches);
- (b) model forward alone: ``Predictor.forward`` on the same windows in the same batches, the
  uint8 batches being cut and stacked before the clock starts; (a)/(b) is the overhead of the
  sliding machinery over the forwards it cannot avoid;
- (c) naive baseline: the template we replace, one window at a time, normalised in NumPy on the
  CPU, moved to the device, forwarded, moved back and accumulated in NumPy float32 sum and count
  arrays, then averaged (sum / count); (c)/(a) is our speed-up.

Each row runs in a fresh process (this script again, as ``--row``), after the set-up and a
warm-up forward of each batch shape, and prints its wall time, its peak memory and its number of
windows (``bench.common.measure`` with ``PeakMemory``). On CUDA the memory is
``torch.cuda.max_memory_allocated`` (peak) and that less the memory allocated when the row
starts (extra); on the CPU it is the peak resident set size sampled from ``/proc/self/statm``
every 5 ms (Linux only) and that less the RSS when the row starts. The last line, max |a - c|,
is for information: (a) blends with Gaussian weights and (c) averages plainly, so they differ
where windows overlap.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make the repository's packages importable
    sys.path.insert(0, str(ROOT))

import numpy as np
import torch
from torch import nn

from bench.common import (
    PeakMemory,
    Row,
    Scene,
    add_device_options,
    argument_parser,
    measure,
    mib,
    set_up,
    synchronize,
    synthetic_image,
)
from models.u2net import U2Net
from utils.inference.predictor import PredictOptions, Predictor, default_batch_size
from utils.inference.windows import window_grid
from utils.preprocessing import INV_STD_255, MEAN_255
from utils.runtime.device import resolve_device

REPO = Path(__file__).resolve().parents[1]
ROWS = {
    "a": "(a) ours: Predictor sliding mode",
    "b": "(b) model forward alone",
    "c": "(c) naive baseline (batch 1, NumPy)",
}


def synthetic_tile(size: int, seed: int = 0) -> np.ndarray:
    """A ``size`` x ``size`` uint8 RGB image: smooth colour field, random shapes, pixel noise."""
    shapes = max(1, (size // 250) ** 2)
    scene = Scene(shapes=(shapes, shapes), radius=(size // 100 + 2, size // 12 + 4), boxes=0.5)
    return synthetic_image(size, size, scene, np.random.default_rng(seed))[0]


def window_batches(
    predictor: Predictor, tile: np.ndarray
) -> tuple[list[tuple[int, int]], list[torch.Tensor]]:
    """The corners of the sliding grid of ``predictor`` on ``tile`` and its uint8 window batches
    (BxHxWx3, on the predictor's device), as sliding mode cuts them."""
    opts = predictor.options
    pixels = torch.from_numpy(np.ascontiguousarray(tile)).to(predictor.device)
    (wh, ww), corners = window_grid(*pixels.shape[:2], opts.window, opts.window_stride)
    batches = [
        torch.stack([pixels[y : y + wh, x : x + ww] for y, x in corners[i : i + opts.batch_size]])
        for i in range(0, len(corners), opts.batch_size)
    ]
    return corners, batches


@torch.inference_mode()
def naive_sliding(
    model: nn.Module, tile: np.ndarray, window: int, stride: int, device: torch.device
) -> tuple[np.ndarray, int]:
    """The naive template: per window, NumPy normalisation on the CPU, a batch-1 forward and
    NumPy accumulation; plain averaging. Returns the HxW map and the number of windows."""
    height, width = tile.shape[:2]
    (wh, ww), corners = window_grid(height, width, window, stride)
    total = np.zeros((height, width), np.float32)
    count = np.zeros((height, width), np.float32)
    mean, inv_std = MEAN_255.reshape(3), INV_STD_255.reshape(3)
    for y, x in corners:
        crop = (tile[y : y + wh, x : x + ww].astype(np.float32) - mean) * inv_std
        inp = torch.from_numpy(np.ascontiguousarray(crop.transpose(2, 0, 1))[None]).to(device)
        prob = model(inp)[0, 0].float().cpu().numpy()
        total[y : y + wh, x : x + ww] += prob
        count[y : y + wh, x : x + ww] += 1
    return total / count, len(corners)


def parse_args() -> argparse.Namespace:
    """The command line (``--row`` and ``--map-out`` are the child's, hidden)."""
    parser = argument_parser(__doc__)
    parser.add_argument("--variant", choices=("lite", "full"), default="lite", help="(lite)")
    parser.add_argument("--size", type=int, default=5000, help="tile side (default 5000)")
    parser.add_argument("--window", type=int, default=512, help="window side (default 512)")
    parser.add_argument("--overlap", type=float, default=0.25, help="(default 0.25)")
    parser.add_argument(
        "--batch-size", type=int, help="windows a batch (default: 8 on a GPU, 1 on the CPU)"
    )
    add_device_options(parser)
    parser.add_argument("--row", choices=ROWS, help=argparse.SUPPRESS)  # run one row (child)
    parser.add_argument("--map-out", help=argparse.SUPPRESS)  # child: save its map here
    return parser.parse_args()


def runners(
    predictor: Predictor, tile: np.ndarray, batches: list[torch.Tensor], maps: list[np.ndarray]
) -> dict[str, Callable[[int], int]]:
    """The three rows as calls for ``measure``: each returns its number of windows; (a) and (c)
    append their map to ``maps``."""
    options = predictor.options

    def run_ours(_: int) -> int:
        windows = 0

        def count(n: int) -> None:
            nonlocal windows
            windows += n

        maps.append(predictor.predict_tensors([tile], on_windows=count)[0].cpu().numpy())
        return windows

    def run_forward(_: int) -> int:
        for batch in batches:
            predictor.forward(batch)
        return sum(len(batch) for batch in batches)

    def run_naive(_: int) -> int:
        prob, windows = naive_sliding(
            predictor.model, tile, options.window, options.window_stride, predictor.device
        )
        maps.append(prob)
        return windows

    return {"a": run_ours, "b": run_forward, "c": run_naive}


def run_row(args: argparse.Namespace) -> None:
    """Set up, warm up, measure one row and print it as a JSON line (in a fresh process)."""
    device, _ = set_up(args)  # glibc keeps freed memory, as inference.py does
    torch.manual_seed(0)
    model = U2Net(variant=args.variant)
    batch_size = args.batch_size or default_batch_size(device)
    options = PredictOptions(
        mode="sliding", window=args.window, overlap=args.overlap, batch_size=batch_size
    )
    predictor = Predictor(model, options, device)
    tile = synthetic_tile(args.size)
    _, batches = window_batches(predictor, tile)
    predictor.forward(batches[0])  # warm-up, with the batch shapes used below
    predictor.forward(batches[0][:1])
    if args.row != "b":
        batches.clear()
    synchronize(device)
    maps: list[np.ndarray] = []
    run = runners(predictor, tile, batches, maps)[args.row]
    row = measure(ROWS[args.row], run, device=device, memory=True)
    if maps and args.map_out:
        np.save(args.map_out, maps[0])
    print("ROW " + json.dumps(asdict(row)), flush=True)


def print_header(args: argparse.Namespace) -> None:
    """The set-up of the run, its grid and how memory is measured."""
    device, _ = resolve_device(args.device)
    batch_size = args.batch_size or default_batch_size(device)
    stride = PredictOptions(mode="sliding", window=args.window, overlap=args.overlap).window_stride
    _, corners = window_grid(args.size, args.size, args.window, stride)
    threads = args.threads or torch.get_num_threads()
    print(
        f"U2Net {args.variant}, random weights (torch.manual_seed(0)), eval mode, {device}, "
        f"torch threads {threads}; glibc keeps freed memory (as in inference.py)"
    )
    print(
        f"tile {args.size}x{args.size} RGB (synthetic, seed 0), window {args.window}, overlap "
        f"{args.overlap} (stride {stride}), batch {batch_size}: {len(corners)} windows"
    )
    memory = PeakMemory.describe(device)
    if device.type != "cuda" and PeakMemory.available(device):
        memory += " (after the tile, the model and the warm-up)"
    print(memory)
    print("each row runs in a fresh process, so one row's memory does not hide the next one's")
    print(f"{'':36} {'time (s)':>9} {'peak (MiB)':>11} {'extra (MiB)':>12} {'windows':>8}")


def child_row(key: str, map_out: Path) -> Row:
    """Run row ``key`` in a fresh process (this module, with ``--row``) and print it."""
    child = [sys.executable, "-m", "bench.sliding", *sys.argv[1:], "--row", key]
    done = subprocess.run(
        [*child, "--map-out", str(map_out)], capture_output=True, text=True, cwd=REPO
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("ROW ")]
    if done.returncode != 0 or not lines:
        sys.exit(f"row {key} failed:\n{done.stdout}{done.stderr}")
    row = Row(**json.loads(lines[-1][4:]))
    print(  # as soon as measured, so a long run shows its progress
        f"{row.name:36} {row.seconds:9.2f} {mib(row.peak):>11} {mib(row.extra):>12} {row.units:8d}",
        flush=True,
    )
    return row


def main() -> None:
    """Print the header, run the three rows in child processes and print the ratios."""
    args = parse_args()
    if args.row:
        run_row(args)
        return
    print_header(args)
    with tempfile.TemporaryDirectory() as tmp:
        rows = {key: child_row(key, Path(tmp) / f"{key}.npy") for key in ROWS}
        diff = np.abs(np.load(Path(tmp) / "a.npy") - np.load(Path(tmp) / "c.npy")).max()
    a, b, c = (rows[key].seconds for key in ROWS)
    print(f"overhead of sliding mode over the bare forward, (a)/(b): {a / b:.2f}x")
    print(f"speed-up of ours over the naive baseline, (c)/(a): {c / a:.2f}x")
    print(f"max |a - c|: {diff:.2e} (information only: Gaussian blending vs plain averaging)")


if __name__ == "__main__":
    main()
