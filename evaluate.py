"""Score saved prediction maps against ground-truth masks.

``python evaluate.py --pred PRED_DIR --gt GT_DIR [--json FILE] [--metrics NAME ...]``

Exit status: 0 when every pair was scored; 1 when some pairs were unreadable (they are skipped
and listed, the others scored, the table and JSON written); 2 for a usage error, a missing or
empty folder, an ambiguous file name, or when no pair was found or could be read.
"""

from __future__ import annotations

import argparse
import sys

from utils.io.atomic import write_json
from utils.metrics import METRIC_NAMES
from utils.metrics.folders import EvaluationSettings, evaluate_folders, print_report
from utils.runtime.device import resolve_device


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Score the prediction maps in PRED_DIR against the masks in GT_DIR. Files "
        "are paired by their path relative to the folder, without extension (then by unique "
        "file name); predictions are read as 8-bit grey, masks by the mask rule (0/1-encoded masks "
        "as 0/255, coloured palette PNGs as label maps); GT > 128 is foreground.",
    )
    parser.add_argument(
        "--pred", required=True, help="folder of prediction maps (searched recursively)"
    )
    parser.add_argument(
        "--gt", required=True, help="folder of ground-truth masks (searched recursively)"
    )
    parser.add_argument(
        "--json", help="also write the metrics and the file counts to this JSON file"
    )
    parser.add_argument(
        "--metrics",
        nargs="+",
        choices=METRIC_NAMES,
        metavar="NAME",
        help=f"metrics to compute (default: all): {', '.join(METRIC_NAMES)}",
    )
    parser.add_argument(
        "--device",
        default="auto",
        help="auto (default: the first GPU if there is one, else the CPU), cpu, cuda, cuda:N",
    )
    parser.add_argument("--batch-size", type=int, default=16, help="images per batch (default 16)")
    parser.add_argument(
        "--workers", type=int, default=4, help="threads that read files (default 4; 0: none)"
    )
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error("--batch-size must be at least 1")
    if args.workers < 0:
        parser.error("--workers must be 0 or more")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        device, _ = resolve_device(args.device)
        settings = EvaluationSettings(
            metrics=args.metrics, device=device, batch_size=args.batch_size, workers=args.workers
        )
        results = evaluate_folders(args.pred, args.gt, settings)
    except ValueError as err:  # EvaluationError, or a bad --device
        print(f"error: {err}", file=sys.stderr)
        return 2

    print_report(results, args.pred, args.gt)
    if args.json:
        try:
            write_json(args.json, results)
        except OSError as err:
            print(f"error: cannot write {args.json}: {err}", file=sys.stderr)
            return 2
    return 1 if results["unreadable"] else 0


if __name__ == "__main__":
    sys.exit(main())
