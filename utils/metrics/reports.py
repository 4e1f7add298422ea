"""The benchmark's tables (Markdown, CSV, LaTeX; one per dataset and one overall), its JSON, and
the writing of all its outputs (:func:`write_outputs`).

A table has a row per method and a column per metric, plus the number of pairs scored
(``images``). In Markdown and LaTeX, values have :data:`DIGITS` decimals and, per metric
column, the best shown value is bold and the second best underlined, by the metric's direction
(:data:`utils.metrics.HIGHER_IS_BETTER`); equal shown values get equal marks. A method without
numbers there shows ``-``. The CSV holds the full float64 values, unmarked.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from utils.io.atomic import write_json, write_text
from utils.metrics import HIGHER_IS_BETTER
from utils.metrics.benchmark import BenchmarkResult
from utils.metrics.benchmark_spec import OVERALL
from utils.metrics.plots import write_curves

DIGITS = 4
"""Decimals shown in the Markdown and LaTeX tables (and used to rank them)."""

MISSING = "-"

Rows = list[tuple[str, int | None, dict[str, float] | None]]
"""``(method, pairs scored, metrics)`` of each row of a table (None: no numbers)."""


def table_rows(result: BenchmarkResult, dataset: str | None) -> Rows:
    """The rows of the table of ``dataset`` (None: overall)."""
    return [
        (method, result.num_pairs(method, dataset), result.values(method, dataset))
        for method in result.methods
    ]


def ranks(values: Sequence[float | None], higher_is_better: bool) -> list[int | None]:
    """Rank (1: best, 2: second, ...) of each value rounded to :data:`DIGITS` decimals among
    the distinct rounded values, by direction; None and NaN get None (unranked)."""
    shown = [None if v is None or math.isnan(v) else round(v, DIGITS) for v in values]
    distinct = sorted({v for v in shown if v is not None}, reverse=higher_is_better)
    return [None if v is None else distinct.index(v) + 1 for v in shown]


def _marked_cells(
    rows: Rows, metrics: Sequence[str], mark: Callable[[str, int | None], str]
) -> list[list[str]]:
    """The formatted metric cells of ``rows``, each passed through ``mark(text, rank)``."""
    columns = []
    for name in metrics:
        values = [None if m is None else m[name] for _, _, m in rows]
        column_ranks = ranks(values, HIGHER_IS_BETTER[name])
        columns.append(
            [
                MISSING if v is None else mark(f"{v:.{DIGITS}f}", rank)
                for v, rank in zip(values, column_ranks, strict=True)
            ]
        )
    return [list(cells) for cells in zip(*columns, strict=True)] if columns else []


def _count(pairs: int | None) -> str:
    return MISSING if pairs is None else str(pairs)


def markdown_table(rows: Rows, metrics: Sequence[str]) -> str:
    """A Markdown table (best bold, second underlined with ``<u>``), arrows after the metric
    names giving their direction."""

    def mark(text: str, rank: int | None) -> str:
        return {1: f"**{text}**", 2: f"<u>{text}</u>"}.get(rank or 0, text)

    arrows = [f"{name} {'↑' if HIGHER_IS_BETTER[name] else '↓'}" for name in metrics]
    lines = [
        "| " + " | ".join(["method", "images", *arrows]) + " |",
        "|" + "---|" * 2 + "---:|" * len(metrics),
    ]
    cells = _marked_cells(rows, metrics, mark)
    for (method, pairs, _), row in zip(rows, cells, strict=True):
        lines.append("| " + " | ".join([method, _count(pairs), *row]) + " |")
    return "\n".join(lines) + "\n"


def _latex_escape(text: str) -> str:
    return "".join("\\" + c if c in "_&%$#{}" else c for c in text)


def latex_table(rows: Rows, metrics: Sequence[str]) -> str:
    """A LaTeX ``tabular`` (booktabs rules; best ``\\textbf``, second ``\\underline``)."""

    def mark(text: str, rank: int | None) -> str:
        return {1: f"\\textbf{{{text}}}", 2: f"\\underline{{{text}}}"}.get(rank or 0, text)

    arrows = {True: "$\\uparrow$", False: "$\\downarrow$"}
    heads = [f"{_latex_escape(name)} {arrows[HIGHER_IS_BETTER[name]]}" for name in metrics]
    lines = [
        "\\begin{tabular}{l r" + " r" * len(metrics) + "}",
        "\\toprule",
        " & ".join(["Method", "Images", *heads]) + " \\\\",
        "\\midrule",
    ]
    cells = _marked_cells(rows, metrics, mark)
    for (method, pairs, _), row in zip(rows, cells, strict=True):
        lines.append(" & ".join([_latex_escape(method), _count(pairs), *row]) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}"]
    return "\n".join(lines) + "\n"


def csv_table(rows: Rows, metrics: Sequence[str]) -> str:
    """A CSV table: ``method, images, <metrics>`` with full-precision values (empty: none)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["method", "images", *metrics])
    for method, pairs, values in rows:
        numbers = ["" if values is None else repr(values[name]) for name in metrics]
        writer.writerow([method, "" if pairs is None else pairs, *numbers])
    return buffer.getvalue()


def write_tables(result: BenchmarkResult, folder: Path) -> list[Path]:
    """Write ``<dataset>.md|csv|tex`` for every dataset and ``overall.*`` into ``folder``
    (atomically); returns the paths written."""
    written = []
    for name in [*result.datasets, OVERALL]:
        rows = table_rows(result, None if name == OVERALL else name)
        for suffix, render in (
            (".md", markdown_table),
            (".csv", csv_table),
            (".tex", latex_table),
        ):
            path = folder / f"{name}{suffix}"
            write_text(path, render(rows, result.metrics))
            written.append(path)
    return written


def results_document(result: BenchmarkResult) -> dict[str, Any]:
    """Everything in one JSON-ready dict: the metric names and directions, and per dataset
    (and ``overall``) per method the metrics, the file report and (per dataset) the curves."""
    datasets: dict[str, Any] = {}
    for dataset in result.datasets:
        datasets[dataset] = {}
        for method in result.methods:
            cell = result.cells.get((method, dataset))
            if cell is None:
                continue
            curves = result.curves(method, dataset) or {}
            datasets[dataset][method] = {
                "metrics": result.values(method, dataset),
                **cell.report(),
                "curves": {name: curve.tolist() for name, curve in curves.items()},
            }
    overall = {
        method: {"metrics": values, "num_pairs": result.num_pairs(method, None)}
        for method in result.methods
        if (values := result.values(method, None)) is not None
    }
    return {
        "metrics": list(result.metrics),
        "higher_is_better": {name: HIGHER_IS_BETTER[name] for name in result.metrics},
        "methods": result.methods,
        "datasets": datasets,
        OVERALL: overall,
        "problems": result.problems,
    }


def write_results(result: BenchmarkResult, path: Path) -> None:
    """Write :func:`results_document` to ``path`` atomically."""
    write_json(path, results_document(result))


def write_outputs(result: BenchmarkResult, out: Path) -> tuple[list[Path], list[Path]]:
    """Write everything of a benchmark into ``out``: ``results.json``, ``tables/`` (this
    module) and ``curves/`` (:func:`utils.metrics.plots.write_curves`), then remove the files
    of ``tables/`` and ``curves/`` that this run did not write (an earlier run's, e.g. of a
    dataset left out now), so that the folders show this run only. Returns ``(written,
    removed)`` paths."""
    write_results(result, out / "results.json")
    written = [out / "results.json", *write_tables(result, out / "tables")]
    for dataset in result.datasets:
        curves = {
            method: found
            for method in result.methods
            if (found := result.curves(method, dataset)) is not None
        }
        written += write_curves(dataset, curves, out / "curves")
    keep = set(written)
    removed = [
        path
        for folder in (out / "tables", out / "curves")
        if folder.is_dir()
        for path in sorted(folder.iterdir())
        if path.is_file() and path not in keep
    ]
    for path in removed:
        path.unlink()
    return written, removed
