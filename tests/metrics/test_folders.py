"""Tests of evaluate.py and utils.metrics.folders: pairing, reading, reports, JSON, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import evaluate
from tests.helpers import ROOT, write_png
from utils.io.images import read_grey, read_mask
from utils.metrics import DEFAULT_METRICS, SODMetrics, prob_to_uint8, scoring
from utils.metrics.folders import (
    EvaluationError,
    EvaluationSettings,
    evaluate_folders,
    pair_files,
)

EXTRA_KEYS = (
    "num_pairs",
    "missing_predictions",
    "unmatched_predictions",
    "resized_predictions",
    "unreadable",
    "binary_01_masks",
)


def run_cli(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "evaluate.py", *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )


def smooth_maps(seed: int, count: int, shape=(32, 40)) -> tuple[np.ndarray, np.ndarray]:
    """Float64 probabilities (blobs with noise) and the bool masks they approximate."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    probs, masks = [], []
    for _ in range(count):
        cy, cx, r = rng.uniform(8, shape[0] - 8), rng.uniform(8, shape[1] - 8), rng.uniform(4, 9)
        dist = np.hypot(yy - cy, xx - cx)
        masks.append(dist < r)
        logits = (r - dist) / 2 + rng.normal(0, 1.0, shape)
        probs.append(1 / (1 + np.exp(-logits)))
    return np.stack(probs), np.stack(masks)


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    """GT img_0..img_5 (img_4 as .bmp); predictions for img_0..img_4 plus extra.png; img_1 is a
    colour PNG, img_3 has another size than its GT."""
    probs, masks = smooth_maps(0, 6)
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    for i in range(6):
        write_png(gt_dir / f"img_{i}.{'bmp' if i == 4 else 'png'}", masks[i].astype(np.uint8) * 255)
    for i in range(5):
        pred = prob_to_uint8(torch.from_numpy(probs[i])).numpy()
        if i == 1:
            pred = cv2.cvtColor(pred, cv2.COLOR_GRAY2BGR)
        if i == 3:
            pred = cv2.resize(pred, (60, 48), interpolation=cv2.INTER_LINEAR)
        write_png(pred_dir / f"img_{i}.png", pred)
    write_png(pred_dir / "extra.png", np.zeros((8, 8), np.uint8))
    return pred_dir, gt_dir


# --------------------------------------------------------------------------------------------
# The command line
# --------------------------------------------------------------------------------------------


def test_cli_table_json_and_reports(folders, tmp_path):
    pred_dir, gt_dir = folders
    out = tmp_path / "out" / "scores.json"
    proc = run_cli("--pred", pred_dir, "--gt", gt_dir, "--json", out, "--device", "cpu")
    assert proc.returncode == 1, proc.stderr  # img_5 has no prediction: scored without it

    # the table: every metric, in SODMetrics order
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("5 pairs")
    rows = [line.split()[0] for line in lines if line.split()[0] in DEFAULT_METRICS]
    assert rows == list(DEFAULT_METRICS)

    # missing and extra files on stderr
    assert "without a prediction" in proc.stderr and "img_5.png" in proc.stderr
    assert "without a ground-truth file" in proc.stderr and "extra.png" in proc.stderr

    result = json.loads(out.read_text())
    assert list(result) == [*DEFAULT_METRICS, *EXTRA_KEYS]
    assert result["num_pairs"] == 5
    assert result["missing_predictions"] == ["img_5.png"]
    assert result["unmatched_predictions"] == ["extra.png"]
    assert result["resized_predictions"] == 1
    assert result["unreadable"] == []
    assert result["binary_01_masks"] == 0 and "0/1-encoded" not in proc.stderr

    # the same numbers as SODMetrics fed the files (list input: resizes img_3, batches the rest)
    pairs, _, _ = pair_files(pred_dir, gt_dir)
    reference = SODMetrics()
    reference.update([read_grey(p) for p, _ in pairs], [read_mask(g) for _, g in pairs])
    for name, value in reference.compute().items():
        assert result[name] == pytest.approx(value, abs=1e-12), name


def test_saved_pngs_equal_float_probabilities(tmp_path):
    """Evaluating round(p * 255) PNGs equals feeding the float probabilities to SODMetrics."""
    probs, masks = smooth_maps(1, 7)
    for i, (prob, mask) in enumerate(zip(probs, masks, strict=True)):
        write_png(tmp_path / "pred" / f"{i:02d}.png", prob_to_uint8(torch.from_numpy(prob)).numpy())
        write_png(tmp_path / "gt" / f"{i:02d}.png", mask.astype(np.uint8) * 255)
    out = tmp_path / "scores.json"
    proc = run_cli(
        "--pred", tmp_path / "pred", "--gt", tmp_path / "gt", "--json", out, "--batch-size", "3"
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())

    reference = SODMetrics()
    reference.update(torch.from_numpy(probs[:, None]), torch.from_numpy(masks[:, None]))
    expected = reference.compute()
    assert result["num_pairs"] == 7
    for name in DEFAULT_METRICS:
        assert result[name] == pytest.approx(expected[name], abs=1e-12), name


def test_binary_01_ground_truth_is_read_as_0_255_and_counted(tmp_path):
    """A perfect prediction of 0/1-encoded masks scores 1 (not 0), and the masks are counted."""
    _, masks = smooth_maps(2, 3)
    for i, mask in enumerate(masks):
        write_png(tmp_path / "pred" / f"{i}.png", mask.astype(np.uint8) * 255)
        write_png(tmp_path / "gt" / f"{i}.png", mask.astype(np.uint8))  # 0/1
    write_png(tmp_path / "pred" / "3.png", np.full((8, 8), 200, np.uint8))
    write_png(tmp_path / "gt" / "3.png", np.full((8, 8), 255, np.uint8))  # 0/255: not counted
    out = tmp_path / "scores.json"
    proc = run_cli("--pred", tmp_path / "pred", "--gt", tmp_path / "gt", "--json", out)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result["maxF"] == pytest.approx(1.0) and result["IoU"] == pytest.approx(1.0)
    assert result["MAE"] < 0.1
    assert result["binary_01_masks"] == 3
    assert "3 of 4 ground-truth masks are 0/1-encoded (maximum 1); they were read as 0/255" in (
        proc.stderr
    )


def test_prediction_maps_are_not_rescaled(tmp_path):
    """Only ground truth gets the mask rule: a 0/1 prediction map stays (nearly) black."""
    _, masks = smooth_maps(3, 2)
    for i, mask in enumerate(masks):
        write_png(tmp_path / "pred" / f"{i}.png", mask.astype(np.uint8))  # 0/1 prediction
        write_png(tmp_path / "gt" / f"{i}.png", mask.astype(np.uint8) * 255)
    settings = EvaluationSettings(metrics=["IoU", "MAE"], workers=0, progress=False)
    result = evaluate_folders(tmp_path / "pred", tmp_path / "gt", settings)
    assert result["IoU"] == 0.0 and result["binary_01_masks"] == 0


def test_missing_folder_exits_2(tmp_path, folders, capsys):
    _, gt_dir = folders
    assert evaluate.main(["--pred", str(tmp_path / "nope"), "--gt", str(gt_dir)]) == 2
    err = capsys.readouterr().err
    assert "prediction folder does not exist" in err and str(tmp_path / "nope") in err


def test_an_unwritable_json_path_stops_before_scoring(tmp_path, folders, capsys, monkeypatch):
    pred_dir, gt_dir = folders
    blocker = tmp_path / "results"
    blocker.write_text("a file where --json needs a folder")
    scored = []
    monkeypatch.setattr(evaluate, "evaluate_folders", lambda *a: scored.append(a))
    for target in (blocker / "scores.json", tmp_path):
        args = ["--pred", str(pred_dir), "--gt", str(gt_dir), "--json", str(target)]
        assert evaluate.main(args) == 2
        assert f"error: --json: cannot write {target}" in capsys.readouterr().err
    assert not scored and not list(tmp_path.glob(".*.tmp"))


def test_empty_folders_exit_2(tmp_path, folders, capsys):
    pred_dir, gt_dir = folders
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not an image")
    assert evaluate.main(["--pred", str(empty), "--gt", str(gt_dir)]) == 2
    assert "prediction folder" in capsys.readouterr().err
    assert evaluate.main(["--pred", str(pred_dir), "--gt", str(empty)]) == 2
    err = capsys.readouterr().err
    assert "ground-truth folder" in err and "holds no image file" in err


def test_no_pair_exits_2(tmp_path, capsys):
    write_png(tmp_path / "gt" / "a.png", np.zeros((4, 4), np.uint8))
    write_png(tmp_path / "pred" / "b.png", np.zeros((4, 4), np.uint8))
    assert evaluate.main(["--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt")]) == 2
    err = capsys.readouterr().err
    assert "no prediction" in err and "'a.png'" in err and "'b.png'" in err


def test_unreadable_file_is_skipped_and_reported(folders, tmp_path, capsys):
    pred_dir, gt_dir = folders
    (pred_dir / "img_0.png").write_bytes(b"not a png")
    out = tmp_path / "scores.json"
    code = evaluate.main(["--pred", str(pred_dir), "--gt", str(gt_dir), "--json", str(out)])
    captured = capsys.readouterr()
    assert code == 1
    assert "unreadable" in captured.err and str(pred_dir / "img_0.png") in captured.err
    assert "MAE" in captured.out  # the other pairs are still scored
    result = json.loads(out.read_text())
    assert result["num_pairs"] == 4
    assert len(result["unreadable"]) == 1 and "img_0.png" in result["unreadable"][0]


@pytest.mark.parametrize("workers", [0, 2])
def test_unreadable_pairs_with_and_without_threads(folders, workers):
    pred_dir, gt_dir = folders
    (pred_dir / "img_2.png").write_bytes(b"not a png")
    settings = EvaluationSettings(metrics=["MAE"], batch_size=2, workers=workers, progress=False)
    result = evaluate_folders(pred_dir, gt_dir, settings)
    assert list(result) == ["MAE", *EXTRA_KEYS]
    assert result["num_pairs"] == 4 and result["resized_predictions"] == 1
    assert len(result["unreadable"]) == 1 and "img_2.png" in result["unreadable"][0]
    for name in ("img_0.png", "img_1.png", "img_3.png", "img_4.png"):
        (pred_dir / name).write_bytes(b"")
    with pytest.raises(EvaluationError, match="none of the 5 pair"):
        evaluate_folders(pred_dir, gt_dir, settings)


def test_evaluation_settings():
    assert EvaluationSettings(metrics=["wF", "MAE"]).metrics == ("wF", "MAE")
    assert EvaluationSettings().metrics is None
    with pytest.raises(ValueError, match="batch_size"):
        EvaluationSettings(batch_size=0)
    with pytest.raises(ValueError, match="workers"):
        EvaluationSettings(workers=-1)


def test_metric_selection(folders, capsys):
    pred_dir, gt_dir = folders
    wanted = list(DEFAULT_METRICS[::-1][:2])
    code = evaluate.main(["--pred", str(pred_dir), "--gt", str(gt_dir), "--metrics", *wanted])
    assert code == 1  # img_5 has no prediction
    out = capsys.readouterr().out
    rows = [line.split()[0] for line in out.splitlines() if line.split()[0] in DEFAULT_METRICS]
    assert rows == [name for name in DEFAULT_METRICS if name in wanted]
    with pytest.raises(SystemExit) as exc:
        evaluate.main(["--pred", str(pred_dir), "--gt", str(gt_dir), "--metrics", "nope"])
    assert exc.value.code == 2


# --------------------------------------------------------------------------------------------
# Pairing
# --------------------------------------------------------------------------------------------


def touch_images(root: Path, *names: str) -> None:
    for name in names:
        write_png(root / name, np.zeros((2, 2), np.uint8))


def rel(pairs, pred_dir: Path, gt_dir: Path) -> list[tuple[str, str]]:
    return [
        (p.relative_to(pred_dir).as_posix(), g.relative_to(gt_dir).as_posix()) for p, g in pairs
    ]


def test_pairing_by_relative_path_then_unique_name(tmp_path):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    touch_images(gt, "a/x.jpg", "a/y.png", "b/y.png", "z.bmp", "only_gt.png", "c/w.png")
    touch_images(pred, "a/x.png", "a/y.png", "y.png", "z.png", "w.png", "only_pred.png")
    (gt / "readme.txt").write_text("ignored")
    touch_images(gt, ".hidden/q.png")
    pairs, missing, unmatched = pair_files(pred, gt)
    assert rel(pairs, pred, gt) == [
        ("a/x.png", "a/x.jpg"),  # same relative path, other extension
        ("a/y.png", "a/y.png"),
        ("w.png", "c/w.png"),  # unique name on both sides: paired across folders
        ("z.png", "z.bmp"),
    ]
    assert missing == ["b/y.png", "only_gt.png"]  # 'y' is not unique in the GT tree
    assert unmatched == ["only_pred.png", "y.png"]


def test_pairing_ambiguous_extension_is_an_error(tmp_path):
    touch_images(tmp_path / "gt", "x.png")
    touch_images(tmp_path / "pred", "x.png", "x.jpg")
    with pytest.raises(EvaluationError, match="several extensions"):
        pair_files(tmp_path / "pred", tmp_path / "gt")


def test_prediction_folder_inside_gt_folder_is_skipped(tmp_path):
    gt = tmp_path / "gt"
    touch_images(gt, "x.png", "preds/x.png")
    pairs, missing, unmatched = pair_files(gt / "preds", gt)
    assert rel(pairs, gt / "preds", gt) == [("x.png", "x.png")]
    assert missing == [] and unmatched == []


def test_worker_processes_and_threads_give_the_same_numbers(folders, tmp_path):
    """Scoring in 2 worker processes, in this one, or with --threads 1 gives equal results."""
    pred_dir, gt_dir = folders
    (pred_dir / "img_2.png").write_bytes(b"not a png")
    results = [
        evaluate_folders(
            pred_dir,
            gt_dir,
            EvaluationSettings(batch_size=2, workers=0, processes=processes, progress=False),
        )
        for processes in (1, 2)
    ]
    assert results[0] == results[1]
    assert results[0]["num_pairs"] == 4 and len(results[0]["unreadable"]) == 1
    out = tmp_path / "scores.json"
    proc = run_cli(
        "--pred", pred_dir, "--gt", gt_dir, "--json", out, "--threads", "1", "--batch-size", "2"
    )
    assert proc.returncode == 1, proc.stderr  # the unreadable pair
    assert json.loads(out.read_text()) == results[0]
    with pytest.raises(ValueError, match="processes"):
        EvaluationSettings(processes=0)


def _die(chunk):
    os._exit(3)  # a worker process killed mid-run (e.g. for memory)


def test_a_dying_worker_process_is_an_error_not_a_hang(folders, monkeypatch, capsys):
    pred_dir, gt_dir = folders
    monkeypatch.setattr(scoring, "_score_in_worker", _die)  # the forked workers see it too
    with pytest.raises(BrokenProcessPool):
        evaluate_folders(pred_dir, gt_dir, EvaluationSettings(processes=2, progress=False))
    settings = EvaluationSettings(processes=2, progress=False)
    monkeypatch.setattr(evaluate, "settings_for", lambda args, device: settings)
    assert evaluate.main(["--pred", str(pred_dir), "--gt", str(gt_dir)]) == 2
    assert "scoring process ended abruptly" in capsys.readouterr().err
