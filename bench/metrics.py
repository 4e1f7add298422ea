"""Time PySODMetrics (one image at a time) against ``SODMetrics`` (batches of 16).

``python bench/metrics.py [--images N] [--size 320] [--device cpu]`` scores N synthetic uint8
prediction / mask pairs (smooth blobs with noise) with both, prints ms/image and the ratio, and
the max abs difference of every metric both compute (a sanity line; expect ~1e-12 or less).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from utils.metrics import METRIC_NAMES, SODMetrics

BATCH = 16


def synthetic(count: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``count`` uint8 maps and 0/255 masks of ``size`` x ``size``: 1-3 blobs, noisy soft maps."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    preds = np.empty((count, size, size), np.uint8)
    gts = np.empty((count, size, size), np.uint8)
    for i in range(count):
        field = np.zeros((size, size))
        for _ in range(rng.integers(1, 4)):
            cy, cx, r = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.05, 0.25)
            field = np.maximum(field, r - np.hypot(yy - cy, xx - cx))
        gts[i] = np.where(field > 0, 255, 0)
        prob = 1 / (1 + np.exp(-(field * 40 + rng.normal(0, 1, (size, size)))))
        preds[i] = np.rint(prob * 255)
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


def run_ours(preds: np.ndarray, gts: np.ndarray, device: str) -> tuple[float, dict[str, float]]:
    """Seconds and results of SODMetrics (every metric it knows), batches of ``BATCH``."""
    pred_t, gt_t = torch.from_numpy(preds).to(device), torch.from_numpy(gts).to(device)
    SODMetrics(device).update(pred_t[:BATCH], gt_t[:BATCH])  # warm-up
    sync = torch.cuda.synchronize if pred_t.is_cuda else lambda: None
    sync()
    start = time.perf_counter()
    metrics = SODMetrics(device)
    for i in range(0, len(preds), BATCH):
        metrics.update(pred_t[i : i + BATCH], gt_t[i : i + BATCH])
    results = metrics.compute()
    sync()
    return time.perf_counter() - start, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=100, help="number of pairs (default 100)")
    parser.add_argument("--size", type=int, default=320, help="image side (default 320)")
    parser.add_argument("--device", default="cpu", help="device of SODMetrics (default cpu)")
    args = parser.parse_args()

    preds, gts = synthetic(args.images, args.size)
    print(
        f"{args.images} pairs of {args.size}x{args.size}, torch threads {torch.get_num_threads()}"
    )
    ours_s, ours = run_ours(preds, gts, args.device)
    ms_ours = 1000 * ours_s / args.images
    print(f"SODMetrics ({', '.join(METRIC_NAMES)}), batch {BATCH}: {ms_ours:.2f} ms/image")
    reference = run_pysod(preds, gts)
    if reference is None:
        print("PySODMetrics is not installed (pip install pysodmetrics): skipped")
        return
    ref = {name: value for _, values in reference.values() for name, value in values.items()}
    ms_ref = 1000 * sum(sec for sec, _ in reference.values()) / args.images
    shared = [family for family, (_, values) in reference.items() if set(values) & set(ours)]
    ms_shared = 1000 * sum(reference[family][0] for family in shared) / args.images
    print(f"PySODMetrics ({', '.join(reference)}), one image at a time: {ms_ref:.2f} ms/image")
    print(
        f"speed-up: {ms_shared / ms_ours:.1f}x over the same families ({', '.join(shared)}: "
        f"{ms_shared:.2f} ms/image), {ms_ref / ms_ours:.1f}x over all of PySODMetrics'"
    )
    diffs = {name: abs(ours[name] - ref[name]) for name in ours if name in ref}
    print("abs difference: " + ", ".join(f"{n} {d:.1e}" for n, d in diffs.items()))


if __name__ == "__main__":
    main()
