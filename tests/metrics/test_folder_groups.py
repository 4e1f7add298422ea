"""evaluate.py's per-tile and per-group building scores: Inria cities, folders, and none."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import evaluate
from tests.helpers import write_png
from utils.metrics.binary import SCORES
from utils.metrics.folders import EvaluationSettings, evaluate_folders
from utils.metrics.groups import tile_groups


def write_tiles(root: Path, names: list[str], seed: int = 0) -> tuple[Path, Path]:
    """A noisy prediction and a mask of rectangles (buildings) per name, as PNG files."""
    rng = np.random.default_rng(seed)
    for name in names:
        mask = np.zeros((40, 48), np.uint8)
        for _ in range(3):
            y, x = rng.integers(0, 32, 2)
            mask[y : y + 8, x : x + 10] = 255
        noise = rng.normal(0, 60, mask.shape)
        pred = np.clip(mask.astype(float) * 0.8 + 20 + noise, 0, 255).astype(np.uint8)
        write_png(root / "gt" / f"{name}.png", mask)
        write_png(root / "pred" / f"{name}.png", pred)
    return root / "pred", root / "gt"


def test_grouping_rule() -> None:
    assert tile_groups(["austin1", "vienna12"]) == ["austin", "vienna"]
    assert tile_groups(["a/x", "b/y", "b/z"], "folder") == ["a", "b", "b"]
    assert tile_groups(["a/x", "b/y"]) is None  # SOD sub-folders: only when asked
    assert tile_groups(["ILSVRC2012_test_00000003", "sun_abc"]) is None  # DUTS-TE: none
    assert tile_groups(["austin1"], "none") is None
    assert tile_groups(["x", "y"], "folder") == [".", "."]
    with pytest.raises(ValueError, match="'photo' is not an Inria tile name"):
        tile_groups(["austin1", "photo"], "city")
    with pytest.raises(ValueError, match="grouping must be one of"):
        EvaluationSettings(grouping="cities")


def test_evaluate_reports_inria_cities_and_tiles(tmp_path: Path, capsys) -> None:
    names = ["austin1", "austin2", "austin3", "vienna1", "vienna2"]
    pred_dir, gt_dir = write_tiles(tmp_path, names)
    out = tmp_path / "scores.json"
    args = ["--pred", str(pred_dir), "--gt", str(gt_dir), "--json", str(out), "--batch-size", "2"]
    assert evaluate.main([*args, "--threads", "1"]) == 0
    printed = capsys.readouterr().out
    assert "per group (5 tiles" in printed
    rows = {line.split()[0]: line.split()[1:] for line in printed.splitlines()[-3:]}
    assert list(rows) == ["austin", "vienna", "all"]
    result = json.loads(out.read_text())
    assert result["tile_groups"] == {name: name.rstrip("0123456789") for name in names}
    for metric in SCORES:
        for name in ("austin", "vienna", *names):
            assert 0.0 <= result[f"{metric}/{name}"] <= 1.0
        assert float(rows["all"][SCORES.index(metric)]) == pytest.approx(result[metric], abs=5e-5)

    # one city: its pooled counts are those of every pair; processes change nothing
    austin = {name: value for name, value in result.items() if "/" not in name}
    settings = EvaluationSettings(progress=False, processes=2, batch_size=2)
    two = evaluate_folders(pred_dir, gt_dir, settings)
    assert two == result
    for name in names[3:]:
        (gt_dir / f"{name}.png").unlink()
    only = evaluate_folders(pred_dir, gt_dir, EvaluationSettings(progress=False))
    for metric in SCORES:
        assert only[f"{metric}/austin"] == pytest.approx(only[metric], abs=1e-15)
    assert set(austin) >= set(SCORES)


def test_folders_group_and_plain_names_do_not(tmp_path: Path) -> None:
    pred_dir, gt_dir = write_tiles(tmp_path / "f", ["site_a/t1", "site_a/t2", "site_b/t1"])
    by_folder = EvaluationSettings(progress=False, grouping="folder")
    result = evaluate_folders(pred_dir, gt_dir, by_folder)
    assert result["tile_groups"] == {
        "site_a/t1": "site_a",
        "site_a/t2": "site_a",
        "site_b/t1": "site_b",
    }
    assert "IoU/site_b" in result and "IoU/site_a/t2" in result
    pred_dir, gt_dir = write_tiles(tmp_path / "plain", ["img_1", "img_2"])
    plain = evaluate_folders(pred_dir, gt_dir, EvaluationSettings(progress=False))
    assert "tile_groups" not in plain and not any("/" in name for name in plain)
    selected = EvaluationSettings(progress=False, metrics=["MAE"], grouping="folder")
    assert "tile_groups" not in evaluate_folders(pred_dir, gt_dir, selected)  # no binary metric
