"""Benchmark mode: every method on every dataset, each (method, dataset) cell scored once and
cached (:mod:`utils.metrics.cell_cache`), the per-dataset and overall metrics and curves derived
from the cached metric state.

A cell's numbers are those of ``evaluate.py --pred <its folder> --gt <the dataset's GT>`` (the
same pairing, reading, chunks and sums: :class:`~utils.metrics.scoring.PairScorer`). The overall
numbers of a method are those of the union of its datasets' images: the states of its cells
summed, as if every pair were scored at once (so ``maxF`` is the maximum of the pooled curve,
and the per-image means weigh each dataset by its size); a method without a scored cell for
some dataset that others have gets no overall numbers.

Problems never stop a run: a missing GT or prediction folder, GT files without a prediction and
unreadable files are listed in :attr:`BenchmarkResult.problems` (each finished cell is already
cached when the next starts).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from utils.metrics.benchmark_spec import BenchmarkSpec
from utils.metrics.cell_cache import CellResult, cache_key, load_cell, save_cell
from utils.metrics.folders import EvaluationError, EvaluationSettings, pair_files
from utils.metrics.metric_set import MetricSet
from utils.metrics.scoring import Pair, PairScores, metric_set

CURVE_METRIC = "maxF"
"""A metric of the F-measure family: scored in every cell, for :meth:`MetricSet.curves`."""

Cell = tuple[str, str]
"""``(method, dataset)``."""


@dataclass
class BenchmarkResult:
    """What :func:`run_benchmark` found: the reported ``metrics`` (names), the ``scored`` names
    (those plus :data:`CURVE_METRIC`), the spec's ``methods`` and ``datasets`` (in order), the
    ``cells`` scored (from the cache or computed), those ``computed`` in this run, and the
    ``problems`` (one line each: missing folders, missing and unreadable files, failed cells)."""

    metrics: tuple[str, ...]
    scored: tuple[str, ...]
    methods: list[str]
    datasets: list[str]
    cells: dict[Cell, CellResult] = field(default_factory=dict)
    computed: list[Cell] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def merged(self, cells: Sequence[Cell]) -> MetricSet:
        """A CPU metric set holding the summed state of ``cells`` (all scored)."""
        scorer = metric_set(self.scored)
        for cell in cells:
            scorer.add_state(self.cells[cell].state)
        return scorer

    def overall_cells(self, method: str) -> list[Cell] | None:
        """The cells of ``method`` on every dataset that any method was scored on, or None when
        it lacks one of them."""
        scored = [d for d in self.datasets if any((m, d) in self.cells for m in self.methods)]
        cells = [(method, dataset) for dataset in scored]
        return cells if cells and all(cell in self.cells for cell in cells) else None

    def _cells_of(self, method: str, dataset: str | None) -> list[Cell] | None:
        """The scored cells behind ``method`` on ``dataset`` (None: overall), or None."""
        if dataset is None:
            return self.overall_cells(method)
        return [(method, dataset)] if (method, dataset) in self.cells else None

    def values(self, method: str, dataset: str | None) -> dict[str, float] | None:
        """The reported metrics of ``method`` on ``dataset`` (None: overall), or None when it
        has no numbers there."""
        cells = self._cells_of(method, dataset)
        if cells is None:
            return None
        computed = self.merged(cells).compute()
        return {name: computed[name] for name in self.metrics}

    def curves(self, method: str, dataset: str) -> dict[str, np.ndarray] | None:
        """``precision``, ``recall`` and ``fmeasure`` curves (:meth:`MetricSet.curves`) of a
        scored cell, else None."""
        if (method, dataset) not in self.cells:
            return None
        return self.merged([(method, dataset)]).curves()

    def num_pairs(self, method: str, dataset: str | None) -> int | None:
        """Pairs scored for ``method`` on ``dataset`` (None: overall), or None."""
        cells = self._cells_of(method, dataset)
        return None if cells is None else sum(self.cells[cell].num_pairs for cell in cells)


def scored_metrics(settings: EvaluationSettings) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The reported metric names of ``settings`` (the metric set's choice for
    ``settings.metrics``) and the names scored (those and :data:`CURVE_METRIC`)."""
    reported = metric_set(settings.metrics).names
    extra = () if CURVE_METRIC in reported else (CURVE_METRIC,)
    return reported, reported + extra


@dataclass
class PlannedCell:
    """A cell to score: its ``pairs`` and the file lists of :func:`pair_files`."""

    pairs: list[Pair]
    missing: list[str]
    unmatched: list[str]


def _plan(spec: BenchmarkSpec, result: BenchmarkResult) -> dict[Cell, PlannedCell]:
    """The pairs of every cell that can be scored; the others' problems go to ``result``."""
    planned: dict[Cell, PlannedCell] = {}
    for dataset, gt_dir in spec.datasets.items():
        if not gt_dir.is_dir():
            result.problems.append(f"dataset {dataset}: ground-truth folder {gt_dir} not found")
            continue
        for method in spec.methods:
            pred_dir = spec.predictions[method][dataset]
            if pred_dir is None:
                result.problems.append(f"{method} on {dataset}: no prediction folder given")
                continue
            try:
                pairs, missing, unmatched = pair_files(pred_dir, gt_dir)
            except EvaluationError as err:
                result.problems.append(f"{method} on {dataset}: {err}")
                continue
            if not pairs:
                result.problems.append(
                    f"{method} on {dataset}: no file of {pred_dir} matches one of {gt_dir} "
                    f"({len(missing)} GT files)"
                )
                continue
            planned[(method, dataset)] = PlannedCell(pairs, missing, unmatched)
    return planned


def _file_problems(cell: Cell, report: CellResult) -> list[str]:
    """The problem lines of a scored cell's file report (missing and unreadable files)."""
    method, dataset = cell
    lines = []
    if report.missing_predictions:
        shown = ", ".join(report.missing_predictions[:3])
        lines.append(
            f"{method} on {dataset}: {len(report.missing_predictions)} ground-truth file(s) "
            f"without a prediction, not scored (e.g. {shown})"
        )
    lines += [f"{method} on {dataset}: unreadable, skipped: {msg}" for msg in report.unreadable]
    return lines


def _cell_result(scores: PairScores, plan: PlannedCell) -> CellResult:
    """The :class:`CellResult` of a cell's merged scores and its file lists."""
    return CellResult(
        state=[array.copy() for array in scores.scorer.state_arrays()],
        num_pairs=scores.scorer.num_images,
        missing_predictions=plan.missing,
        unmatched_predictions=plan.unmatched,
        resized_predictions=scores.resized,
        unreadable=scores.unreadable,
        binary_01_masks=scores.binary_01,
    )


def run_benchmark(
    spec: BenchmarkSpec, settings: EvaluationSettings, cache_dir: Path
) -> BenchmarkResult:
    """Score every method of ``spec`` on every dataset as ``settings`` say, reusing and filling
    the cell caches under ``cache_dir`` (``<method>/<dataset>.json``), with one tqdm bar over
    every pair of every cell (cached cells count at once). Raises ValueError for unknown metric
    names; every other problem is listed in the result."""
    reported, scored = scored_metrics(settings)
    result = BenchmarkResult(reported, scored, spec.methods, list(spec.datasets))
    planned = _plan(spec, result)
    shapes = [list(array.shape) for array in metric_set(scored).state_arrays()]
    scorer = replace(settings, metrics=scored).scorer()
    quiet = None if settings.progress else True
    total = sum(len(plan.pairs) for plan in planned.values())
    with scorer, tqdm(total=total, desc="benchmark", unit="img", disable=quiet) as bar:
        for (method, dataset), plan in planned.items():
            path = cache_dir / method / f"{dataset}.json"
            key = cache_key(plan.pairs, scored, shapes)
            cell = load_cell(path, key)
            if cell is None:
                bar.set_postfix_str(f"{method} on {dataset}")
                cell = _cell_result(scorer.score(plan.pairs, bar.update), plan)
                save_cell(path, key, cell)
                result.computed.append((method, dataset))
            else:  # its scores are those of its pairs; its file lists are today's
                cell.missing_predictions, cell.unmatched_predictions = plan.missing, plan.unmatched
                bar.update(len(plan.pairs))
            if cell.num_pairs:
                result.cells[(method, dataset)] = cell
            else:
                result.problems.append(f"{method} on {dataset}: none of the pairs could be read")
            result.problems += _file_problems((method, dataset), cell)
    return result
