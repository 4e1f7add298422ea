"""The benchmarks' shared harness: size constants, device synchronisation, timed rows, peak
memory, synthetic images and the command-line options the scripts share.

- ``synchronize(device)``: waits for a GPU's queued work (nothing on the CPU), the one way every
  script brackets its clocks;
- ``measure(name, call, calls, ...)``: runs ``call(i)`` ``warmup`` times untimed, then ``calls``
  times on the clock (synchronised before and after), optionally timing the first call apart and
  measuring the peak memory (``PeakMemory``); returns a ``Row``;
- ``PeakMemory``: peak memory of a block, ``torch.cuda.max_memory_allocated`` on CUDA, the
  resident set size sampled from ``/proc/self/statm`` every ``SAMPLE_S`` seconds on the CPU;
- ``synthetic_image(height, width, scene, rng)``: a seeded uint8 RGB image and its 0/255 mask,
  drawn as a ``Scene`` says (smooth colour field, roads, discs and rotated rectangles, noise).

The scripts are modules of the ``bench`` package: run them from the repository root as
``python -m bench.NAME``.
"""

from __future__ import annotations

import argparse
import gc
import os
import threading
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from types import TracebackType

import cv2
import numpy as np
import torch

from utils.runtime.cpu_memory import keep_freed_memory
from utils.runtime.device import resolve_device

MIB = 2**20
SAMPLE_S = 0.005  # period of the CPU memory sampler
NOISE_ROWS = 512  # rows of pixel noise added at a time, to keep the temporary arrays small

Device = torch.device | str | None


def is_cuda(device: Device) -> bool:
    """Whether ``device`` (a device, its name, or None for the CPU) is a GPU."""
    return device is not None and torch.device(device).type == "cuda"


def synchronize(device: Device) -> None:
    """Wait for the GPU's queued work (nothing on the CPU)."""
    if is_cuda(device):
        torch.cuda.synchronize(device)


def settle(device: Device) -> None:
    """Collect garbage and, on a GPU, release PyTorch's cached blocks, so a row starts clean."""
    gc.collect()
    if is_cuda(device):
        torch.cuda.empty_cache()


def mib(value: int | None) -> str:
    """Bytes as whole MiB, or n/a."""
    return "n/a" if value is None else f"{value / MIB:.0f}"


class PeakMemory:
    """Context manager measuring the peak memory of a block: ``peak`` and ``extra`` (peak less
    the memory in use at the start) in bytes, both None where it cannot be measured.

    CUDA: allocated tensor memory (``torch.cuda.max_memory_allocated``). CPU: resident set size
    sampled from ``/proc/self/statm`` every ``SAMPLE_S`` seconds by a background thread.
    """

    def __init__(self, device: Device) -> None:
        self.device = torch.device(device or "cpu")
        self.peak: int | None = None
        self.extra: int | None = None
        self._start = 0
        self._fd: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @staticmethod
    def available(device: Device) -> bool:
        """Whether memory can be measured on ``device`` here."""
        return is_cuda(device) or os.path.exists("/proc/self/statm")

    @staticmethod
    def describe(device: Device) -> str:
        """A line saying how the memory of ``device`` is measured."""
        if is_cuda(device):
            return "memory: torch.cuda.max_memory_allocated; extra = peak - allocated at row start"
        if PeakMemory.available(device):
            return (
                f"memory: RSS sampled every {SAMPLE_S * 1000:.0f} ms; extra = peak - RSS at row "
                "start"
            )
        return "memory: n/a (the CPU measurement needs Linux's /proc/self/statm)"

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
    """One measured row: ``calls`` timed calls that processed ``units`` (windows, samples,
    images) in ``seconds`` of wall time; ``first`` is the first call's share of it where it was
    timed apart, ``peak`` and ``extra`` the memory (``PeakMemory``) where it was measured."""

    name: str
    seconds: float
    calls: int = 1
    units: int = 1
    first: float | None = None
    peak: int | None = None
    extra: int | None = None

    @property
    def per_call(self) -> float:
        """Mean seconds per timed call, the first included."""
        return self.seconds / self.calls

    @property
    def per_second(self) -> float:
        """Units per second over all timed calls."""
        return self.units / self.seconds

    @property
    def steady(self) -> float:
        """Calls per second after the first (needs ``first``, timed apart, and two calls)."""
        if self.first is None or self.calls < 2:
            raise ValueError(f"row {self.name!r}: no steady rate without a first call apart")
        return (self.calls - 1) / (self.seconds - self.first)


def _timed_calls(
    call: Callable[[int], int | None], calls: int, device: Device, first_apart: bool
) -> tuple[float, int, float | None]:
    """Seconds of ``call(0)`` ... ``call(calls - 1)``, the units they processed (an int returned,
    or 1 for None) and the first call's seconds if ``first_apart`` (else None)."""
    units, first = 0, None
    synchronize(device)
    start = time.perf_counter()
    for i in range(calls):
        done = call(i)
        units += 1 if done is None else done
        if first_apart and i == 0:
            synchronize(device)
            first = time.perf_counter() - start
    synchronize(device)
    return time.perf_counter() - start, units, first


def measure(
    name: str,
    call: Callable[[int], int | None],
    calls: int = 1,
    *,
    device: Device = None,
    warmup: int = 0,
    first_apart: bool = False,
    memory: bool = False,
) -> Row:
    """Run ``call(i)`` for ``i`` in ``range(warmup)`` untimed, then settle (``gc.collect``, GPU
    cache emptied) and time ``call(i)`` for ``i`` in ``range(calls)``, synchronising ``device``
    before and after (and after the first call if ``first_apart``); with ``memory``, measure the
    peak memory of the timed calls (``PeakMemory``). ``call`` returns the number of units it
    processed, or None for one."""
    for i in range(warmup):
        call(i)
    settle(device)
    with PeakMemory(device) if memory else nullcontext() as peak:
        seconds, units, first = _timed_calls(call, calls, device, first_apart)
    used = (peak.peak, peak.extra) if isinstance(peak, PeakMemory) else (None, None)
    return Row(name, seconds, calls, units, first, *used)


@dataclass(frozen=True)
class Scene:
    """What ``synthetic_image`` draws, in this order.

    A smooth colour field: a ``field`` (rows, columns) grid of random colours with channels in
    ``colours``, ``green`` added to the green channel, upscaled bicubically. ``roads`` grey bands
    ``road`` pixels wide, horizontal or vertical, in no mask. A number of shapes drawn from
    ``shapes`` (inclusive range): anti-aliased discs, or with probability ``boxes`` rotated
    rectangles (sides 2r by 0.8r..2r), of random colours and positions, radius ``r`` drawn from
    ``radius``; the first ``salient`` of them (all if None) also drawn in the 0/255 mask. Last,
    uniform pixel noise in -``noise``..``noise``.
    """

    field: tuple[int, int] = (12, 12)
    colours: tuple[int, int] = (30, 226)
    green: int = 0
    roads: int = 0
    road: int = 3
    shapes: tuple[int, int] = (1, 3)
    radius: tuple[float, float] = (15, 90)
    boxes: float = 0.0
    salient: int | None = None
    noise: int = 12


def _colour_field(height: int, width: int, scene: Scene, rng: np.random.Generator) -> np.ndarray:
    """The smooth HxWx3 uint8 background of ``scene``."""
    coarse = rng.integers(*scene.colours, (*scene.field, 3)).astype(np.int16)
    coarse[..., 1] += scene.green
    small = np.clip(coarse, 0, 255).astype(np.uint8)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)


def _draw_roads(image: np.ndarray, scene: Scene, rng: np.random.Generator) -> None:
    """``scene.roads`` grey bands across ``image``, horizontal or vertical."""
    height, width = image.shape[:2]
    for _ in range(scene.roads):
        grey = tuple(int(v) for v in rng.integers(90, 140) + rng.integers(-5, 6, 3))
        if rng.random() < 0.5:
            at = int(rng.integers(0, height))
            cv2.rectangle(image, (0, at), (width, at + scene.road), grey, -1)
        else:
            at = int(rng.integers(0, width))
            cv2.rectangle(image, (at, 0), (at + scene.road, height), grey, -1)


def _outline(height: int, width: int, scene: Scene, rng: np.random.Generator) -> np.ndarray:
    """The corners (Nx2 int32, x y) of a random disc or rotated rectangle of ``scene``."""
    cx, cy = float(rng.uniform(0, width)), float(rng.uniform(0, height))
    r = max(1.0, float(rng.uniform(*scene.radius)))
    if rng.random() < scene.boxes:
        sides = (2 * r, 2 * r * float(rng.uniform(0.4, 1)))
        box = cv2.boxPoints(((cx, cy), sides, float(rng.uniform(0, 180))))
        return np.round(box).astype(np.int32)
    return cv2.ellipse2Poly((round(cx), round(cy)), (round(r), round(r)), 0, 0, 360, 5)


def _add_noise(image: np.ndarray, noise: int, rng: np.random.Generator) -> None:
    """Add uniform integer noise in -noise..noise to ``image`` in place, NOISE_ROWS at a time."""
    for row in range(0, image.shape[0], NOISE_ROWS):
        block = image[row : row + NOISE_ROWS].astype(np.int16)
        block += rng.integers(-noise, noise + 1, block.shape, dtype=np.int16)
        image[row : row + NOISE_ROWS] = np.clip(block, 0, 255)


def synthetic_image(
    height: int, width: int, scene: Scene, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """An HxWx3 uint8 RGB image drawn from ``rng`` as ``scene`` says and its HxW 0/255 mask."""
    image = _colour_field(height, width, scene, rng)
    mask = np.zeros((height, width), np.uint8)
    _draw_roads(image, scene, rng)
    count = int(rng.integers(scene.shapes[0], scene.shapes[1] + 1))
    salient = count if scene.salient is None else scene.salient
    for i in range(count):
        corners = _outline(height, width, scene, rng)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        cv2.fillPoly(image, [corners], colour, lineType=cv2.LINE_AA)
        if i < salient:
            cv2.fillPoly(mask, [corners], 255)
    if scene.noise > 0:
        _add_noise(image, scene.noise, rng)
    return image, mask


def argument_parser(doc: str | None) -> argparse.ArgumentParser:
    """A parser described by the first paragraph of a script's docstring ``doc``."""
    first = (doc or "").split("\n\n")[0]
    return argparse.ArgumentParser(description=" ".join(first.split()))


def add_device_options(parser: argparse.ArgumentParser, default: str = "auto") -> None:
    """Add ``--device`` (auto, cpu or cuda) and ``--threads`` (torch CPU threads)."""
    parser.add_argument("--device", default=default, help=f"auto, cpu or cuda (default {default})")
    parser.add_argument(
        "--threads", type=int, default=0, help="torch CPU threads (default 0: torch's default)"
    )


def set_up(args: argparse.Namespace, keep_freed: bool = True) -> tuple[torch.device, bool]:
    """Apply ``--threads``, keep freed memory in the process (as train.py and inference.py do)
    unless not ``keep_freed``, and resolve ``--device``: (device, whether memory is kept)."""
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    kept = keep_freed_memory() if keep_freed else False
    device, _ = resolve_device(args.device)
    return device, kept
