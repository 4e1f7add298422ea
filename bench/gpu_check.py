"""The GPU check: every CUDA path of U2Seg run on this machine, with a pass/fail table and figures.

``python -m bench.gpu_check [--logs DIR] [--json PATH] [--only NAME ...]``

Checks, in order (each one independent; a failure is reported and the next one runs):

- ``train step``: ``utils.training.train_step.TrainStep`` (the trainer's own step) on a fixed
  batch of 8x3x288x288 (``bench.train_step.random_batch``), u2net_lite, in float32 NCHW, float32
  channels_last, fp16 autocast + ``GradScaler`` + channels_last and bf16 autocast +
  channels_last; 3 warm-up and 10 timed steps each. Passes when every loss is finite, the loss
  of the last step is below the first (a fixed batch is being fitted) and the fp16 loss scale is
  finite and positive. Figures: ms/step of each.
- ``forward GPU vs CPU``: the eval-mode fused probability of a seeded u2net_lite on 4x3x320x320
  inputs on the GPU (float32, TF32 as PyTorch's default allows for convolutions) and on the CPU;
  passes below 5e-3 largest absolute difference.
- ``prefetcher``: the real DUTS training loader (``bench.train_step``'s 400x300 JPEGs, 2
  workers, pinned memory) iterated with ``DataPrefetcher`` off and on: the batches must be equal
  bit for bit; then ``bench.train_step.prefetch_timings`` gives the data wait per step with the
  fp16 step of u2net_lite, off and on.
- ``CUDA metrics``: ``SODMetrics`` (every metric) on 24 seeded structured 320x240 maps on the GPU
  and on the CPU; passes when every metric and every curve point agree within 1e-9. Figures: the
  largest difference and the time of each.
- ``train.py (1 GPU)``: the demo config (``config.json``, data generated into a temporary
  folder) for 2 epochs with ``amp fp16``, ``channels_last`` and the prefetcher, as a user runs
  it; passes on exit status 0 with 2 finite lines in ``metrics.jsonl``.
- ``resume on the CPU``: ``train.py -r <its checkpoint-epoch2.pth> -d cpu`` with
  ``amp off`` and ``channels_last false`` to epoch 3: a GPU checkpoint must load on the CPU.
- ``DDP NCCL + SyncBN``: ``torchrun --standalone --nproc_per_node=N train.py`` with
  ``distributed.mode ddp``, ``backend nccl``, ``sync_bn true``, 1 epoch, for N = 1 and, with two
  GPUs or more, N = 2 (NCCL refuses two ranks on one GPU).
- ``DataParallel``: ``distributed.mode dp`` over every GPU, 1 epoch (needs 2 GPUs: the trainer
  does not wrap a single GPU).
- ``sliding inference``: ``inference.py --mode sliding`` on a 1200x1600 synthetic aerial-like
  image with the newest checkpoint above, on the CPU (float32), on the GPU in float32 and on
  the GPU in fp16 with channels_last; the 8-bit maps of the GPU runs must be within 2
  (float32) and 8 (fp16) grey levels of the CPU map everywhere. Figures: the process times.
- ``ONNX export --half``: ``tools/export_onnx.py --half`` of the checkpoint (its own check runs
  the file in onnxruntime against PyTorch within 1e-2); passes on exit status 0 and a file that
  ``onnx.load`` accepts.

Every subprocess's output goes to ``--logs DIR/<check>.log`` (default: a new temporary
folder, kept and printed at the end). Without a CUDA GPU every check is skipped and the exit
status is 0; with one, the exit status is 1 when any check failed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make the repository's packages importable
    sys.path.insert(0, str(ROOT))

import cv2
import numpy as np
import torch

from bench.common import Scene, argument_parser, synthetic_image
from bench.train_step import (
    Config,
    Setup,
    build_step,
    duts_loader,
    prefetch_timings,
    random_batch,
    write_duts_like,
)
from models.u2net import U2Net
from utils.metrics.sod import SODMetrics
from utils.runtime.prefetcher import DataPrefetcher

SUBPROCESS_TIMEOUT_S = 240
STEP_CONFIGS = (
    Config("float32 NCHW", "off", False),
    Config("float32 channels_last", "off", True),
    Config("fp16 + GradScaler + channels_last", "fp16", True),
    Config("bf16 + channels_last", "bf16", True),
)
AERIAL = Scene(field=(8, 8), green=20, roads=4, shapes=(20, 30), radius=(10, 40), boxes=0.8)


class Skipped(Exception):
    """A check that cannot run on this machine (the message says why)."""


class Failed(Exception):
    """A check that ran and failed (the message says what was found)."""


@dataclass
class Result:
    """One row of the table: ``status`` is pass, FAIL or skip; ``figures`` what was measured."""

    check: str
    status: str
    figures: str
    seconds: float = 0.0


@dataclass
class Context:
    """What the checks share: the GPU, the scratch and log folders, and the trained checkpoint."""

    device: torch.device
    scratch: Path
    logs: Path
    checkpoint: Path | None = None
    run_dirs: dict[str, Path] = field(default_factory=dict)


def run_command(ctx: Context, name: str, args: list[str]) -> float:
    """Run ``python args...`` from the repository root, output to ``<logs>/<name>.log``; return
    its wall seconds. Raises Failed on a non-zero exit (with the log's last lines)."""
    log = ctx.logs / f"{name}.log"
    start = time.perf_counter()
    with log.open("w") as out:
        out.write("$ python " + " ".join(args) + "\n")
        out.flush()
        try:
            code = subprocess.run(
                [sys.executable, *args],
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=SUBPROCESS_TIMEOUT_S,
                check=False,
            ).returncode
        except subprocess.TimeoutExpired:
            code = None
    seconds = time.perf_counter() - start
    if code != 0:
        tail = " | ".join(log.read_text().strip().splitlines()[-3:])
        why = f"timed out after {SUBPROCESS_TIMEOUT_S} s" if code is None else f"exit {code}"
        raise Failed(f"{why}: {tail[-300:]}")
    return seconds


def demo_options(ctx: Context, name: str, epochs: int) -> list[str]:
    """``--opt`` values that put the demo run ``name`` and its data in the scratch folder."""
    data = ctx.scratch / "demo"
    return [
        f"name={name}",
        f"trainer.epochs={epochs}",
        f"trainer.save_dir={ctx.scratch / 'saved'}",
        f"train_loader.args.data_dir={data}",
        f"val_loader.args.data_dir={data}",
    ]


def run_dir_of(ctx: Context, name: str) -> Path:
    """The newest run folder of the demo run ``name``."""
    runs = sorted((ctx.scratch / "saved" / "runs" / name).glob("*"))
    if not runs:
        raise Failed(f"no run folder under {ctx.scratch / 'saved' / 'runs' / name}")
    return runs[-1]


def metric_lines(run_dir: Path) -> list[dict]:
    """The epoch records of ``run_dir/metrics.jsonl``."""
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        raise Failed(f"{path} was not written")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def check_epochs(run_dir: Path, epochs: int) -> dict:
    """The last record of ``run_dir``, checked to be epoch ``epochs`` with a finite MAE."""
    records = [r for r in metric_lines(run_dir) if "MAE" in r]
    if not records or records[-1].get("epoch") != epochs:
        raise Failed(f"{run_dir / 'metrics.jsonl'}: expected epoch {epochs}, got {records[-1:]}")
    if not math.isfinite(records[-1]["MAE"]):
        raise Failed(f"epoch {epochs} MAE is {records[-1]['MAE']}")
    return records[-1]


def check_train_steps(ctx: Context) -> str:
    """TrainStep in every precision / memory format: finite, decreasing losses."""
    setup = Setup(ctx.device, batch_size=8, warmup=3)
    images, masks = random_batch(setup.batch_size, ctx.device)
    figures, problems = [], []
    for config in STEP_CONFIGS:
        if config.amp == "bf16" and not torch.cuda.is_bf16_supported():
            figures.append(f"{config.label}: no bf16 on this GPU")
            continue
        step = build_step("lite", ctx.device, config)
        losses = [float(step(images, masks)) for _ in range(setup.warmup)]
        torch.cuda.synchronize(ctx.device)
        start = time.perf_counter()
        losses += [float(step(images, masks)) for _ in range(10)]
        torch.cuda.synchronize(ctx.device)
        ms = (time.perf_counter() - start) * 100
        figures.append(f"{config.label} {ms:.1f} ms/step")
        if not all(math.isfinite(v) for v in losses) or losses[-1] >= losses[0]:
            problems.append(f"{config.label}: losses {losses[0]:.4f} -> {losses[-1]:.4f}")
        scale = step.scaler.get_scale() if config.amp == "fp16" else 1.0
        if not (math.isfinite(scale) and scale > 0):
            problems.append(f"{config.label}: loss scale {scale}")
    if problems:
        raise Failed("; ".join(problems))
    return ", ".join(figures)


def check_forward(ctx: Context) -> str:
    """The eval-mode probability map on the GPU equals the CPU's within 5e-3."""
    torch.manual_seed(0)
    model = U2Net(variant="lite").eval()
    inputs = torch.randn(4, 3, 320, 320, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        cpu = torch.sigmoid(model(inputs)[0])
        gpu = torch.sigmoid(model.to(ctx.device)(inputs.to(ctx.device))[0]).cpu()
    diff = float((gpu - cpu).abs().max())
    if diff > 5e-3:
        raise Failed(f"largest |GPU - CPU| probability difference {diff:.2e} > 5e-3")
    return f"largest |GPU - CPU| {diff:.1e} (TF32 convolutions: {torch.backends.cudnn.allow_tf32})"


def check_prefetcher(ctx: Context) -> str:
    """Batches through DataPrefetcher equal those copied plainly; data wait off vs on."""
    root = ctx.scratch / "duts_like"
    if not root.exists():
        write_duts_like(root, 64)
    loader = duts_loader(root, 8, 2)
    loader.sampler.set_epoch(0)
    plain = [tuple(t.to(ctx.device) for t in b) for b in DataPrefetcher(loader, ctx.device, False)]
    loader.sampler.set_epoch(0)
    fetched = list(DataPrefetcher(loader, ctx.device, True))
    torch.cuda.synchronize(ctx.device)
    same = len(plain) == len(fetched) and all(
        torch.equal(a, b)
        for pa, pb in zip(plain, fetched, strict=True)
        for a, b in zip(pa, pb, strict=True)
    )
    del loader
    if not same:
        raise Failed(f"prefetched batches differ from plain copies ({len(fetched)} batches)")
    setup = Setup(ctx.device, batch_size=8, warmup=0)
    timings = prefetch_timings(root, setup, "lite", STEP_CONFIGS[2], 16, 2)
    (off_wait, off_step, _), (on_wait, on_step, steps) = timings[False], timings[True]
    return (
        f"{len(plain)} batches equal; data wait/step off {1000 * off_wait:.2f} ms, on "
        f"{1000 * on_wait:.2f} ms (step {1000 * off_step:.1f} / {1000 * on_step:.1f} ms, "
        f"{steps} steps)"
    )


def structured_maps(count: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded uint8 ground truths (0/255, drawn shapes) and blurred noisy predictions of them."""
    rng = np.random.default_rng(7)
    gts, preds = [], []
    for _ in range(count):
        _, gt = synthetic_image(240, 320, Scene(shapes=(1, 4), radius=(10, 70)), rng)
        noisy = cv2.GaussianBlur(gt.astype(np.float32), (0, 0), 5) + rng.normal(0, 30, gt.shape)
        gts.append(gt)
        preds.append(np.clip(noisy, 0, 255).astype(np.uint8))
    return np.stack(preds), np.stack(gts)


def metrics_on(device: torch.device | str, preds: np.ndarray, gts: np.ndarray) -> tuple:
    """(results, curves, seconds) of SODMetrics over the batch on ``device``."""
    start = time.perf_counter()
    metrics = SODMetrics(device=device)
    metrics.update(torch.from_numpy(preds).to(device), torch.from_numpy(gts).to(device))
    results, curves = metrics.compute(), metrics.curves()
    return results, curves, time.perf_counter() - start


def check_metrics(ctx: Context) -> str:
    """Every SOD metric and curve on the GPU equals the CPU's within 1e-9."""
    preds, gts = structured_maps(24)
    metrics_on(ctx.device, preds[:2], gts[:2])  # CUDA context and kernels warmed
    gpu, gpu_curves, gpu_s = metrics_on(ctx.device, preds, gts)
    cpu, cpu_curves, cpu_s = metrics_on("cpu", preds, gts)
    diffs = {name: abs(gpu[name] - cpu[name]) for name in cpu}
    diffs |= {f"{k} curve": float(np.abs(gpu_curves[k] - cpu_curves[k]).max()) for k in cpu_curves}
    worst = max(diffs, key=diffs.get)
    if diffs[worst] > 1e-9:
        bad = {k: f"{v:.1e}" for k, v in diffs.items() if v > 1e-9}
        raise Failed(f"GPU differs from CPU: {bad}")
    return (
        f"{len(cpu)} metrics + {len(cpu_curves)} curves, largest diff {diffs[worst]:.1e} "
        f"({worst}); GPU {gpu_s:.2f} s, CPU {cpu_s:.2f} s for 24 maps"
    )


def check_train_gpu(ctx: Context) -> str:
    """train.py on one GPU with fp16, channels_last and the prefetcher, 2 epochs."""
    options = [*demo_options(ctx, "gpu_fp16", 2), "amp=fp16", "channels_last=true"]
    options.append("trainer.prefetch=true")
    seconds = run_command(ctx, "train_gpu", ["train.py", "-c", "config.json", "--opt", *options])
    run_dir = run_dir_of(ctx, "gpu_fp16")
    last = check_epochs(run_dir, 2)
    ctx.checkpoint = run_dir / "checkpoint-epoch2.pth"
    ctx.run_dirs["gpu_fp16"] = run_dir
    if not ctx.checkpoint.exists():
        raise Failed(f"{ctx.checkpoint} was not written")
    return (
        f"{seconds:.1f} s, epoch 2 MAE {last['MAE']:.4f} maxF {last.get('maxF', float('nan')):.4f}"
    )


def need_checkpoint(ctx: Context) -> Path:
    """The checkpoint of the ``train.py (1 GPU)`` check (Skipped if that check failed)."""
    if ctx.checkpoint is None:
        raise Skipped("needs the checkpoint of train.py (1 GPU)")
    return ctx.checkpoint


def check_resume_cpu(ctx: Context) -> str:
    """The GPU checkpoint resumes on the CPU."""
    checkpoint = need_checkpoint(ctx)
    options = ["trainer.epochs=3", "amp=off", "channels_last=false"]
    args = ["train.py", "-r", str(checkpoint), "-d", "cpu", "--opt", *options]
    seconds = run_command(ctx, "resume_cpu", args)
    run_dir = ctx.run_dirs["gpu_fp16"]
    last = check_epochs(run_dir, 3)
    ctx.checkpoint = run_dir / "checkpoint-epoch3.pth"  # keep_last may remove the epoch-2 one
    return f"{seconds:.1f} s, epoch 3 MAE {last['MAE']:.4f}"


def check_ddp(ctx: Context) -> str:
    """torchrun + NCCL + SyncBN with 1 process per GPU (1, and 2 where there are 2 GPUs)."""
    figures = []
    for procs in (1, 2):
        if procs > torch.cuda.device_count():
            figures.append(f"{procs} processes: skipped ({torch.cuda.device_count()} GPU)")
            continue
        name = f"ddp_nccl_{procs}"
        options = [*demo_options(ctx, name, 1), "distributed.mode=ddp"]
        options += ["distributed.backend=nccl", "distributed.sync_bn=true"]
        launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}"]
        args = [*launcher, "train.py", "-c", "config.json", "--opt", *options]
        seconds = run_command(ctx, name, args)
        last = check_epochs(run_dir_of(ctx, name), 1)
        figures.append(f"{procs} process(es): {seconds:.1f} s, MAE {last['MAE']:.4f}")
    return "; ".join(figures)


def check_data_parallel(ctx: Context) -> str:
    """DataParallel over every GPU (the trainer wraps only from two GPUs on)."""
    count = torch.cuda.device_count()
    if count < 2:
        raise Skipped(f"needs 2 GPUs ({count} here): one GPU is not wrapped in DataParallel")
    options = [*demo_options(ctx, "dp", 1), "distributed.mode=dp", f"n_gpu={count}"]
    seconds = run_command(ctx, "dp", ["train.py", "-c", "config.json", "--opt", *options])
    last = check_epochs(run_dir_of(ctx, "dp"), 1)
    return f"{count} GPUs: {seconds:.1f} s, MAE {last['MAE']:.4f}"


def read_map(folder: Path) -> np.ndarray:
    """The single 8-bit map written under ``folder/maps``."""
    maps = sorted((folder / "maps").glob("*.png"))
    if len(maps) != 1:
        raise Failed(f"expected one map under {folder / 'maps'}, found {len(maps)}")
    return cv2.imread(str(maps[0]), cv2.IMREAD_GRAYSCALE).astype(np.int16)


def check_sliding(ctx: Context) -> str:
    """Sliding inference on a 1200x1600 image: GPU float32 and fp16 maps near the CPU map."""
    checkpoint = need_checkpoint(ctx)
    tiles = ctx.scratch / "tiles"
    tiles.mkdir(exist_ok=True)
    image, _ = synthetic_image(1200, 1600, AERIAL, np.random.default_rng(3))
    cv2.imwrite(str(tiles / "tile.png"), image)
    runs = {"cpu": ["--device", "cpu"], "gpu": ["--device", "cuda"]}
    runs["gpu_fp16"] = ["--device", "cuda", "--amp", "fp16", "--channels-last"]
    maps, seconds = {}, {}
    for name, extra in runs.items():
        out = ctx.scratch / f"sliding_{name}"
        args = ["inference.py", "-m", str(checkpoint), "-i", str(tiles), "-o", str(out)]
        seconds[name] = run_command(ctx, f"sliding_{name}", [*args, "--mode", "sliding", *extra])
        maps[name] = read_map(out)
    worst = {name: int(np.abs(maps[name] - maps["cpu"]).max()) for name in ("gpu", "gpu_fp16")}
    limits = {"gpu": 2, "gpu_fp16": 8}
    if any(worst[name] > limits[name] for name in worst):
        raise Failed(f"largest grey-level difference from the CPU map {worst} > {limits}")
    times = ", ".join(f"{name} {s:.1f} s" for name, s in seconds.items())
    return f"largest |map - CPU map| {worst} grey levels; processes: {times}"


def check_onnx_half(ctx: Context) -> str:
    """tools/export_onnx.py --half: exported, checked by onnxruntime, loadable by onnx."""
    checkpoint = need_checkpoint(ctx)
    target = ctx.scratch / "u2net_lite_fp16.onnx"
    args = ["tools/export_onnx.py", "-m", str(checkpoint), "-o", str(target), "--half"]
    seconds = run_command(ctx, "onnx_half", args)
    import onnx  # a dev dependency, as for the export itself

    onnx.checker.check_model(onnx.load(str(target)))
    last = (ctx.logs / "onnx_half.log").read_text().strip().splitlines()[-1]
    return f"{seconds:.1f} s, {target.stat().st_size / 2**20:.1f} MiB; {last[:120]}"


CHECKS: dict[str, Callable[[Context], str]] = {
    "train step": check_train_steps,
    "forward GPU vs CPU": check_forward,
    "prefetcher": check_prefetcher,
    "CUDA metrics": check_metrics,
    "train.py (1 GPU)": check_train_gpu,
    "resume on the CPU": check_resume_cpu,
    "DDP NCCL + SyncBN": check_ddp,
    "DataParallel": check_data_parallel,
    "sliding inference": check_sliding,
    "ONNX export --half": check_onnx_half,
}


def run_check(name: str, check: Callable[[Context], str], ctx: Context) -> Result:
    """Run one check; any exception is its failure (a check never stops the others)."""
    start = time.perf_counter()
    try:
        status, figures = "pass", check(ctx)
    except Skipped as why:
        status, figures = "skip", str(why)
    except Exception as err:  # every failure is a row of the table
        status, figures = "FAIL", f"{type(err).__name__}: {err}"
    finally:
        torch.cuda.empty_cache()
    result = Result(name, status, figures, time.perf_counter() - start)
    print(f"{name:20} {status:5} {result.seconds:6.1f} s  {figures}", flush=True)
    return result


def describe_gpu() -> str:
    """The GPU, its memory and the software stack, one line."""
    props = torch.cuda.get_device_properties(0)
    return (
        f"{torch.cuda.device_count()} x {props.name} ({props.total_memory / 2**30:.0f} GiB, "
        f"sm_{props.major}{props.minor}), torch {torch.__version__}, CUDA {torch.version.cuda}, "
        f"cuDNN {torch.backends.cudnn.version()}, NCCL "
        f"{'.'.join(map(str, torch.cuda.nccl.version()))}"
    )


def parse_args() -> argparse.Namespace:
    """The command line."""
    parser = argument_parser(__doc__)
    parser.add_argument("--logs", type=Path, help="folder for the subprocesses' logs")
    parser.add_argument("--json", type=Path, help="also write the table to this JSON file")
    parser.add_argument("--only", nargs="+", choices=list(CHECKS), help="run these checks only")
    return parser.parse_args()


def main() -> int:
    """Run the checks (all skipped without a GPU); 1 if any failed."""
    args = parse_args()
    if not torch.cuda.is_available():
        print(f"no CUDA GPU (torch {torch.__version__}): all {len(CHECKS)} checks skipped")
        return 0
    print(describe_gpu(), flush=True)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    logs = args.logs or Path(tempfile.mkdtemp(prefix="u2seg_gpu_check_logs_"))
    logs.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="u2seg_gpu_check_") as tmp:
        ctx = Context(torch.device("cuda", 0), Path(tmp), logs)
        names = args.only or list(CHECKS)
        results = [run_check(name, CHECKS[name], ctx) for name in names]
    failed = [r.check for r in results if r.status == "FAIL"]
    print(
        f"{len(results)} checks: {len(results) - len(failed)} passed or skipped, "
        f"{len(failed)} failed {failed if failed else ''}; logs: {logs}"
    )
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
