"""Score saved prediction maps against ground-truth masks: pairing, reading, metrics, reports.

Used by ``evaluate.py`` (and reusable by any script that writes maps and wants their scores).

Pairing rule (:func:`pair_files`): both folders are scanned recursively for image files
(:data:`IMAGE_EXTENSIONS`, any case; names starting with ``.`` are skipped, and so is the other
folder when one lies inside the other). A prediction and a ground truth are paired when their
paths relative to their folders are equal without the extension (``a/x.png`` with ``a/x.jpg``).
A file left over on both sides is then paired by its name without extension alone, but only
when that name occurs exactly once in the whole GT tree and once in the whole prediction tree
(so a flat prediction folder matches a GT tree with sub-folders, and nothing is ever guessed).
Two files of one folder with the same relative path but different extensions are an error.

Reading: predictions are read as 8-bit grey with :func:`utils.io.images.read_grey` (colour maps
are converted with ``COLOR_BGR2GRAY``, alpha is dropped, 16-bit data is scaled to 8 bits); ground
truth with :func:`utils.io.images.read_mask`, the same plus the mask rule (a 0/1-encoded mask is
read as 0/255, a coloured palette PNG as label map), and the 0/1-encoded masks are counted
(``"binary_01_masks"``). A file that cannot be read is skipped and reported (``"unreadable"``);
the others are scored.
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from utils.io.images import IMAGE_EXTENSIONS, ImageNameClash, find_images
from utils.metrics.binary import SCORES
from utils.metrics.groups import TileScores, format_group_table, tile_groups
from utils.metrics.scoring import Pair, PairScorer

REPORT_KEYS = (
    "tile_groups",
    "num_pairs",
    "missing_predictions",
    "unmatched_predictions",
    "resized_predictions",
    "unreadable",
    "binary_01_masks",
)
"""The keys of a :func:`evaluate_folders` result that are not metrics."""


class EvaluationError(ValueError):
    """A folder is missing or empty, names are ambiguous, or no pair could be scored."""


def _check_folder(folder: str | os.PathLike, what: str) -> Path:
    path = Path(folder)
    if not path.exists():
        raise EvaluationError(f"{what} folder does not exist: {path}")
    if not path.is_dir():
        raise EvaluationError(f"{what} folder is not a directory: {path}")
    return path


def pair_files(
    pred_dir: str | os.PathLike, gt_dir: str | os.PathLike
) -> tuple[list[Pair], list[str], list[str]]:
    """Pair the prediction maps under ``pred_dir`` with the masks under ``gt_dir``.

    Returns ``(pairs, missing_predictions, unmatched_predictions)``: the ``(pred, gt)`` path pairs
    sorted by GT path, the GT files without a prediction and the predictions without a GT file
    (paths relative to their folder, posix, sorted). See the module docstring for the rule.
    Raises :class:`EvaluationError` if a folder does not exist or holds no image, or if a name
    is ambiguous. Finding no pair is not an error here (``pairs`` is empty).
    """
    pred_root = _check_folder(pred_dir, "prediction")
    gt_root = _check_folder(gt_dir, "ground-truth")
    pred_resolved, gt_resolved = pred_root.resolve(), gt_root.resolve()
    try:
        gt_files = find_images(
            gt_root, skip=pred_resolved if pred_resolved != gt_resolved else None
        )
        pred_files = find_images(
            pred_root, skip=gt_resolved if pred_resolved != gt_resolved else None
        )
    except ImageNameClash as err:
        raise EvaluationError(str(err)) from err
    for files, root, what in (
        (gt_files, gt_root, "ground-truth"),
        (pred_files, pred_root, "prediction"),
    ):
        if not files:
            raise EvaluationError(
                f"{what} folder {root} holds no image file ({', '.join(IMAGE_EXTENSIONS)})"
            )

    matched = {key: key for key in gt_files if key in pred_files}
    # Fallback: the same file name (without extension), unique in both whole trees.
    gt_names = Counter(key.rsplit("/", 1)[-1] for key in gt_files)
    pred_by_name: dict[str, list[str]] = {}
    for key in pred_files:
        pred_by_name.setdefault(key.rsplit("/", 1)[-1], []).append(key)
    taken = set(matched.values())
    for key in gt_files:
        if key in matched:
            continue
        name = key.rsplit("/", 1)[-1]
        candidates = pred_by_name.get(name, [])
        if gt_names[name] == 1 and len(candidates) == 1 and candidates[0] not in taken:
            matched[key] = candidates[0]
            taken.add(candidates[0])

    pairs = [(pred_files[matched[key]], gt_files[key]) for key in sorted(matched)]
    missing = sorted(
        gt_files[key].relative_to(gt_root).as_posix() for key in gt_files if key not in matched
    )
    unmatched = sorted(
        pred_files[key].relative_to(pred_root).as_posix() for key in pred_files if key not in taken
    )
    return pairs, missing, unmatched


@dataclass(frozen=True)
class EvaluationSettings:
    """How :func:`evaluate_pairs` and :func:`evaluate_folders` score the pairs.

    ``metrics``: the metric names to compute (``None``: the defaults; stored as a tuple);
    ``device``: where the metrics are computed (a string or a ``torch.device``);
    ``batch_size``: pairs read and scored at a time (>= 1); ``workers``: threads that read files
    when scoring in this process (0: read in the calling thread); ``processes``: single-threaded
    worker processes that read and score (CPU only, see :mod:`utils.metrics.scoring`; 1: score in
    this process); ``progress``: show a tqdm bar; ``grouping``: per-tile and per-group building
    scores (:func:`~utils.metrics.groups.tile_groups`: ``auto``, ``city``, ``folder``,
    ``none``). Raises ValueError for ``batch_size < 1``, ``workers < 0``, ``processes < 1`` or
    another ``grouping``.
    """

    metrics: Sequence[str] | None = None
    device: Any = "cpu"
    batch_size: int = 16
    workers: int = 4
    processes: int = 1
    progress: bool = True
    grouping: str = "auto"

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.workers < 0:
            raise ValueError(f"workers must be >= 0, got {self.workers}")
        if self.processes < 1:
            raise ValueError(f"processes must be >= 1, got {self.processes}")
        if self.metrics is not None:
            object.__setattr__(self, "metrics", tuple(self.metrics))
        tile_groups([], self.grouping)  # checks the name

    def scorer(self, per_pair: bool = False) -> PairScorer:
        """A :class:`PairScorer` with these settings (use it as a context manager), counting
        each pair's confusion if ``per_pair``."""
        return PairScorer(
            self.metrics, self.device, self.batch_size, self.processes, self.workers, per_pair
        )


def evaluate_pairs(
    pairs: Sequence[Pair],
    settings: EvaluationSettings | None = None,
    tiles: dict[Pair, tuple[str, str | None]] | None = None,
) -> dict[str, Any]:
    """Score ``pairs`` as ``settings`` say (default: the default metrics, on the CPU).

    Files are read and scored ``settings.batch_size`` pairs at a time
    (:class:`~utils.metrics.scoring.PairScorer`); :meth:`MetricSet.update` gets them as lists,
    which batches equal-size images and resizes a prediction to its GT's size (bilinear on the
    0..255 values). Returns the metric values (in the metric set's order) and ``num_pairs``
    (pairs scored), ``resized_predictions`` (how many had another size than their GT),
    ``unreadable`` (the error message, naming the file, of every skipped pair) and
    ``binary_01_masks`` (how many GT masks scored were 0/1-encoded, read as 0/255).
    With ``tiles`` (each pair's tile name and group) and the binary metrics among those
    computed, also ``"<metric>/<group>"`` and ``"<metric>/<tile>"``
    (:class:`~utils.metrics.groups.TileScores`) and ``tile_groups`` (tile name to group).
    Raises :class:`EvaluationError` when no pair could be read.
    """
    settings = settings or EvaluationSettings()
    quiet = None if settings.progress else True  # tqdm's disable: None hides it off a TTY
    # The scorer first: its worker processes fork before tqdm starts a thread.
    with (
        settings.scorer(per_pair=tiles is not None) as scorer,
        tqdm(total=len(pairs), desc="evaluate", unit="img", disable=quiet) as bar,
    ):
        scores = scorer.score(pairs, bar.update)
    if scores.scorer.num_images == 0:
        shown = "; ".join(scores.unreadable[:3])
        raise EvaluationError(f"none of the {len(pairs)} pair(s) could be read: {shown}")
    metrics = scores.scorer.compute()
    grouped: dict[str, Any] = {}
    if tiles is not None and "IoU" in metrics:
        names = list(dict.fromkeys(tiles[pair] for pair in pairs))
        per_tile = TileScores([name for name, _ in names], [group for _, group in names])
        index = {name: i for i, (name, _) in enumerate(names)}
        for pair, confusion in scores.confusion.items():
            per_tile.add(np.array([index[tiles[pair][0]]]), confusion[None])
        grouped = {**per_tile.compute(), "tile_groups": dict(names)}
    return {
        **metrics,
        **grouped,
        "num_pairs": scores.scorer.num_images,
        "resized_predictions": scores.resized,
        "unreadable": scores.unreadable,
        "binary_01_masks": scores.binary_01,
    }


def evaluate_folders(
    pred_dir: str | os.PathLike,
    gt_dir: str | os.PathLike,
    settings: EvaluationSettings | None = None,
) -> dict[str, Any]:
    """Pair the files of two folders (:func:`pair_files`) and score them (:func:`evaluate_pairs`
    with ``settings``; default: all metrics, on the CPU).

    Returns the JSON-ready result: every metric (in the metric set's order; with per-tile
    scores, see :func:`evaluate_pairs`, then ``tile_groups``), ``num_pairs``,
    ``missing_predictions`` (GT files without a prediction), ``unmatched_predictions``
    (predictions without a GT file), ``resized_predictions``, ``unreadable`` and
    ``binary_01_masks``. Raises
    :class:`EvaluationError` for a missing or empty folder, an ambiguous name, when no pair is
    found or when no pair can be read.
    """
    pairs, missing, unmatched = pair_files(pred_dir, gt_dir)
    if not pairs:
        raise EvaluationError(
            f"no prediction in {pred_dir} matches a ground-truth file in {gt_dir} "
            f"({len(missing)} GT files, e.g. {missing[0]!r}; {len(unmatched)} predictions, e.g. "
            f"{unmatched[0]!r}); files are paired by relative path without extension"
        )
    settings = settings or EvaluationSettings()
    names = [gt.relative_to(gt_dir).with_suffix("").as_posix() for _, gt in pairs]
    groups = tile_groups(names, settings.grouping)
    tiles = (
        None if groups is None else dict(zip(pairs, zip(names, groups, strict=True), strict=True))
    )
    result = evaluate_pairs(pairs, settings, tiles)
    return {
        **{name: value for name, value in result.items() if name not in REPORT_KEYS},
        **({"tile_groups": result["tile_groups"]} if "tile_groups" in result else {}),
        "num_pairs": result["num_pairs"],
        "missing_predictions": missing,
        "unmatched_predictions": unmatched,
        "resized_predictions": result["resized_predictions"],
        "unreadable": result["unreadable"],
        "binary_01_masks": result["binary_01_masks"],
    }


def format_table(results: dict[str, Any], names: Iterable[str]) -> str:
    """The metrics ``names`` of ``results`` as a two-column text table."""
    names = list(names)
    width = max(len("metric"), *(len(name) for name in names))
    lines = [f"{'metric':<{width}}  value", f"{'-' * width}  ------"]
    lines += [f"{name:<{width}}  {results[name]:.4f}" for name in names]
    return "\n".join(lines)


def format_file_list(title: str, files: Sequence[str], limit: int = 10) -> str:
    """``title (count):`` and the first ``limit`` entries, one per line, then ``... and N more``."""
    lines = [f"{title} ({len(files)}):", *(f"  {name}" for name in files[:limit])]
    if len(files) > limit:
        lines.append(f"  ... and {len(files) - limit} more")
    return "\n".join(lines)


def print_report(
    results: dict[str, Any], pred_dir: str | os.PathLike, gt_dir: str | os.PathLike
) -> None:
    """Print the result of :func:`evaluate_folders`: file lists (missing, unmatched, unreadable)
    and the count of 0/1-encoded masks (when there are any) on stderr, then the pair count and
    the metric table on stdout."""
    for key, title in (
        ("missing_predictions", "ground-truth files without a prediction (not scored)"),
        ("unmatched_predictions", "predictions without a ground-truth file (ignored)"),
        ("unreadable", "unreadable files (pairs skipped)"),
    ):
        if results[key]:
            print(format_file_list(title, results[key]), file=sys.stderr)
    if results.get("binary_01_masks"):
        print(
            f"{results['binary_01_masks']} of {results['num_pairs']} ground-truth masks are "
            "0/1-encoded (maximum 1); they were read as 0/255",
            file=sys.stderr,
        )
    print(f"{results['num_pairs']} pairs  (predictions: {pred_dir}, ground truth: {gt_dir})")
    if results["resized_predictions"]:
        print(f"{results['resized_predictions']} predictions resized to their ground truth's size")
    print(
        format_table(
            results, [name for name in results if name not in REPORT_KEYS and "/" not in name]
        )
    )
    groups = list(dict.fromkeys((results.get("tile_groups") or {}).values()))
    if groups:
        rows = {group: [results[f"{metric}/{group}"] for metric in SCORES] for group in groups}
        rows["all"] = [results[metric] for metric in SCORES]
        print(f"\nper group ({len(results['tile_groups'])} tiles; per tile in the JSON):")
        print(format_group_table(rows))
