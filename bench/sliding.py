"""Time sliding-window prediction of one large tile: ``Predictor`` against a bare forward and a
naive loop.

``python bench/sliding.py [--variant lite] [--size 5000] [--window 512] [--overlap 0.25]
[--batch-size N] [--device auto] [--threads N]`` cuts one synthetic RGB tile (seeded smooth colours,
shapes and noise) into the same grid of windows (``utils.inference.windows.window_grid``: every
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

Each row prints its wall time, its peak memory and its number of windows. On CUDA the memory is
``torch.cuda.max_memory_allocated`` (peak) and that less the memory allocated when the row
starts (extra); on the CPU it is the peak resident set size sampled from ``/proc/self/statm``
every 5 ms (Linux only) and that less the RSS when the row starts. The last line, max |a - c|,
is for information: (a) blends with Gaussian weights and (c) averages plainly, so they differ
where windows overlap.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import cv2
import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.u2net import U2Net
from utils.inference.predictor import PredictOptions, Predictor, default_batch_size
from utils.inference.windows import window_grid
from utils.preprocessing import INV_STD_255, MEAN_255
from utils.runtime.cpu_memory import keep_freed_memory
from utils.runtime.device import resolve_device

MIB = 2**20
SAMPLE_S = 0.005


def synthetic_tile(size: int, seed: int = 0) -> np.ndarray:
    """A ``size`` x ``size`` uint8 RGB image: smooth colour field, random shapes, pixel noise."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(30, 226, (12, 12, 3), dtype=np.uint8)
    tile = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
    for _ in range(max(1, (size // 250) ** 2)):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        cy, cx = (int(v) for v in rng.integers(0, size, 2))
        r = int(rng.integers(size // 100 + 2, size // 12 + 4))
        if rng.random() < 0.5:
            cv2.circle(tile, (cx, cy), r, colour, thickness=-1, lineType=cv2.LINE_AA)
        else:
            cv2.rectangle(tile, (cx - r, cy - r // 2), (cx + r, cy + r // 2), colour, -1)
    for row in range(0, size, 512):  # noise in slices, to keep the temporary arrays small
        block = tile[row : row + 512].astype(np.int16)
        block += rng.integers(-12, 13, block.shape, dtype=np.int16)
        tile[row : row + 512] = np.clip(block, 0, 255)
    return tile


class PeakMemory:
    """Context manager measuring the peak memory of a block: ``peak`` and ``extra`` (peak less
    the memory in use at the start) in bytes, both None where it cannot be measured.

    CUDA: allocated tensor memory (``torch.cuda.max_memory_allocated``). CPU: resident set size
    sampled from ``/proc/self/statm`` every ``SAMPLE_S`` seconds by a background thread.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak: int | None = None
        self.extra: int | None = None
        self._fd: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @staticmethod
    def available(device: torch.device) -> bool:
        """Whether memory can be measured on ``device`` here."""
        return device.type == "cuda" or os.path.exists("/proc/self/statm")

    def _rss(self) -> int:
        assert self._fd is not None
        return int(os.pread(self._fd, 128, 0).split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _sample(self) -> None:
        while not self._stop.wait(SAMPLE_S):
            self.peak = max(self.peak or 0, self._rss())

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
        elif self.available(self.device):
            self._fd = os.open("/proc/self/statm", os.O_RDONLY)
            self._start = self.peak = self._rss()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device)
        elif self._thread is not None and self._fd is not None:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak or 0, self._rss())
            os.close(self._fd)
        if self.peak is not None:
            self.extra = self.peak - self._start


@dataclass
class Row:
    """One measured way of predicting the tile."""

    name: str
    seconds: float
    windows: int
    peak: int | None
    extra: int | None


def measure(name: str, device: torch.device, run: Callable[[], int]) -> Row:
    """Time ``run()`` (which returns its number of windows) and measure its peak memory."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    with PeakMemory(device) as memory:
        start = time.perf_counter()
        windows = run()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
    return Row(name, seconds, windows, memory.peak, memory.extra)


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


def mib(value: int | None) -> str:
    """Bytes as MiB, or n/a."""
    return "n/a" if value is None else f"{value / MIB:.0f}"


ROWS = {
    "a": "(a) ours: Predictor sliding mode",
    "b": "(b) model forward alone",
    "c": "(c) naive baseline (batch 1, NumPy)",
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variant", choices=("lite", "full"), default="lite", help="(lite)")
    parser.add_argument("--size", type=int, default=5000, help="tile side (default 5000)")
    parser.add_argument("--window", type=int, default=512, help="window side (default 512)")
    parser.add_argument("--overlap", type=float, default=0.25, help="(default 0.25)")
    parser.add_argument(
        "--batch-size", type=int, help="windows a batch (default: 8 on a GPU, 1 on the CPU)"
    )
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    parser.add_argument(
        "--threads", type=int, default=0, help="torch CPU threads (default 0: torch's default)"
    )
    parser.add_argument("--row", choices=ROWS, help=argparse.SUPPRESS)  # run one row (child)
    parser.add_argument("--map-out", help=argparse.SUPPRESS)  # child: save its map here
    return parser.parse_args()


def run_row(args: argparse.Namespace) -> None:
    """Set up, warm up, measure one row and print it as a JSON line (in a fresh process)."""
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    keep_freed_memory()  # as inference.py does
    device, _ = resolve_device(args.device)
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
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    result: list[np.ndarray] = []

    def run_ours() -> int:
        windows = 0

        def count(n: int) -> None:
            nonlocal windows
            windows += n

        result.append(predictor.predict_tensors([tile], on_windows=count)[0].cpu().numpy())
        return windows

    def run_forward() -> int:
        for batch in batches:
            predictor.forward(batch)
        return sum(len(batch) for batch in batches)

    def run_naive() -> int:
        prob, windows = naive_sliding(
            predictor.model, tile, options.window, options.window_stride, device
        )
        result.append(prob)
        return windows

    run = {"a": run_ours, "b": run_forward, "c": run_naive}[args.row]
    row = measure(ROWS[args.row], device, run)
    if result and args.map_out:
        np.save(args.map_out, result[0])
    print("ROW " + json.dumps(row.__dict__), flush=True)


def main() -> None:
    args = parse_args()
    if args.row:
        run_row(args)
        return
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
    if device.type == "cuda":
        print("memory: torch.cuda.max_memory_allocated; extra = peak - allocated at row start")
    elif PeakMemory.available(device):
        print(
            f"memory: RSS sampled every {SAMPLE_S * 1000:.0f} ms; extra = peak - RSS at row "
            "start (after the tile, the model and the warm-up)"
        )
    else:
        print("memory: n/a (the CPU measurement needs Linux's /proc/self/statm)")
    print("each row runs in a fresh process, so one row's memory does not hide the next one's")
    print(f"{'':36} {'time (s)':>9} {'peak (MiB)':>11} {'extra (MiB)':>12} {'windows':>8}")
    rows: dict[str, Row] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for key in ROWS:
            map_out = str(Path(tmp) / f"{key}.npy")
            child = [sys.executable, __file__, *sys.argv[1:], "--row", key, "--map-out", map_out]
            done = subprocess.run(child, capture_output=True, text=True)
            lines = [line for line in done.stdout.splitlines() if line.startswith("ROW ")]
            if done.returncode != 0 or not lines:
                sys.exit(f"row {key} failed:\n{done.stdout}{done.stderr}")
            row = rows[key] = Row(**json.loads(lines[-1][4:]))
            print(  # as soon as measured, so a long run shows its progress
                f"{row.name:36} {row.seconds:9.2f} {mib(row.peak):>11} {mib(row.extra):>12} "
                f"{row.windows:8d}",
                flush=True,
            )
        diff = np.abs(np.load(Path(tmp) / "a.npy") - np.load(Path(tmp) / "c.npy")).max()
    a, b, c = (rows[key].seconds for key in ROWS)
    print(f"overhead of sliding mode over the bare forward, (a)/(b): {a / b:.2f}x")
    print(f"speed-up of ours over the naive baseline, (c)/(a): {c / a:.2f}x")
    print(f"max |a - c|: {diff:.2e} (information only: Gaussian blending vs plain averaging)")


if __name__ == "__main__":
    main()
