"""Tests of the synthetic aerial building dataset (Inria layout) and generated-data machinery."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from dataloaders import building_demo
from dataloaders.building_demo import CITIES, city_tile_counts, ensure_building_demo
from dataloaders.demo import ensure_demo_data
from dataloaders.generated import MARKER

SIZE = 160
NUM_TILES = 12


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small building demo dataset (12 training tiles of 160 px), generated once."""
    root = tmp_path_factory.mktemp("building") / "demo"
    ensure_building_demo(str(root), NUM_TILES, SIZE)
    return root


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_inria_layout_and_names(generated: Path) -> None:
    assert sorted(os.listdir(generated)) == [MARKER, "AerialImageDataset"]
    base = generated / "AerialImageDataset"
    assert _files(base) == ["test", "train"]
    assert _files(base / "train") == ["gt", "images"]
    assert _files(base / "test") == ["images"]  # no gt, as in Inria
    assert city_tile_counts(NUM_TILES) == {"austin": 6, "vienna": 6}
    train = sorted(f"{city}{n}.tif" for city in CITIES for n in range(1, 7))
    assert _files(base / "train" / "images") == train
    assert _files(base / "train" / "gt") == train
    assert _files(base / "test" / "images") == ["austin7.tif", "vienna7.tif"]
    marker = json.loads((generated / MARKER).read_text())
    assert marker["num_tiles"] == NUM_TILES and marker["tile_size"] == SIZE


def test_tiles_are_georeferenced_like_inria_tiles(generated: Path) -> None:
    rasterio = pytest.importorskip("rasterio")
    base = generated / "AerialImageDataset"
    grids = {}
    for path in sorted(base.glob("*/*/*.tif")):
        with rasterio.open(path) as src:
            grids[path.relative_to(base).as_posix()] = (src.crs.to_epsg(), src.transform)
    austin1, austin2 = grids["train/images/austin1.tif"], grids["train/images/austin2.tif"]
    assert austin1[0] == 32614 and grids["test/images/vienna7.tif"][0] == 32633  # UTM zones
    assert (austin1[1].a, austin1[1].e, austin1[1].b, austin1[1].d) == (0.3, -0.3, 0.0, 0.0)
    assert austin2[1].c - austin1[1].c == SIZE * 0.3  # side by side, not on top of each other
    assert grids["train/gt/austin2.tif"] == austin2  # a mask on its image's grid


def test_images_and_masks(generated: Path) -> None:
    base = generated / "AerialImageDataset"
    fractions = []
    for path in sorted((base / "train" / "images").iterdir()) + sorted(
        (base / "test" / "images").iterdir()
    ):
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        assert image.shape == (SIZE, SIZE, 3) and image.dtype == np.uint8, path.name
        assert path.stat().st_size >= SIZE * SIZE * 3  # uncompressed
        assert image.std() > 10  # not blank
        if path.parent.parent.name == "train":
            mask = cv2.imread(str(base / "train" / "gt" / path.name), cv2.IMREAD_UNCHANGED)
            assert mask.shape == (SIZE, SIZE) and mask.dtype == np.uint8, path.name
            assert set(np.unique(mask).tolist()) <= {0, 255}
            fractions.append((mask > 0).mean())
    assert 0.05 < np.mean(fractions) < 0.35
    assert max(fractions) > 0.1


def test_roofs_differ_from_background(generated: Path) -> None:
    base = generated / "AerialImageDataset" / "train"
    image = cv2.imread(str(base / "images" / "vienna1.tif")).astype(np.float32)
    mask = cv2.imread(str(base / "gt" / "vienna1.tif"), cv2.IMREAD_UNCHANGED) > 0
    assert mask.any() and (~mask).any()
    assert np.abs(image[mask].mean(0) - image[~mask].mean(0)).max() > 5


def test_deterministic_and_tiles_independent(generated: Path, tmp_path: Path) -> None:
    other = tmp_path / "again"
    ensure_building_demo(str(other), NUM_TILES, SIZE)
    files = sorted(p.relative_to(generated) for p in generated.rglob("*.tif"))
    assert len(files) == 2 * NUM_TILES + len(CITIES)
    for rel in files:
        assert (generated / rel).read_bytes() == (other / rel).read_bytes(), rel
    fewer = tmp_path / "fewer"  # a tile depends only on its own seed, not on num_tiles
    ensure_building_demo(str(fewer), 4, SIZE)
    for rel, rel_fewer in (
        ("train/gt/vienna2.tif", "train/gt/vienna2.tif"),
        ("train/images/austin1.tif", "train/images/austin1.tif"),
        ("train/images/austin3.tif", "test/images/austin3.tif"),
    ):
        a = generated / "AerialImageDataset" / rel
        assert a.read_bytes() == (fewer / "AerialImageDataset" / rel_fewer).read_bytes(), rel


def test_regeneration_skipped_when_marker_matches(
    generated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(*args: object) -> None:
        raise AssertionError("regenerated")

    monkeypatch.setattr(building_demo, "_generate", fail)
    ensure_building_demo(str(generated), NUM_TILES, SIZE)
    with pytest.raises(AssertionError, match="regenerated"):  # other parameters: regenerated
        ensure_building_demo(str(generated), NUM_TILES, SIZE + 8)
    assert json.loads((generated / MARKER).read_text())["tile_size"] == SIZE


def test_foreign_folder_is_refused(tmp_path: Path) -> None:
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("precious")
    with pytest.raises(FileExistsError, match=r"not building demo data \(no \.demo_complete"):
        ensure_building_demo(str(foreign), 2, 64)
    assert (foreign / "keep.txt").read_text() == "precious"
    assert sorted(os.listdir(tmp_path)) == ["mine"]  # no temporary folder left


def test_bad_parameters() -> None:
    with pytest.raises(ValueError, match="num_tiles"):
        ensure_building_demo("unused", 1, 64)
    with pytest.raises(ValueError, match="tile_size"):
        ensure_building_demo("unused", 4, 32)


def test_sod_demo_still_generates(tmp_path: Path) -> None:
    ensure_demo_data(str(tmp_path / "sod"), 3, 2)
    assert len(os.listdir(tmp_path / "sod" / "DUTS-TR" / "DUTS-TR-Image")) == 3
    assert json.loads((tmp_path / "sod" / MARKER).read_text()) == {
        "version": 2,
        "num_train": 3,
        "num_test": 2,
    }
    with pytest.raises(FileExistsError, match="not demo data"):
        ensure_demo_data(str(tmp_path / "sod" / "DUTS-TR"), 3, 2)
