"""Per-tile and per-city building scores: TileScores itself, and a validation on Inria tiles that
reports them in metrics.jsonl and the log, pooled exactly as the dataset-wide metrics."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.data.test_buildings import tile, write
from tests.helpers import ROOT, tiny_config
from utils.metrics.binary import SCORES, binary_scores
from utils.metrics.groups import TileScores, WithGroups, base_metric, inria_city


def test_inria_city_names() -> None:
    assert inria_city("austin12") == "austin"
    assert inria_city("kitsap-w3") == "kitsap-w"
    assert inria_city("tyrol-w1") == "tyrol-w"
    assert inria_city("building") is None and inria_city("42") is None


def test_tile_scores_pool_counts_per_tile_and_group() -> None:
    rng = np.random.default_rng(0)
    tiles = ["austin1", "austin2", "vienna1", "lone"]
    scores = TileScores(tiles, ["austin", "austin", "vienna", None])
    confusion = rng.integers(0, 50, (12, 4))
    tile_ids = rng.integers(0, 3, 12)  # "lone" gets no image
    scores.add(tile_ids[:5], confusion[:5])
    scores.add(tile_ids[5:], confusion[5:])
    result = scores.compute()
    austin = confusion[tile_ids <= 1].sum(axis=0)
    for m, metric in enumerate(SCORES):
        assert result[f"{metric}/austin"] == pytest.approx(binary_scores(austin)[m], abs=1e-15)
        per_tile = confusion[tile_ids == 2].sum(axis=0)
        assert result[f"{metric}/vienna1"] == pytest.approx(binary_scores(per_tile)[m], abs=1e-15)
    assert "IoU/lone" not in result  # no pixels
    assert list(result)[:2] == ["IoU/austin", "IoU/vienna"]
    table = scores.table().splitlines()
    assert table[0].split() == list(SCORES) and [row.split()[0] for row in table[1:]] == [
        "austin",
        "vienna",
        "all",
    ]
    with pytest.raises(ValueError, match="both a tile and a group"):
        TileScores(["austin"], ["austin"])
    assert TileScores(["a", "b"], [None, None]).table() == ""


def write_inria(root: Path, cities: tuple[str, ...], tiles_per_city: int) -> None:
    folder = root / "AerialImageDataset" / "train"
    for c, city in enumerate(cities):
        for n in range(1, tiles_per_city + 1):
            image, mask = tile(64, 64, 10 * c + n)
            write(folder / "images" / f"{city}{n}.tif", image)
            write(folder / "gt" / f"{city}{n}.tif", mask * 255)


@pytest.mark.parametrize("cities", [("austin", "vienna"), ("chicago",)])
def test_validation_reports_per_tile_and_per_city(tmp_path: Path, cities) -> None:
    write_inria(tmp_path / "inria", cities, 3)
    config = json.loads(tiny_config(tmp_path, epochs=1).read_text())
    loader = {
        "data_dir": str(tmp_path / "inria"),
        "val_tiles": 2,
        "crop_size": 32,
        "num_workers": 0,
    }
    config["train_loader"] = {
        "type": "InriaBuilding",
        "args": {**loader, "split": "train", "augment": True, "batch_size": 2},
    }
    config["val_loader"] = {
        "type": "InriaBuilding",
        "args": {**loader, "split": "val", "batch_size": 3},
    }
    config["trainer"]["monitor"] = f"max IoU/{cities[0]}"
    config["trainer"]["print_metrics"] = ["IoU", f"F1/{cities[0]}1"]
    path = tmp_path / "inria.json"
    path.write_text(json.dumps(config))
    proc = subprocess.run(
        [sys.executable, "train.py", "-c", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (log,) = (tmp_path / "saved").glob("runs/*/*/metrics.jsonl")
    record = json.loads(log.read_text().splitlines()[-1])
    val_tiles = [f"{city}{n}" for city in cities for n in (1, 2)]
    for metric in SCORES:
        for name in (*cities, *val_tiles):
            assert 0.0 <= record[f"{metric}/{name}"] <= 1.0
    assert not any(key.endswith("3") and "/" in key for key in record)  # tile 3 is training
    if len(cities) == 1:  # one city: its pooled counts are the dataset's
        for metric in SCORES:
            assert record[f"{metric}/{cities[0]}"] == pytest.approx(record[metric], abs=1e-12)
    else:
        assert "validation per group:" in proc.stdout + proc.stderr
    assert f"IoU/{cities[0]} " in proc.stdout + proc.stderr  # the monitored metric, per city


def test_metric_names_with_groups() -> None:
    directions = {"IoU": True, "MAE": False, "F1": True}
    known = WithGroups(directions, ["austin1", "austin"], ["austin"])
    assert known["IoU/austin"] is True and known["F1/austin1"] is True and known["MAE"] is False
    assert "IoU/vienna" not in known and "MAE/austin" not in known and "IoU/" not in known
    assert list(known)[-5:] == [f"{m}/austin" for m in SCORES]
    assert "IoU/anything" in WithGroups(directions)  # before the data is known
    assert base_metric("IoU/austin3") == "IoU" and base_metric("maxF") == "maxF"
    assert base_metric("si_maxF/x") == "si_maxF/x"
