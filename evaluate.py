"""Score saved prediction maps against ground-truth masks: one folder, or a benchmark of several
methods on several datasets.

``python evaluate.py --pred PRED_DIR --gt GT_DIR [--json FILE] [--metrics NAME ...]``

``python evaluate.py --methods NAME=DIR ... --datasets NAME=GT_DIR ... --out OUT_DIR`` (or
``--config bench.json``, see :mod:`utils.metrics.benchmark_spec`): every method on every dataset
(predictions in ``<DIR>/<dataset>/``); writes tables, curves, one JSON and the per-cell caches
into OUT_DIR (:mod:`utils.metrics.benchmark`, :mod:`utils.metrics.reports`).

Exit status: 0 when every pair was scored; 1 when something was missing or unreadable (listed;
the rest scored and written: GT files without a prediction, unreadable pairs; in a benchmark,
also missing folders); 2 for a usage error, a missing or empty folder, an
ambiguous file name, or when no pair was found or could be read (benchmark: in any cell).
"""

from __future__ import annotations

import argparse
import os
import sys
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from utils.runtime.threads import (
    apply_threads,
    thread_layout,
    threads_option_error,
    usable_cores,
    wait_policy,
)

os.environ.update(wait_policy())  # before torch is imported: OpenMP reads it when it loads

from utils.io.atomic import check_writable, write_json
from utils.metrics.folders import (
    EvaluationSettings,
    evaluate_folders,
    format_file_list,
    print_report,
)
from utils.metrics.groups import GROUPINGS
from utils.metrics.metric_set import DEFAULT_METRICS, unknown_metric
from utils.runtime.cpu_memory import exit_without_final_collection, keep_freed_memory
from utils.runtime.device import cpu_without_torch, resolve_device
from utils.runtime.logs import counted

# On the CPU with the default metrics nothing imports torch (a second of CPU time, as much as
# scoring hundreds of pairs): see utils/metrics/scoring.py.


def _add_benchmark_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "benchmark mode (instead of --pred/--gt): several methods on several datasets"
    )
    group.add_argument(
        "--methods",
        nargs="+",
        default=[],
        metavar="NAME=DIR",
        help="methods and their folders, each holding one prediction folder per dataset "
        "(DIR/<dataset>/)",
    )
    group.add_argument(
        "--datasets", nargs="+", default=[], metavar="NAME=GT_DIR", help="datasets and GT folders"
    )
    group.add_argument(
        "--config",
        help="a JSON file of 'datasets' and 'methods' (the --methods/--datasets entries add to "
        "it); see utils/metrics/benchmark_spec.py",
    )
    group.add_argument(
        "--out", help="output folder: tables/, curves/, results.json and cache/ (required)"
    )


def _add_compute_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--metrics",
        nargs="+",
        metavar="NAME",
        help=f"metrics to compute (default: {' '.join(DEFAULT_METRICS)}); the optional ones "
        "(FmeasureV2 handlers such as maxIoU or binDice, relaxFb, si_MAE, maxMSIoU, HCE, ...) "
        "are listed in README: Validation metrics, and by an unknown name's error",
    )
    parser.add_argument(
        "--device",
        default="auto",
        help="auto (default: the first GPU if there is one, else the CPU), cpu, cuda, cuda:N",
    )
    parser.add_argument("--batch-size", type=int, default=16, help="images per batch (default 16)")
    parser.add_argument(
        "--groups",
        choices=GROUPINGS,
        default="auto",
        help="building metrics (IoU, F1, ...) per tile and per group: by Inria city, by folder, "
        "none; auto (default): by city when every file is an Inria tile (austin12, ...), else "
        "none",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="CPU cores to use (default 0: every usable core). On the CPU, that many "
        "single-threaded processes read and score the files; with a GPU, the torch threads "
        "and reader threads of utils/runtime/threads.py",
    )
    parser.add_argument(
        "--workers",
        type=int,
        help="threads that read files when scoring on a GPU or with --threads 1 (default: "
        "those of the --threads layout; 0: read in the scoring thread)",
    )


def _check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """``parser.error`` (exit 2) for invalid numbers and a mix or lack of modes."""
    if args.batch_size < 1:
        parser.error("--batch-size must be at least 1")
    if args.workers is not None and args.workers < 0:
        parser.error("--workers must be 0 or more")
    if threads_option_error(args.threads):
        parser.error(threads_option_error(args.threads))
    if args.metrics and not set(args.metrics) <= set(DEFAULT_METRICS):
        from utils.metrics.sod import ALL_METRIC_NAMES

        unknown = [name for name in args.metrics if name not in ALL_METRIC_NAMES]
        if unknown:
            parser.error(f"--metrics: {unknown_metric(unknown[0], ALL_METRIC_NAMES)}")
    benchmark = bool(args.methods or args.datasets or args.config)
    single = args.pred is not None or args.gt is not None
    if benchmark and single:
        parser.error("give either --pred and --gt, or the benchmark options, not both")
    if benchmark and not args.out:
        parser.error("benchmark mode needs --out DIR")
    if benchmark and args.json:
        parser.error("--json is for --pred/--gt; a benchmark writes OUT/results.json")
    if not benchmark and (args.pred is None or args.gt is None):
        parser.error("give --pred and --gt (or --methods/--datasets/--config and --out)")
    args.benchmark = benchmark


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Score the prediction maps in PRED_DIR against the masks in GT_DIR (or "
        "several methods on several datasets: benchmark mode). Files are paired by their path "
        "relative to the folder, without extension (then by unique file name); predictions are "
        "read as 8-bit grey, masks by the mask rule (0/1-encoded masks as 0/255, coloured "
        "palette PNGs as label maps); GT > 128 is foreground.",
    )
    parser.add_argument("--pred", help="folder of prediction maps (searched recursively)")
    parser.add_argument("--gt", help="folder of ground-truth masks (searched recursively)")
    parser.add_argument(
        "--json", help="also write the metrics and the file counts to this JSON file"
    )
    _add_benchmark_options(parser)
    _add_compute_options(parser)
    args = parser.parse_args(argv)
    _check_args(parser, args)
    return args


def settings_for(args: argparse.Namespace, device: Any) -> EvaluationSettings:
    """The evaluation settings of the command line, with the process and thread layout applied
    to this process: on the CPU (``device`` "cpu"), ``--threads`` (or every usable core)
    single-threaded scoring processes and this one single-threaded, without importing torch; on
    a GPU (a ``torch.device``), :func:`apply_threads`' layout."""
    gpu = str(device) != "cpu"
    if gpu:
        layout = apply_threads(args.threads, gpu=True)
    else:
        import cv2

        keep_freed_memory()  # batches' large arrays: no page faults at every operation
        layout = thread_layout(args.threads if args.threads == 1 else 1)
        cv2.setNumThreads(1)
        # torch's threads too, should a chunk need it (resizing, optional metrics)
        os.environ.setdefault("OMP_NUM_THREADS", str(layout.compute))
    processes = 1 if gpu else min(args.threads or usable_cores(), usable_cores())
    return EvaluationSettings(
        metrics=args.metrics,
        device=device,
        batch_size=args.batch_size,
        workers=layout.io if args.workers is None else args.workers,
        processes=processes,
        grouping=args.groups,
    )


def evaluate_one(args: argparse.Namespace, settings: EvaluationSettings) -> int:
    """``--pred``/``--gt``: score, print, write ``--json``; returns the exit status. An
    unwritable ``--json`` path stops it before the scoring."""
    if args.json:
        try:
            check_writable(args.json)
        except OSError as err:
            print(f"error: --json: cannot write {args.json}: {err}", file=sys.stderr)
            return 2
    results = evaluate_folders(args.pred, args.gt, settings)
    print_report(results, args.pred, args.gt)
    if args.json:
        try:
            write_json(args.json, results)
        except OSError as err:
            print(f"error: cannot write {args.json}: {err}", file=sys.stderr)
            return 2
    return 1 if results["unreadable"] or results["missing_predictions"] else 0


def evaluate_benchmark(args: argparse.Namespace, settings: EvaluationSettings) -> int:
    """Benchmark mode: score, write the outputs, print the problems and the overall table;
    returns the exit status."""
    from utils.metrics.benchmark import run_benchmark
    from utils.metrics.benchmark_spec import OVERALL, build_spec, parse_entries, read_config
    from utils.metrics.reports import markdown_table, table_rows, write_outputs

    datasets, methods = read_config(args.config) if args.config else ({}, {})
    for entries, option, known in (
        (args.datasets, "--datasets", datasets),
        (args.methods, "--methods", methods),
    ):
        given = parse_entries(entries, option)
        for name in sorted(set(given) & set(known)):
            print(f"note: the {option} entry {name} replaces {args.config}'s", file=sys.stderr)
        known.update(given)
    out = Path(args.out)
    spec = build_spec(datasets, methods)
    try:
        check_writable(out / "results.json")
    except OSError as err:
        print(f"error: --out: cannot write into {out}: {err}", file=sys.stderr)
        return 2
    result = run_benchmark(spec, settings, out / "cache")
    try:
        written, removed = write_outputs(result, out)
    except OSError as err:
        print(f"error: cannot write the outputs into {out}: {err}", file=sys.stderr)
        return 2
    if result.problems:
        print(format_file_list("problems", result.problems, limit=50), file=sys.stderr)
    cached = sum(cell not in result.computed for cell in result.cells)
    print(
        f"{counted(len(result.methods), 'method')} x {counted(len(result.datasets), 'dataset')}: "
        f"{counted(len(result.computed), 'cell')} computed, {cached} from the cache; "
        f"{counted(len(written), 'file')} written into {out}"
        + (f"; {counted(len(removed), 'stale file')} of an earlier run removed" if removed else "")
    )
    print(f"\n{OVERALL}:\n{markdown_table(table_rows(result, None), result.metrics)}")
    if not result.cells:
        return 2
    return 1 if result.problems else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        device = "cpu" if cpu_without_torch(args.device) else resolve_device(args.device)[0]
        settings = settings_for(args, device)
        return (evaluate_benchmark if args.benchmark else evaluate_one)(args, settings)
    except ValueError as err:  # EvaluationError, BenchmarkSpecError, or a bad --device
        print(f"error: {err}", file=sys.stderr)
        return 2
    except BrokenProcessPool:
        print(
            "error: a scoring process ended abruptly (killed, e.g. for lack of memory); try a "
            "smaller --batch-size or fewer --threads (a benchmark's finished cells are cached "
            "in OUT/cache and not scored again)",
            file=sys.stderr,
        )
        return 2


if __name__ == "__main__":
    exit_without_final_collection(main())
