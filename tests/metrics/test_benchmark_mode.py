"""Tests of evaluate.py's benchmark mode: several methods on several datasets, tables with the
best values marked, curves, one JSON, per-cell caches, and problems that never lose results."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.helpers import write_png
from tests.metrics.test_folders import run_cli
from utils.metrics import HIGHER_IS_BETTER
from utils.metrics.benchmark import run_benchmark
from utils.metrics.benchmark_spec import BenchmarkSpecError, build_spec, parse_entries
from utils.metrics.folders import EvaluationSettings, evaluate_folders
from utils.metrics.reports import ranks
from utils.metrics.scoring import PairScorer

METHODS = ("Alpha", "Beta", "Gamma")
DATASETS = {"SetA": 5, "SetB": 4}  # name: images
NOISE = {"Alpha": 8.0, "Beta": 40.0, "Gamma": 90.0, "Delta": 20.0}  # grey levels


def write_layout(root: Path, methods=METHODS, gt: bool = True) -> Path:
    """GT masks (discs, 24x32, one dataset with a 20x28 image) under ``root/gt/<dataset>`` (if
    ``gt``) and noisy soft maps of each method under ``root/<method>/<dataset>``; returns
    ``root``."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:24, :32]
    for d, (dataset, count) in enumerate(DATASETS.items()):
        for i in range(count):
            cy, cx, r = rng.uniform(8, 16), rng.uniform(8, 24), rng.uniform(4, 8)
            dist = np.hypot(yy - cy, xx - cx)
            mask = (dist < r).astype(np.uint8) * 255
            if d == 1 and i == 0:
                mask = cv2.resize(mask, (28, 20), interpolation=cv2.INTER_NEAREST)
            if gt:
                write_png(root / "gt" / dataset / f"im{i}.png", mask)
            soft = 255 / (1 + np.exp(-(r - dist)))
            for method in methods:
                noisy = soft + np.random.default_rng(i).normal(0, NOISE[method], soft.shape)
                pred = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
                write_png(root / method / dataset / f"im{i}.png", pred)
    return root


def bench_args(root: Path, out: Path, methods=METHODS) -> list[str]:
    return [
        "--methods",
        *(f"{m}={root / m}" for m in methods),
        "--datasets",
        *(f"{d}={root / 'gt' / d}" for d in DATASETS),
        "--out",
        str(out),
        "--device",
        "cpu",
    ]


@pytest.fixture(scope="module")
def first_run(tmp_path_factory) -> tuple[Path, Path, subprocess.CompletedProcess]:
    """The layout, the output folder and the result of one benchmark run of 3 x 2 cells."""
    root = write_layout(tmp_path_factory.mktemp("bench"))
    out = root / "out"
    proc = run_cli(*bench_args(root, out), "--threads", "2")
    return root, out, proc


def cell_numbers(out: Path, dataset: str, method: str) -> dict[str, float]:
    return json.loads((out / "results.json").read_text())["datasets"][dataset][method]["metrics"]


# --------------------------------------------------------------------------------------------
# One run
# --------------------------------------------------------------------------------------------


def test_numbers_equal_single_folder_runs(first_run):
    root, out, proc = first_run
    assert proc.returncode == 0, proc.stderr
    assert "6 cells computed, 0 from the cache" in proc.stdout
    # one cell through the single-folder command line, every cell through its function
    single = root / "single.json"
    cli = run_cli("--pred", root / "Beta" / "SetB", "--gt", root / "gt" / "SetB", "--json", single)
    assert cli.returncode == 0, cli.stderr
    from_cli = json.loads(single.read_text())
    for name, value in cell_numbers(out, "SetB", "Beta").items():
        assert value == from_cli[name], name
    settings = EvaluationSettings(progress=False, workers=0)
    for dataset in DATASETS:
        for method in METHODS:
            expected = evaluate_folders(root / method / dataset, root / "gt" / dataset, settings)
            got = cell_numbers(out, dataset, method)
            assert got == {name: expected[name] for name in got}, (method, dataset)
    document = json.loads((out / "results.json").read_text())
    assert document["datasets"]["SetB"]["Alpha"]["resized_predictions"] == 1
    assert len(document["datasets"]["SetA"]["Gamma"]["curves"]["precision"]) == 256
    assert document["overall"]["Alpha"]["num_pairs"] == sum(DATASETS.values())


def test_overall_pools_every_image(first_run):
    """The overall MAE (a mean over images) weighs the datasets by their image counts."""
    _, out, _ = first_run
    document = json.loads((out / "results.json").read_text())
    for method in METHODS:
        weighted = sum(
            cell_numbers(out, d, method)["MAE"] * count for d, count in DATASETS.items()
        ) / sum(DATASETS.values())
        assert document["overall"][method]["metrics"]["MAE"] == pytest.approx(weighted, 1e-12)


def _cells(table: str, marker: str) -> list[list[str]]:
    """The rows (method first) of a Markdown or LaTeX table body."""
    rows = []
    for line in table.splitlines():
        parts = [p.strip() for p in re.split(r"\||&", line.rstrip("\\ ").strip("|"))]
        if len(parts) > 2 and parts[0] in (*METHODS, "Delta"):
            rows.append(parts)
    assert rows, marker
    return rows


@pytest.mark.parametrize("table", ["SetA", "SetB", "overall"])
def test_best_bold_second_underlined_by_direction(first_run, table):
    _, out, _ = first_run
    document = json.loads((out / "results.json").read_text())
    metrics = document["metrics"]
    section = document["overall"] if table == "overall" else document["datasets"][table]
    for suffix, best, second in ((".md", "**", "<u>"), (".tex", "\\textbf{", "\\underline{")):
        rows = _cells((out / "tables" / f"{table}{suffix}").read_text(), suffix)
        for column, name in enumerate(metrics, start=2):
            values = {m: round(section[m]["metrics"][name], 4) for m in METHODS}
            order = [*sorted(set(values.values()), reverse=HIGHER_IS_BETTER[name]), None]
            for row in rows:
                text, value = row[column], values[row[0]]
                assert text.startswith(best) == (value == order[0]), (suffix, name, row)
                assert text.startswith(second) == (value == order[1]), (suffix, name, row)
    # the noisiest method has the worst MAE (lower is better) and the worst Sm
    rows = _cells((out / "tables" / f"{table}.md").read_text(), "md")
    gamma = next(row for row in rows if row[0] == "Gamma")
    assert not gamma[2 + metrics.index("MAE")].startswith(("**", "<u>"))
    alpha = next(row for row in rows if row[0] == "Alpha")
    assert alpha[2 + metrics.index("MAE")].startswith("**")
    csv_lines = (out / "tables" / f"{table}.csv").read_text().splitlines()
    assert csv_lines[0] == ",".join(["method", "images", *metrics])
    assert len(csv_lines) == 1 + len(METHODS)


def test_curves_are_valid_png_and_pdf(first_run):
    _, out, _ = first_run
    for dataset in DATASETS:
        for kind in ("pr", "fmeasure"):
            image = cv2.imread(str(out / "curves" / f"{dataset}_{kind}.png"))
            assert image is not None and image.shape == (420, 500, 3)
            assert image.std() > 10  # lines, text and axes, not a blank image
            pdf = (out / "curves" / f"{dataset}_{kind}.pdf").read_bytes()
            assert pdf.startswith(b"%PDF-") and b"%%EOF" in pdf[-32:]


def test_ranks_ties_and_directions():
    assert ranks([0.5, 0.50001, 0.4, None], higher_is_better=True) == [1, 1, 2, None]
    assert ranks([0.3, 0.1, 0.2], higher_is_better=False) == [3, 1, 2]
    assert ranks([float("nan"), 0.2, 0.1], higher_is_better=True) == [None, 1, 2]


# --------------------------------------------------------------------------------------------
# Caches
# --------------------------------------------------------------------------------------------


def test_one_more_method_recomputes_only_it(first_run):
    root, out, _ = first_run
    write_layout(root, methods=("Delta",), gt=False)
    caches = {p: p.stat().st_mtime_ns for p in (out / "cache").rglob("*.json")}
    assert len(caches) == 6
    before = json.loads((out / "results.json").read_text())
    proc = run_cli(*bench_args(root, out, (*METHODS, "Delta")), "--threads", "1")
    assert proc.returncode == 0, proc.stderr
    assert "2 cells computed, 6 from the cache" in proc.stdout
    assert {p: p.stat().st_mtime_ns for p in caches} == caches  # not rewritten
    assert sorted(p.name for p in (out / "cache" / "Delta").iterdir()) == ["SetA.json", "SetB.json"]
    after = json.loads((out / "results.json").read_text())
    for dataset in DATASETS:
        for method in METHODS:
            assert after["datasets"][dataset][method] == before["datasets"][dataset][method]
        assert "Delta" in after["datasets"][dataset]
    assert "| Delta |" in (out / "tables" / "overall.md").read_text()


def test_touched_files_recompute_their_cell(tmp_path):
    root = write_layout(tmp_path)
    spec = build_spec({d: root / "gt" / d for d in DATASETS}, {m: root / m for m in METHODS[:2]})
    settings = EvaluationSettings(progress=False, workers=0)
    first = run_benchmark(spec, settings, tmp_path / "cache")
    assert len(first.computed) == 4
    write_png(root / "Beta" / "SetA" / "im0.png", np.zeros((24, 32), np.uint8))
    second = run_benchmark(spec, settings, tmp_path / "cache")
    assert second.computed == [("Beta", "SetA")]
    assert second.values("Beta", "SetA") != first.values("Beta", "SetA")
    assert second.values("Alpha", "SetB") == first.values("Alpha", "SetB")
    # a prediction without a GT file changes no score but is reported from the cache too
    write_png(root / "Alpha" / "SetB" / "stray.png", np.zeros((24, 32), np.uint8))
    third = run_benchmark(spec, settings, tmp_path / "cache")
    assert third.computed == []
    assert third.cells[("Alpha", "SetB")].unmatched_predictions == ["stray.png"]


def test_interrupted_run_keeps_finished_cells(tmp_path, monkeypatch):
    root = write_layout(tmp_path)
    spec = build_spec({d: root / "gt" / d for d in DATASETS}, {m: root / m for m in METHODS})
    settings = EvaluationSettings(progress=False, workers=0)
    score = PairScorer.score
    calls = []

    def interrupted(self, pairs, progress=None):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return score(self, pairs, progress)

    monkeypatch.setattr(PairScorer, "score", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_benchmark(spec, settings, tmp_path / "cache")
    monkeypatch.setattr(PairScorer, "score", score)
    assert len(list((tmp_path / "cache").rglob("*.json"))) == 2
    assert not list((tmp_path / "cache").rglob("*.tmp"))
    resumed = run_benchmark(spec, settings, tmp_path / "cache")
    assert len(resumed.computed) == 4 and len(resumed.cells) == 6


# --------------------------------------------------------------------------------------------
# Problems, configuration, usage
# --------------------------------------------------------------------------------------------


def test_missing_method_dataset_and_files_are_listed_and_exit_1(tmp_path):
    root = write_layout(tmp_path, methods=METHODS[:2])
    (root / "Beta" / "SetA" / "im1.png").unlink()
    (root / "Alpha" / "SetB" / "im2.png").write_bytes(b"not a png")
    out = tmp_path / "out"
    args = bench_args(root, out, (*METHODS[:2], "Ghost"))
    args[args.index("--out") : args.index("--out")] = [f"Lost={tmp_path / 'nowhere'}"]
    proc = run_cli(*args)
    assert proc.returncode == 1, proc.stderr
    err = proc.stderr
    assert "problems (5)" in err
    assert "dataset Lost: ground-truth folder" in err
    assert "Ghost on SetA: prediction folder does not exist" in err
    assert "Ghost on SetB" in err
    assert "Beta on SetA: 1 ground-truth file(s) without a prediction" in err and "im1.png" in err
    assert "Alpha on SetB: unreadable" in err and "im2.png" in err
    document = json.loads((out / "results.json").read_text())
    assert len(document["problems"]) == 5
    assert document["datasets"]["SetA"]["Beta"]["num_pairs"] == DATASETS["SetA"] - 1
    assert set(document["datasets"]["SetB"]) == {"Alpha", "Beta"}
    assert document["datasets"]["Lost"] == {}
    assert "Ghost" not in document["overall"]
    assert "| Ghost | - |" in (out / "tables" / "overall.md").read_text()
    assert (out / "curves" / "SetA_pr.png").is_file()
    assert not (out / "curves" / "Lost_pr.png").exists()


def test_config_file_equals_command_line(tmp_path, first_run):
    root, first_out, _ = first_run
    config = root / "bench.json"
    config.write_text(
        json.dumps(
            {
                "datasets": {d: f"gt/{d}" for d in DATASETS},
                "methods": {
                    "Alpha": "Alpha",
                    "Beta": {d: f"Beta/{d}" for d in DATASETS},
                },
            }
        )
    )
    out = tmp_path / "out"
    proc = run_cli("--config", config, "--methods", f"Gamma={root / 'Gamma'}", "--out", out)
    assert proc.returncode == 0, proc.stderr
    for dataset in DATASETS:
        for method in METHODS:
            assert cell_numbers(out, dataset, method) == cell_numbers(first_out, dataset, method)


def test_fewer_datasets_remove_the_stale_tables_and_curves(tmp_path):
    root = write_layout(tmp_path)
    out = tmp_path / "out"
    assert run_cli(*bench_args(root, out, METHODS[:2])).returncode == 0
    assert (out / "tables" / "SetB.md").exists() and list((out / "curves").glob("SetB*"))
    only_a = ["--methods", *(f"{m}={root / m}" for m in METHODS[:2]), "--datasets"]
    proc = run_cli(*only_a, f"SetA={root / 'gt' / 'SetA'}", "--out", out, "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    assert "stale files of an earlier run removed" in proc.stdout
    assert not (out / "tables" / "SetB.md").exists() and not list((out / "curves").glob("SetB*"))
    assert (out / "tables" / "SetA.md").exists() and list((out / "curves").glob("SetA*"))
    assert (out / "cache" / "Alpha" / "SetB.json").exists()  # the cache keeps every cell


def test_a_command_line_entry_that_replaces_a_config_entry_says_so(tmp_path):
    root = write_layout(tmp_path, methods=("Alpha", "Beta"))
    config = root / "bench.json"
    config.write_text(json.dumps({"datasets": {"SetA": "gt/SetA"}, "methods": {"Alpha": "Alpha"}}))
    proc = run_cli("--config", config, "--methods", f"Alpha={root / 'Beta'}", "--out", root / "o")
    assert proc.returncode == 0, proc.stderr
    assert f"note: the --methods entry Alpha replaces {config}'s" in proc.stderr


def test_an_unusable_out_folder_or_dataset_name_stops_before_scoring(tmp_path):
    root = write_layout(tmp_path)
    blocker = tmp_path / "afile"
    blocker.write_text("a file")
    methods = ["--methods", f"Alpha={root / 'Alpha'}"]
    proc = run_cli(*methods, "--datasets", f"SetA={root / 'gt' / 'SetA'}", "--out", blocker / "o")
    assert (
        proc.returncode == 2 and f"error: --out: cannot write into {blocker / 'o'}" in proc.stderr
    )
    assert "Traceback" not in proc.stderr
    proc = run_cli(*methods, "--datasets", f"overall={root / 'gt' / 'SetA'}", "--out", tmp_path)
    assert proc.returncode == 2 and "dataset name 'overall' names the table" in proc.stderr


def test_spec_errors():
    with pytest.raises(BenchmarkSpecError, match="NAME=DIR"):
        parse_entries(["Alpha"], "--methods")
    with pytest.raises(BenchmarkSpecError, match="file name"):
        parse_entries(["a/b=x"], "--methods")
    with pytest.raises(BenchmarkSpecError, match="twice"):
        parse_entries(["A=x", "A=y"], "--datasets")
    with pytest.raises(BenchmarkSpecError, match="unknown dataset"):
        build_spec({"D": Path("gt")}, {"M": {"E": Path("x")}})
    with pytest.raises(BenchmarkSpecError, match="at least one method"):
        build_spec({"D": Path("gt")}, {})


def test_usage_errors_exit_2(tmp_path):
    proc = run_cli("--methods", "A=x", "--datasets", "D=y")
    assert proc.returncode == 2 and "--out" in proc.stderr
    proc = run_cli("--pred", "x", "--methods", "A=x", "--out", tmp_path)
    assert proc.returncode == 2 and "not both" in proc.stderr
    config = tmp_path / "bench.yaml"
    config.write_text("methods: {}\n")
    proc = run_cli("--config", config, "--out", tmp_path)
    assert proc.returncode == 2 and ".json" in proc.stderr
