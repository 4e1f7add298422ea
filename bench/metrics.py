"""Time PySODMetrics (one image at a time) against ``SODMetrics`` (batches of 16), computation
alone and as whole processes.

``python bench/metrics.py [--images N] [--size 320] [--device cpu] [--threads N] [--files N]
[--busy N ...]`` scores N synthetic uint8 prediction / mask pairs with both, prints ms/image and
the ratio, and the max abs difference of every metric both compute (a sanity line; expect
~1e-12 or less). Then the whole-process rows: ``--files`` pairs (default 300; 0: skipped) are
written as PNG files to a temporary folder, and ``python evaluate.py --pred P --gt G`` and a
plain PySODMetrics loop script (``cv2.imread`` pairs; MAE, Fmeasure, WeightedFmeasure,
Smeasure, Emeasure; :data:`PLAIN_LOOP`) are timed as subprocesses, alternately, ``--repeats``
times each (default 2), in this one run; the medians and their ratio are printed, once for each
``--busy`` count of ``while True: pass`` processes running beside them (default ``0 1``: the
machine as found, then busy with one other process). The masks are
``bench.common.synthetic_image`` masks (seeded: 1-3 discs of radius 5-25 % of the side, 0/255);
each prediction is a noisy soft map around its mask, ``sigmoid(40 d + N(0, 1))`` with ``d`` the
signed distance to the mask's border in units of the side (positive inside), rounded to uint8.
``SODMetrics`` is warmed up on one batch, then timed from its construction to ``compute()``
(``bench.common.measure``: synchronised on a GPU); PySODMetrics is timed per metric family,
``step`` by ``step``.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make the repository's packages importable
    sys.path.insert(0, str(ROOT))

from utils.runtime.threads import wait_policy

os.environ.update(wait_policy())  # before torch is imported: OpenMP reads it when it loads

import cv2
import numpy as np
import torch

from bench.common import (
    Scene,
    add_device_options,
    argument_parser,
    measure,
    set_up,
    synthetic_image,
)
from bench.load import busy as busy_machine
from utils.metrics import DEFAULT_METRICS, SODMetrics

BATCH = 16
SHARPNESS = 40  # slope of the soft maps per unit of signed distance (image sides)

PLAIN_LOOP = """
import os, sys, warnings
import cv2
import py_sod_metrics as psm
warnings.simplefilter("ignore")
pred_dir, gt_dir = sys.argv[1:3]
meters = [psm.MAE(), psm.Fmeasure(), psm.WeightedFmeasure(), psm.Smeasure(), psm.Emeasure()]
for name in sorted(os.listdir(gt_dir)):
    pred = cv2.imread(os.path.join(pred_dir, name), cv2.IMREAD_GRAYSCALE)
    gt = cv2.imread(os.path.join(gt_dir, name), cv2.IMREAD_GRAYSCALE)
    for meter in meters:
        meter.step(pred, gt)
print([meter.get_results() for meter in meters])
"""
"""The reference whole process: a plain PySODMetrics loop over ``cv2.imread`` pairs."""


def soft_prediction(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A noisy uint8 probability map of ``mask``: ``sigmoid(SHARPNESS d + N(0, 1))``."""
    inside = cv2.distanceTransform(mask, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    outside = cv2.distanceTransform(255 - mask, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    signed = (inside - outside) / max(mask.shape)
    prob = 1 / (1 + np.exp(-(signed * SHARPNESS + rng.normal(0, 1, mask.shape))))
    return np.rint(prob * 255).astype(np.uint8)


def synthetic(count: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``count`` uint8 soft maps and 0/255 masks of ``size`` x ``size`` (1-3 discs each)."""
    rng = np.random.default_rng(seed)
    scene = Scene(field=(2, 2), shapes=(1, 3), radius=(0.05 * size, 0.25 * size), noise=0)
    gts = np.stack([synthetic_image(size, size, scene, rng)[1] for _ in range(count)])
    preds = np.stack([soft_prediction(gt, rng) for gt in gts])
    return preds, gts


def run_pysod(
    preds: np.ndarray, gts: np.ndarray
) -> dict[str, tuple[float, dict[str, float]]] | None:
    """``{family: (seconds, results in our names)}`` of PySODMetrics, image by image; None if
    it is not installed."""
    try:
        import py_sod_metrics as psm
    except ImportError:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Fmeasure is deprecated in favour of FmeasureV2
        wanted = ("MAE", "Fmeasure", "WeightedFmeasure", "Smeasure", "Emeasure")
        meters = {name: getattr(psm, name)() for name in wanted if hasattr(psm, name)}
    seconds = dict.fromkeys(meters, 0.0)
    for pred, gt in zip(preds, gts, strict=True):
        for name, meter in meters.items():
            start = time.perf_counter()
            meter.step(pred, gt)
            seconds[name] += time.perf_counter() - start
    res = {name: meter.get_results() for name, meter in meters.items()}
    out: dict[str, dict[str, float]] = {}
    if "MAE" in res:
        out["MAE"] = {"MAE": res["MAE"]["mae"]}
    for family, key, letter in (("Fmeasure", "fm", "F"), ("Emeasure", "em", "E")):
        if family in res:
            curve = res[family][key]["curve"]
            out[family] = {f"max{letter}": curve.max(), f"mean{letter}": curve.mean()}
            out[family][f"adp{letter}"] = res[family][key]["adp"]
    if "WeightedFmeasure" in res:  # whatever SODMetrics calls it
        out["WeightedFmeasure"] = dict.fromkeys(
            ("wFm", "wF", "wFmeasure"), res["WeightedFmeasure"]["wfm"]
        )
    if "Smeasure" in res:
        out["Smeasure"] = {"Sm": res["Smeasure"]["sm"]}
    return {
        family: (seconds[family], {k: float(v) for k, v in values.items()})
        for family, values in out.items()
    }


def run_ours(
    preds: np.ndarray, gts: np.ndarray, device: torch.device
) -> tuple[float, dict[str, float]]:
    """Seconds and results of SODMetrics (every metric it knows), batches of ``BATCH``."""
    pred_t, gt_t = torch.from_numpy(preds).to(device), torch.from_numpy(gts).to(device)
    SODMetrics(device).update(pred_t[:BATCH], gt_t[:BATCH])  # warm-up
    results: dict[str, float] = {}

    def score(_: int) -> int:
        metrics = SODMetrics(device)
        for i in range(0, len(preds), BATCH):
            metrics.update(pred_t[i : i + BATCH], gt_t[i : i + BATCH])
        results.update(metrics.compute())
        return len(preds)

    return measure("SODMetrics", score, device=device).seconds, results


def report(
    ms_ours: float,
    reference: dict[str, tuple[float, dict[str, float]]],
    images: int,
    ours: dict[str, float],
) -> None:
    """Print PySODMetrics' ms/image, the speed-ups and the abs differences of shared metrics."""
    ref = {name: value for _, values in reference.values() for name, value in values.items()}
    ms_ref = 1000 * sum(sec for sec, _ in reference.values()) / images
    shared = [family for family, (_, values) in reference.items() if set(values) & set(ours)]
    ms_shared = 1000 * sum(reference[family][0] for family in shared) / images
    print(f"PySODMetrics ({', '.join(reference)}), one image at a time: {ms_ref:.2f} ms/image")
    print(
        f"speed-up: {ms_shared / ms_ours:.1f}x over the same families ({', '.join(shared)}: "
        f"{ms_shared:.2f} ms/image), {ms_ref / ms_ours:.1f}x over all of PySODMetrics'"
    )
    diffs = {name: abs(ours[name] - ref[name]) for name in ours if name in ref}
    print("abs difference: " + ", ".join(f"{n} {d:.1e}" for n, d in diffs.items()))


def write_pairs(folder: Path, count: int, size: int) -> tuple[Path, Path]:
    """Write ``count`` :func:`synthetic` pairs as ``pred/NNNN.png`` and ``gt/NNNN.png`` under
    ``folder``; returns the two folders."""
    preds, gts = synthetic(count, size, seed=1)
    pred_dir, gt_dir = folder / "pred", folder / "gt"
    for sub in (pred_dir, gt_dir):
        sub.mkdir(parents=True)
    for i, (pred, gt) in enumerate(zip(preds, gts, strict=True)):
        cv2.imwrite(str(pred_dir / f"{i:04d}.png"), pred)
        cv2.imwrite(str(gt_dir / f"{i:04d}.png"), gt)
    return pred_dir, gt_dir


def timed_process(command: list[str]) -> float:
    """Wall-clock seconds of ``command`` run from the repository root; raises
    CalledProcessError (with its output) when it fails."""
    start = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True, text=True)
    return time.perf_counter() - start


def whole_process_row(folders: tuple[Path, Path], what: str, repeats: int, busy: int) -> None:
    """Time ``evaluate.py`` and :data:`PLAIN_LOOP` as whole processes on the pairs of the
    ``(pred, gt)`` folders (``what``: their description; alternately, ``repeats`` times each,
    with ``busy`` spinning processes beside them) and print the medians and the ratio."""
    pred_dir, gt_dir = folders
    ours_cmd = [sys.executable, "evaluate.py", "--pred", str(pred_dir), "--gt", str(gt_dir)]
    plain_cmd = [sys.executable, "-c", PLAIN_LOOP, str(pred_dir), str(gt_dir)]
    times: dict[str, list[float]] = {"evaluate.py": [], "plain loop": []}
    with busy_machine(busy):
        for _ in range(repeats):
            times["evaluate.py"].append(timed_process(ours_cmd))
            times["plain loop"].append(timed_process(plain_cmd))
    ours, plain = (statistics.median(values) for values in times.values())
    load = f"busy ({busy} spinning process{'es' * (busy > 1)} beside)" if busy else "as found"
    print(
        f"whole process, {what}, machine {load}: evaluate.py "
        f"{ours:.2f} s, plain PySODMetrics loop {plain:.2f} s (medians of {repeats}): "
        f"{plain / ours:.2f}x"
    )


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--images", type=int, default=100, help="number of pairs (default 100)")
    parser.add_argument("--size", type=int, default=320, help="image side (default 320)")
    parser.add_argument(
        "--files", type=int, default=300, help="PNG pairs of the whole-process row (0: skip it)"
    )
    parser.add_argument(
        "--repeats", type=int, default=2, help="runs of each whole process (default 2)"
    )
    parser.add_argument(
        "--busy",
        type=int,
        nargs="+",
        default=[0, 1],
        metavar="N",
        help="spinning processes beside the whole processes, one row per count (default: 0 1)",
    )
    add_device_options(parser, default="cpu")
    args = parser.parse_args()
    device, _ = set_up(args, keep_freed=False)

    preds, gts = synthetic(args.images, args.size)
    print(
        f"{args.images} pairs of {args.size}x{args.size}, torch threads {torch.get_num_threads()}"
    )
    ours_s, ours = run_ours(preds, gts, device)
    ms_ours = 1000 * ours_s / args.images
    print(f"SODMetrics ({', '.join(DEFAULT_METRICS)}), batch {BATCH}: {ms_ours:.2f} ms/image")
    reference = run_pysod(preds, gts)
    if reference is None:
        print("PySODMetrics is not installed (pip install pysodmetrics): skipped")
        return
    report(ms_ours, reference, args.images, ours)
    if args.files > 0:
        with tempfile.TemporaryDirectory() as tmp:
            folders = write_pairs(Path(tmp), args.files, args.size)
            what = f"{args.files} PNG pairs of {args.size}x{args.size}"
            for busy in args.busy:
                whole_process_row(folders, what, max(1, args.repeats), busy)


if __name__ == "__main__":
    main()
