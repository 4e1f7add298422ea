"""Predict saliency maps (and masks, cut-outs, overlays) for an image or a folder of images.

``python inference.py -m CHECKPOINT -i INPUT -o OUTPUT_DIR [--mode single|multiscale|sliding]``

Exit status: 0 when every image was predicted and written; 1 when some images failed (each is
reported with its path and skipped, the others are written); 2 for a usage error (bad options,
unreadable model, no input image, an output folder equal to the input folder) or when ``--gt``
evaluation cannot run. Outputs are never read as inputs: an output folder inside the input folder
is skipped.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from utils.runtime.threads import apply_threads, threads_option_error, wait_policy

os.environ.update(wait_policy())  # before torch is imported: OpenMP reads it when it loads

import torch

from u2seg import Predictor
from utils.inference.files import list_inputs, predict_files
from utils.inference.geo_outputs import FORMATS, GeoOptions, GeoOutputs
from utils.inference.outputs import OUTPUT_KINDS, OUTPUT_MARKER
from utils.inference.predictor import MULTISCALE_SCALES, PREDICTION_MODES, PredictOptions
from utils.inference.streaming import stream_files, streamable
from utils.inference.windows import BLENDS
from utils.io.atomic import check_writable, write_json
from utils.metrics.folders import (
    EvaluationSettings,
    evaluate_folders,
    format_file_list,
    print_report,
)
from utils.metrics.groups import GROUPINGS
from utils.preprocessing import NORMALISATIONS
from utils.runtime.cpu_memory import exit_without_final_collection, keep_freed_memory
from utils.runtime.logs import counted
from utils.runtime.precision import AMP_DTYPES


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Predict saliency maps with a U2Net for an image or a folder of images.",
    )
    arg = parser.add_argument
    arg("-m", "--model", required=True, help="U2Seg checkpoint, or official / ported U2Net weights")
    arg("-c", "--config", help="config whose 'arch' builds the model for the weights of -m")
    arg("-i", "--input", required=True, help="image file or folder (searched recursively)")
    arg(
        "-o",
        "--output",
        required=True,
        help="output folder (maps/, masks/, cutouts/, overlays/); not the input folder itself (a "
        "sub-folder of it is fine: it is skipped when reading the inputs)",
    )
    arg(
        "--mode",
        choices=PREDICTION_MODES,
        default="single",
        help="prediction mode (default single)",
    )
    arg(
        "--size",
        type=int,
        help="model input side (default: the config's validation base_size, else 320)",
    )
    arg(
        "--scales",
        type=float,
        nargs="+",
        default=list(MULTISCALE_SCALES),
        help="multiscale: factors of --size (default "
        + " ".join(f"{scale:g}" for scale in MULTISCALE_SCALES)
        + ")",
    )
    arg("--flip", action="store_true", help="also predict the mirrored image and average")
    arg("--window", type=int, help="sliding: window side in pixels (default: --size)")
    arg("--overlap", type=float, default=0.25, help="sliding: overlap fraction (default 0.25)")
    arg("--stride", type=int, help="sliding: step between windows (instead of --overlap)")
    arg("--scale", type=float, default=1.0, help="sliding: resize the image first (default 1)")
    arg(
        "--blend",
        choices=BLENDS,
        default="gaussian",
        help="sliding: weights of overlapping windows (default gaussian)",
    )
    arg(
        "--save",
        default="map",
        help=f"comma-separated outputs: {','.join(OUTPUT_KINDS)} (default map); polygons: "
        "building footprints as GeoJSON and GeoPackage (needs rasterio: requirements-geo.txt)",
    )
    arg(
        "--format",
        choices=FORMATS,
        default="auto",
        help="map and mask files: tif (GeoTIFF on the input's grid), png, or auto (default): "
        "GeoTIFF for georeferenced TIFF inputs, PNG for the others",
    )
    arg(
        "--simplify",
        type=float,
        default=0.0,
        help="polygons: simplification tolerance in map units (default 0: pixel outlines)",
    )
    arg(
        "--min-area",
        type=float,
        default=0.0,
        help="polygons: drop footprints smaller than this, in map units squared (default 0)",
    )
    arg(
        "--threshold",
        type=float,
        default=0.5,
        help="mask: foreground where probability >= this (default 0.5)",
    )
    arg(
        "--post-norm", action="store_true", help="min-max normalise each map (official test script)"
    )
    arg(
        "--normalisation",
        choices=NORMALISATIONS,
        help="input normalisation: imagenet (x / 255) or official (x / max(x)), then the "
        "ImageNet mean/std (default: the weights' own: a checkpoint's config, official for the "
        "official and rembg files)",
    )
    arg("--gt", help="ground-truth folder: score the written maps like evaluate.py")
    arg("--json", help="with --gt: also write the scores to this JSON file")
    arg(
        "--groups",
        choices=GROUPINGS,
        default="auto",
        help="with --gt: building metrics per tile and per group, as evaluate.py --groups "
        "(default auto: by Inria city when every file is an Inria tile)",
    )
    arg("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    arg(
        "--amp",
        nargs="?",
        const="auto",
        default="off",
        choices=[*AMP_DTYPES, "auto"],
        help="mixed precision: off (default), fp16 (CUDA), bf16; --amp alone: fp16 on CUDA, "
        "bf16 on the CPU",
    )
    arg("--channels-last", action="store_true", help="channels-last memory format")
    arg(
        "--fuse",
        action=argparse.BooleanOptionalAction,
        help="fold BatchNorm into the convolutions and fuse the ReLUs, channels-last (default: "
        "on the CPU, where it is faster: README, speed table); --no-fuse runs the model as "
        "trained, whose maps differ by at most one grey level",
    )
    arg(
        "--threads",
        type=int,
        default=0,
        help="CPU threads in all, compute and file I/O (default 0: every core this process may "
        "use; see the README's speed table)",
    )
    arg(
        "--batch-size",
        type=int,
        help="images per forward (sliding: windows); default 8 on a GPU, 1 on the CPU",
    )
    arg(
        "--workers",
        type=int,
        help="threads that read files, and as many that write (default: from --threads: 0 up to "
        "2 threads, i.e. files are read and written between forwards, else 1; 2 on a GPU)",
    )
    args = parser.parse_args(argv)
    args.save = tuple(dict.fromkeys(kind.strip() for kind in args.save.split(",") if kind.strip()))
    unknown = [kind for kind in args.save if kind not in OUTPUT_KINDS]
    if unknown or not args.save:
        parser.error(f"--save {','.join(args.save)}: choose from {', '.join(OUTPUT_KINDS)}")
    if args.gt and "map" not in args.save:
        args.save = ("map", *args.save)  # --gt scores the written maps
    if (args.simplify or args.min_area) and "polygons" not in args.save:
        parser.error("--simplify and --min-area shape the polygons: add polygons to --save")
    if args.simplify < 0 or args.min_area < 0:
        parser.error("--simplify and --min-area must be 0 or more")
    if args.json and not args.gt:
        parser.error("--json writes the --gt scores: give --gt too")
    if not 0 <= args.threshold <= 1:
        parser.error(f"--threshold must be in [0, 1], got {args.threshold}")
    if args.batch_size is not None and args.batch_size < 1:
        parser.error("--batch-size must be at least 1")
    if args.workers is not None and args.workers < 0:
        parser.error("--workers must be 0 or more")
    if threads_option_error(args.threads):
        parser.error(threads_option_error(args.threads))
    return args


def evaluate(args: argparse.Namespace, device: torch.device) -> int:
    """Score the written maps against ``--gt`` like evaluate.py; returns an exit status."""
    maps = Path(args.output) / OUTPUT_KINDS["map"][0]
    results = evaluate_folders(
        maps, args.gt, EvaluationSettings(device=device, workers=args.workers, grouping=args.groups)
    )
    print_report(results, maps, args.gt)
    if args.json:
        write_json(args.json, results)
    return 1 if results["unreadable"] else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    keep_freed_memory()
    try:
        predictor = Predictor.from_checkpoint(
            args.model,
            device=args.device,
            config=args.config,
            amp=args.amp,
            channels_last=args.channels_last,
            mode=args.mode,
            size=args.size,
            scales=args.scales,
            flip=args.flip,
            window=args.window,
            overlap=args.overlap,
            stride=args.stride,
            scale=args.scale,
            blend=args.blend,
            batch_size=args.batch_size,
            post_norm=args.post_norm,
            normalisation=args.normalisation,
            fuse=args.fuse,
        )
        inputs = list_inputs(Path(args.input), Path(args.output))
        geo = GeoOptions(args.format, args.simplify, args.min_area)
        bands = None if predictor.imagery is None else predictor.imagery.bands
        write = GeoOutputs(geo, dict(inputs), args.save, bands)
        check_outputs(args)
    except (ValueError, OSError, ImportError) as err:  # ConfigError is a ValueError
        print(f"error: {err}", file=sys.stderr)
        return 2

    options, device = predictor.options, predictor.device
    layout = apply_threads(args.threads, gpu=device.type == "cuda")
    if args.workers is None:
        args.workers = layout.io
    print(
        f"{predictor.description} on {device}; {options.mode} mode, {describe(options)}, "
        f"{predictor.normalisation} normalisation{', fused' if predictor.fused else ''}; "
        f"{'' if predictor.imagery is None else predictor.imagery.describe() + '; '}"
        f"{counted(len(inputs), 'image')}; threads: {layout.compute} "
        f"compute, {args.workers} read + {args.workers} write"
    )
    if write.note:
        print(write.note, file=sys.stderr)
    start = time.perf_counter()
    streamed = [item for item in inputs if streamable(predictor, write, args.save, item[1])]
    rest = [item for item in inputs if item not in streamed]  # sliding GeoTIFFs: band by band
    written, failures = predict_files(
        predictor, rest, Path(args.output), args.save, args.threshold, args.workers, write
    )
    more, failed = stream_files(
        predictor, streamed, Path(args.output), args.save, args.threshold, write
    )
    written, failures = written + more, failures + failed
    elapsed = time.perf_counter() - start
    rate = (
        f"{written / elapsed:.2f} images/s"
        if written >= elapsed
        else f"{elapsed / max(written, 1):.1f} s/image"
    )
    print(
        f"{counted(written, 'image')} written to {args.output} in "
        f"{elapsed:.1f} s ({rate}); "
        f"{len(failures)} failed"
    )
    if failures:
        print(format_file_list("failed (skipped)", failures, limit=50), file=sys.stderr)
    status = 1 if failures else 0
    if args.gt:
        try:
            status = max(status, evaluate(args, device))
        except (ValueError, OSError) as err:  # EvaluationError is a ValueError
            print(f"error: --gt: {err}", file=sys.stderr)
            return 2
    return status


def check_outputs(args: argparse.Namespace) -> None:
    """Before predicting: the output folder (``-o``) can be created and written, and so can the
    ``--json`` file. Raises ``OSError`` naming the option."""
    for option, path in (("-o", Path(args.output) / OUTPUT_MARKER), ("--json", args.json)):
        if path is None:
            continue
        try:
            check_writable(path)
        except OSError as err:
            target = Path(args.output) if option == "-o" else path
            raise OSError(f"{option}: cannot write {target}: {err}") from err


def describe(options: PredictOptions) -> str:
    """The settings of a mode in one line."""
    if options.mode == "sliding":
        text = (
            f"window {options.window}, stride {options.window_stride}, scale {options.scale:g}, "
            f"{options.blend} blending"
        )
    elif options.mode == "multiscale":
        text = f"size {options.size}, scales {' '.join(f'{s:g}' for s in options.scales)}"
    else:
        text = f"size {options.size}"
    return text + (", flip" if options.flip else "") + (", post-norm" if options.post_norm else "")


if __name__ == "__main__":
    exit_without_final_collection(main())
