"""Training throughput: U2Net optimisation steps in several configurations, and data loading.

``python -m bench.train_step [--variants lite full] [--batch-size N] [--steps N] [--warmup N]
[--images 64] [--workers 2] [--skip-data] [--device auto] [--threads N]``

Model rows (one block per variant, ``u2net_lite`` and ``u2net_full``): a randomly initialised U2Net
(``torch.manual_seed(0)``, train mode), AdamW (lr 1e-3) and ``DeepSupervisionLoss("bce")`` run
``utils.training.train_step.TrainStep``, the trainer's own per-iteration step, on one fixed batch of
``--batch-size`` x3x288x288 normalised-looking inputs (``randn``) and random binary masks
(seeded, the same for every row), created on the device before the clock starts, so the rows
time the step alone (no data loading). Each configuration gets a fresh model and optimizer, runs
``--warmup`` untimed steps and then ``--steps`` timed ones (``bench.common.measure``:
``torch.cuda.synchronize`` before and after on a GPU). Configurations:
- (a) float32 NCHW eager: ``amp "off"``, ``channels_last false``, the baseline;
- (b) the fastest configuration the config can express on this machine: on the CPU
  ``amp "bf16"`` + ``channels_last true``; on CUDA ``amp "fp16"`` (GradScaler) +
  ``channels_last true`` (the prefetcher of that configuration only matters with a real loader:
  see the prefetch rows);
- (b') the other candidate: on the CPU ``amp "off"`` + ``channels_last true`` (bfloat16 pays off
  only where the CPU computes it natively: without AMX it can be slower than float32), on a GPU
  with bfloat16 support ``amp "bf16"`` + ``channels_last true``.

Each row prints ms/step, images/s and its speed-up over (a), images/s / images/s of (a) (above
1: faster); the line after the block repeats (b)/(a), the ratio asked for. Timed steps are few
on the CPU (a full U2Net step takes seconds there), so other processes on the machine show up
directly in the numbers: run it on an otherwise idle machine. On CUDA, ``cudnn.benchmark`` is
on, as in the trainer's default (``trainer.deterministic false``).

Data rows (skipped with ``--skip-data``): ``--images`` DUTS-like 400x300 JPEGs (quality 90;
``bench.common.synthetic_image``: smooth colours, 3-6 discs, pixel noise) and PNG masks (the
first disc) are written in the DUTS layout to a temporary folder, then one epoch of the real
training loader is timed after one warm-up epoch: ``DUTS`` (split "train", batch 8, base_size
320, crop_size 288, augment, scale_range [0.9, 1.1], flip, shuffle), i.e. decoding,
augmentation, normalisation and collation. With ``num_workers 0`` the samples/s of the main
process (limited to one OpenCV and one torch thread for that row, as in a worker) is the rate of
one loader worker; with ``num_workers --workers`` (persistent workers) it is the rate of the
pool, also shown divided by the worker count.
Then, per variant, the fastest model row's images/s (whichever of (a), (b), (b') won) divided
by the one-worker rate, rounded up, is the number of loader workers training needs so that
loading keeps up: if the machine cannot spare that many cores beside the training itself (on a
CPU-only machine the workers and the model share the same cores), training is data-bound.

Prefetch rows (CUDA only, and not with ``--skip-data``): the real loader above (batch
``--batch-size``, ``--workers`` workers, pinned memory) wrapped in ``utils.runtime.prefetcher.
DataPrefetcher`` with ``enabled`` false (each batch copied to the GPU when it is needed) and true
(the copy of the next batch overlaps the current step on a side stream), feeding the (b) step of
the first variant. After a warm-up epoch, at least ``--steps`` steps are run; each step is
bracketed by ``torch.cuda.synchronize``, and the data time of a step is the wall time from the
end of the previous step until its batch is handed out and usable by the compute stream (the
compute stream synchronised). The rows print the mean data ms/step and the mean step ms: a data
time near 0 means the GPU never waits for its input.
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make the repository's packages importable
    sys.path.insert(0, str(ROOT))

import cv2
import numpy as np
import torch

from bench.common import (
    Row,
    Scene,
    add_device_options,
    argument_parser,
    measure,
    set_up,
    settle,
    synchronize,
    synthetic_image,
)
from dataloaders import DUTS
from dataloaders.duts import SPLIT_DIRS
from models.u2net import U2Net
from utils.runtime.precision import memory_format
from utils.runtime.prefetcher import DataPrefetcher
from utils.training.losses import DeepSupervisionLoss
from utils.training.train_step import TrainStep

CROP = 288
BASE_SIZE = 320
IMAGE_SIZE = (400, 300)  # width, height, as most DUTS images
DATA_BATCH = 8
PHOTO = Scene(field=(6, 8), shapes=(3, 6), radius=(15, 90), salient=1)  # DUTS-like photos


@dataclass(frozen=True)
class Config:
    """One way of running the training step."""

    label: str
    amp: str
    channels_last: bool


@dataclass(frozen=True)
class Setup:
    """What every section of a run shares."""

    device: torch.device
    batch_size: int
    warmup: int

    @property
    def gpu(self) -> bool:
        """Whether the steps run on CUDA."""
        return self.device.type == "cuda"


def configs(device: torch.device) -> list[Config]:
    """(a) float32 NCHW eager, then the fastest configurations the config can express here."""
    baseline = Config("(a) float32 NCHW eager", "off", False)
    if device.type != "cuda":
        return [
            baseline,
            Config("(b) bf16 + channels_last", "bf16", True),
            Config("(b') float32 + channels_last", "off", True),
        ]
    rows = [baseline, Config("(b) fp16 + channels_last", "fp16", True)]
    if torch.cuda.is_bf16_supported():
        rows.append(Config("(b') bf16 + channels_last", "bf16", True))
    return rows


def build_step(variant: str, device: torch.device, config: Config) -> TrainStep:
    """A fresh U2Net (seed 0), AdamW and BCE deep-supervision loss in ``config``, as the trainer
    builds them."""
    torch.manual_seed(0)
    model = U2Net(variant=variant).to(device, memory_format=memory_format(config.channels_last))
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss = DeepSupervisionLoss(mode="bce").to(device)
    return TrainStep(
        model, loss, optimizer, device, amp=config.amp, channels_last=config.channels_last
    )


def random_batch(batch_size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded ``randn`` inputs Bx3xCROPxCROP and binary float masks Bx1xCROPxCROP on ``device``."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(batch_size, 3, CROP, CROP, generator=generator)
    masks = (torch.rand(batch_size, 1, CROP, CROP, generator=generator) > 0.5).float()
    return images.to(device), masks.to(device)


def time_config(variant: str, config: Config, setup: Setup, steps: int) -> Row:
    """``steps`` timed steps of a fresh ``variant`` in ``config`` on one fixed batch, after
    ``setup.warmup`` untimed ones: ``units`` are images, ``per_call`` is seconds per step."""
    images, masks = random_batch(setup.batch_size, setup.device)
    step = build_step(variant, setup.device, config)

    def one_step(_: int) -> int:
        step(images, masks)
        return len(images)

    return measure(config.label, one_step, steps, device=setup.device, warmup=setup.warmup)


def model_rows(variant: str, setup: Setup, steps: int) -> list[Row]:
    """Time every configuration of ``configs(device)`` for ``variant``, printing each row."""
    rows: list[Row] = []
    for config in configs(setup.device):
        settle(setup.device)  # the previous configuration's model and optimizer
        row = time_config(variant, config, setup, steps)
        rows.append(row)
        print(
            f"u2net_{variant:5} {row.name:28} {row.per_call * 1000:10.0f} "
            f"{row.per_second:9.2f} {row.per_second / rows[0].per_second:8.2f}x",
            flush=True,
        )
    return rows


def model_section(args: argparse.Namespace, setup: Setup) -> dict[str, Row]:
    """The model rows of every variant and their (b)/(a) lines; the fastest row per variant."""
    fastest: dict[str, Row] = {}
    print(f"{'model':11} {'configuration':28} {'ms/step':>10} {'images/s':>9} {'vs (a)':>9}")
    for variant in args.variants:
        steps = args.steps or (20 if setup.gpu else (3 if variant == "lite" else 2))
        print(f"u2net_{variant}: {steps} timed steps per configuration", flush=True)
        rows = model_rows(variant, setup, steps)
        fastest[variant] = max(rows, key=lambda row: row.per_second)
        a, b = rows[0].per_second, rows[1].per_second
        print(f"u2net_{variant}: (b)/(a) = {b:.2f} / {a:.2f} images/s = {b / a:.2f}x", flush=True)
    return fastest


def write_duts_like(root: Path, count: int, seed: int = 0) -> None:
    """``count`` 400x300 JPEGs (quality 90) and PNG masks in DUTS's training layout."""
    image_dir, mask_dir = (root / d for d in SPLIT_DIRS["train"])
    image_dir.mkdir(parents=True)
    mask_dir.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    width, height = IMAGE_SIZE
    for i in range(count):
        image, mask = synthetic_image(height, width, PHOTO, rng)  # random colours: RGB or BGR
        name = f"ILSVRC2012_test_{i:08d}"
        cv2.imwrite(str(image_dir / f"{name}.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, 90])
        cv2.imwrite(str(mask_dir / f"{name}.png"), mask)


def duts_loader(root: Path, batch_size: int, num_workers: int) -> DUTS:
    """The real training loader on ``root`` with the benchmark's augmentation."""
    return DUTS(
        data_dir=str(root),
        split="train",
        batch_size=batch_size,
        shuffle=True,
        num_workers=num_workers,
        seed=0,
        base_size=BASE_SIZE,
        crop_size=CROP,
        augment=True,
        scale_range=[0.9, 1.1],
        flip=True,
    )


def epoch_rate(loader: DUTS) -> float:
    """Samples/s of one timed epoch after one warm-up epoch (epochs 0 and 1 of the sampler)."""
    epochs = itertools.count()

    def epoch(_: int) -> int:
        loader.sampler.set_epoch(next(epochs))
        return sum(images.shape[0] for images, _ in loader)

    return measure("epoch", epoch, warmup=1).per_second


def data_rows(root: Path, workers: int) -> float:
    """Print the loader's samples/s with 0 and ``workers`` workers; return the one-worker rate."""
    cv_threads, torch_threads = cv2.getNumThreads(), torch.get_num_threads()
    cv2.setNumThreads(0)  # as in a worker (base_dataloader._worker_init; torch: 1 thread)
    torch.set_num_threads(1)
    try:
        per_worker = epoch_rate(duts_loader(root, DATA_BATCH, 0))
    finally:
        cv2.setNumThreads(cv_threads)
        torch.set_num_threads(torch_threads)
    print(
        f"{'num_workers 0 (main process = 1 worker)':42} {per_worker:10.1f} {per_worker:12.1f}",
        flush=True,
    )
    if workers > 0:
        loader = duts_loader(root, DATA_BATCH, workers)
        pool = epoch_rate(loader)
        del loader  # shuts the persistent workers down
        print(
            f"{f'num_workers {workers} (persistent)':42} {pool:10.1f} {pool / workers:12.1f}",
            flush=True,
        )
    return per_worker


def workers_needed(fastest: dict[str, Row], per_worker: float) -> None:
    """Print, per variant, the loader workers that keep up with its fastest model row."""
    for variant, row in fastest.items():
        needed = math.ceil(row.per_second / per_worker)
        print(
            f"u2net_{variant}: fastest {row.name} {row.per_second:.2f} images/s / "
            f"{per_worker:.1f} samples/s per worker -> {needed} loader worker(s) needed to "
            "keep up",
            flush=True,
        )


def prefetch_timings(
    root: Path, setup: Setup, variant: str, config: Config, steps: int, workers: int
) -> dict[bool, tuple[float, float, int]]:
    """CUDA only: ``{enabled: (mean data wait s, mean step s, timed steps)}`` of the training step
    fed by the real loader through ``DataPrefetcher`` off (False) and on (True)."""
    device = setup.device
    loader = duts_loader(root, setup.batch_size, workers)
    step = build_step(variant, device, config)
    compute = torch.cuda.current_stream(device)
    epochs = 1 + math.ceil(steps / max(1, len(loader)))  # the first one is warm-up
    timings: dict[bool, tuple[float, float, int]] = {}
    for enabled in (False, True):
        batches = DataPrefetcher(loader, device, enabled=enabled)
        waits: list[float] = []
        runs: list[float] = []
        for epoch in range(epochs):
            loader.sampler.set_epoch(epoch)
            synchronize(device)
            ready = time.perf_counter()
            for images, masks in batches:
                compute.synchronize()  # the batch is on the GPU and usable by the step
                got = time.perf_counter()
                step(images, masks)
                synchronize(device)
                done = time.perf_counter()
                if epoch > 0:
                    waits.append(got - ready)
                    runs.append(done - got)
                ready = time.perf_counter()
        timings[enabled] = (float(np.mean(waits)), float(np.mean(runs)), len(waits))
    del loader
    return timings


def prefetch_section(args: argparse.Namespace, setup: Setup, root: Path) -> None:
    """The prefetch rows on CUDA; a line saying they are skipped elsewhere."""
    if not setup.gpu:
        print("prefetch rows: skipped (need CUDA; on the CPU the prefetcher is a pass-through)")
        return
    variant = args.variants[0]
    config = configs(setup.device)[1]
    steps = args.steps or 20
    print(
        f"prefetch: u2net_{variant} {config.label}, loader batch {setup.batch_size}, "
        f"{args.workers} workers, pinned memory, >= {steps} steps after a warm-up epoch"
    )
    print(f"{'':16} {'data ms/step':>14} {'step ms':>10} {'steps':>6}")
    timings = prefetch_timings(root, setup, variant, config, steps, args.workers)
    for enabled, (wait, run, count) in timings.items():
        label = f"prefetcher {'on' if enabled else 'off'}"
        print(f"{label:16} {1000 * wait:14.2f} {1000 * run:10.2f} {count:6d}", flush=True)


def data_section(args: argparse.Namespace, setup: Setup, fastest: dict[str, Row]) -> None:
    """Write the DUTS-like data, time the loader, and print the workers needed and the
    prefetch rows."""
    with tempfile.TemporaryDirectory(prefix="duts_like_") as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        write_duts_like(root, args.images)
        width, height = IMAGE_SIZE
        print(
            f"data: {args.images} DUTS-like {width}x{height} JPEGs (quality 90) + PNG masks "
            f"written in {time.perf_counter() - start:.1f} s; loader DUTS batch {DATA_BATCH}, "
            f"base_size {BASE_SIZE}, crop {CROP}, scale_range [0.9, 1.1], flip; "
            "one warm-up epoch, one timed"
        )
        print(f"{'loader':42} {'samples/s':>10} {'per worker':>12}")
        per_worker = data_rows(root, args.workers)
        workers_needed(fastest, per_worker)
        prefetch_section(args, setup, root)


def parse_args() -> argparse.Namespace:
    """The command line."""
    parser = argument_parser(__doc__)
    parser.add_argument("--variants", nargs="+", choices=("lite", "full"), default=["lite", "full"])
    parser.add_argument("--batch-size", type=int, help="(default: 16 on a GPU, 4 on the CPU)")
    parser.add_argument(
        "--steps", type=int, help="timed steps (default: 20 on a GPU; CPU 3 lite, 2 full)"
    )
    parser.add_argument("--warmup", type=int, help="untimed steps (default: 5 on a GPU, 2 CPU)")
    parser.add_argument("--images", type=int, default=64, help="data row images (default 64)")
    parser.add_argument("--workers", type=int, default=2, help="loader workers (default 2)")
    parser.add_argument("--skip-data", action="store_true", help="skip the data rows")
    add_device_options(parser)
    return parser.parse_args()


def set_up_run(args: argparse.Namespace) -> Setup:
    """Threads, freed memory kept (as train.py and inference.py do), device, cuDNN autotuning on
    a GPU (the trainer's default), defaults by device; print the set-up."""
    device, kept = set_up(args)
    gpu = device.type == "cuda"
    if gpu:
        torch.backends.cudnn.benchmark = True
    setup = Setup(
        device,
        batch_size=args.batch_size or (16 if gpu else 4),
        warmup=args.warmup if args.warmup is not None else (5 if gpu else 2),
    )
    where = torch.cuda.get_device_name(device) if gpu else "CPU"
    print(
        f"device {device} ({where}), torch {torch.__version__}, torch threads "
        f"{torch.get_num_threads()}, glibc keeps freed memory: {kept}"
    )
    print(
        f"training step: U2Net random init (seed 0), AdamW lr 1e-3, BCE deep supervision, "
        f"batch {setup.batch_size}x3x{CROP}x{CROP} on the device, {setup.warmup} warm-up steps"
    )
    return setup


def main() -> None:
    """Set up, time the model rows, then (unless ``--skip-data``) the data and prefetch rows."""
    args = parse_args()
    setup = set_up_run(args)
    fastest = model_section(args, setup)
    if not args.skip_data:
        data_section(args, setup, fastest)


if __name__ == "__main__":
    main()
