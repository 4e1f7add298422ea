"""inference.py --format: GeoTIFF maps and masks on the input's grid (CRS, transform, size),
nodata propagated, PNG for other inputs, and a clear error without rasterio."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import inference
from tests.helpers import ROOT, random_image
from utils.inference.predictor import Predictor

rasterio = pytest.importorskip("rasterio")
from rasterio.transform import Affine  # noqa: E402

CRS = "EPSG:32631"
TRANSFORM = Affine(0.5, 0.0, 600_010.0, 0.0, -0.5, 5_400_020.0)
ROTATED = Affine(0.3, 0.1, 600_010.0, 0.08, -0.3, 5_400_020.0)
NODATA_ROWS = 6
"""Rows at the top of the nodata input that are nodata in every band."""


def write_input_tif(
    path: Path,
    image: np.ndarray,
    transform: Affine = TRANSFORM,
    crs: str | None = CRS,
    nodata: int | None = None,
) -> Path:
    """Write the HxWx3 uint8 RGB ``image`` as a 3-band GeoTIFF."""
    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = image.shape[:2]
    profile = {"driver": "GTiff", "height": height, "width": width, "count": 3, "dtype": "uint8"}
    with rasterio.open(path, "w", **profile, crs=crs, transform=transform, nodata=nodata) as dst:
        dst.write(image.transpose(2, 0, 1))
    return path


def red_is_probability(monkeypatch) -> None:
    """Make every prediction the red channel / 255, so the masks are known in advance: of whole
    images (the in-memory path) and of windows (sliding GeoTIFFs, predicted band by band)."""

    def predict(self, images, on_windows=None):
        return [torch.from_numpy(image[:, :, 0].astype(np.float32) / 255) for image in images]

    def forward(self, batch, gains=None):
        return batch[..., 0].float() / 255

    monkeypatch.setattr(Predictor, "predict_tensors", predict)
    monkeypatch.setattr(Predictor, "forward", forward)


def run_cli(*args: str | Path) -> int:
    return inference.main([str(a) for a in args])


@pytest.mark.parametrize(
    ("mode", "shape", "transform"),
    [
        ("single", (270, 300), TRANSFORM),
        ("sliding", (70, 90), ROTATED),
    ],
)
def test_geotiff_outputs_keep_the_input_grid(checkpoint, tmp_path, mode, shape, transform):
    source = write_input_tif(tmp_path / "in" / "tile.tif", random_image(*shape), transform)
    out = tmp_path / "out"
    args = ["--mode", mode, "--window", "32", "--save", "map,mask"]
    assert run_cli("-m", checkpoint, "-i", tmp_path / "in", "-o", out, *args) == 0
    with rasterio.open(source) as src:
        grid = (src.crs, src.transform, src.width, src.height)
    for kind in ("maps", "masks"):
        assert not (out / kind / "tile.png").exists()
        with rasterio.open(out / kind / "tile.tif") as dst:
            assert (dst.crs, dst.transform, dst.width, dst.height) == grid
            assert dst.count == 1 and dst.dtypes == ("uint8",)
            assert dst.compression == rasterio.enums.Compression.deflate
            if min(shape) >= 256:
                assert dst.profile["tiled"] and dst.block_shapes == [(256, 256)]
            assert dst.dataset_mask().all()  # no nodata in the input
            if kind == "maps":
                saliency = dst.read(1)
            else:
                mask = dst.read(1)
    assert set(np.unique(mask)) <= {0, 255}
    assert np.array_equal(mask == 255, saliency >= 128)  # --threshold 0.5
    leftovers = [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    assert not leftovers


@pytest.mark.parametrize("mode", ["single", "sliding"])
def test_nodata_in_every_band_is_masked_in_the_outputs(checkpoint, tmp_path, monkeypatch, mode):
    red_is_probability(monkeypatch)
    image = np.full((40, 50, 3), 200, np.uint8)
    image[:NODATA_ROWS] = 0  # nodata in all bands
    image[NODATA_ROWS, :, 1] = 0  # nodata in one band only: still data
    write_input_tif(tmp_path / "in" / "tile.tif", image, nodata=0)
    out = tmp_path / "out"
    args = ["--save", "map,mask", "--mode", mode, "--window", "16"]
    assert run_cli("-m", checkpoint, "-i", tmp_path / "in", "-o", out, *args) == 0
    expected = np.ones((40, 50), bool)
    expected[:NODATA_ROWS] = False
    for kind in ("maps", "masks"):
        with rasterio.open(out / kind / "tile.tif") as dst:
            assert np.array_equal(dst.dataset_mask() > 0, expected)
            values = dst.read(1, masked=True)
            assert values.mask.sum() == NODATA_ROWS * 50
            assert (dst.read(1)[:NODATA_ROWS] == 0).all()
            assert (values[NODATA_ROWS:] == (200 if kind == "maps" else 255)).all()


def test_auto_format_writes_png_for_tiffs_without_georeferencing(checkpoint, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    cv2.imwrite(str(folder / "plain.tif"), random_image(30, 40))
    write_input_tif(folder / "geo.tif", random_image(30, 40))
    cv2.imwrite(str(folder / "photo.png"), random_image(30, 40))
    out = tmp_path / "out"
    assert run_cli("-m", checkpoint, "-i", folder, "-o", out, "--save", "map") == 0
    assert sorted(p.name for p in (out / "maps").iterdir()) == ["geo.tif", "photo.png", "plain.png"]
    with rasterio.open(out / "maps" / "geo.tif") as dst:
        geo_map = dst.read(1)
    forced = tmp_path / "forced"
    assert run_cli("-m", checkpoint, "-i", folder, "-o", forced, "--format", "tif") == 0
    assert sorted(p.name for p in (forced / "maps").iterdir()) == [
        "geo.tif",
        "photo.tif",
        "plain.tif",
    ]
    with rasterio.open(forced / "maps" / "photo.tif") as dst:
        assert dst.crs is None and dst.transform.is_identity and dst.shape == (30, 40)
    as_png = tmp_path / "png"
    assert run_cli("-m", checkpoint, "-i", folder, "-o", as_png, "--format", "png") == 0
    png_map = cv2.imread(str(as_png / "maps" / "geo.png"), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(png_map, geo_map)  # the same values in either format


def test_without_rasterio_tif_and_polygons_are_refused_and_auto_writes_png(
    checkpoint, tmp_path, monkeypatch, capsys
):
    write_input_tif(tmp_path / "in" / "tile.tif", random_image(30, 40))
    for name in ("rasterio", "affine", "shapely"):  # not installed: import raises ImportError
        monkeypatch.setitem(sys.modules, name, None)
    base = ["-m", checkpoint, "-i", tmp_path / "in", "-o", tmp_path / "out"]
    assert run_cli(*base, "--format", "tif") == 2
    assert "--format tif needs rasterio: pip install -r requirements-geo.txt" in (
        capsys.readouterr().err
    )
    assert run_cli(*base, "--save", "map,polygons") == 2
    assert "--save polygons needs rasterio" in capsys.readouterr().err
    assert run_cli(*base) == 0
    assert "TIFF inputs are written as PNG" in capsys.readouterr().err
    assert (tmp_path / "out" / "maps" / "tile.png").is_file()


def test_polygons_without_pyogrio_are_refused_before_predicting(
    checkpoint, tmp_path, monkeypatch, capsys
):
    write_input_tif(tmp_path / "in" / "tile.tif", random_image(30, 40))
    monkeypatch.setitem(sys.modules, "pyogrio", None)
    args = ["-m", checkpoint, "-i", tmp_path / "in", "-o", tmp_path / "out", "--save", "polygons"]
    assert run_cli(*args) == 2
    assert "--save polygons needs pyogrio: pip install -r requirements-geo.txt" in (
        capsys.readouterr().err
    )
    assert not (tmp_path / "out").exists()


def test_predicting_pngs_imports_no_rasterio(checkpoint, tmp_path):
    cv2.imwrite(str(tmp_path / "x.png"), random_image(30, 40))
    args = ["-m", checkpoint, "-i", tmp_path / "x.png", "-o", tmp_path / "out", "--mode", "sliding"]
    code = (
        "import sys, inference; "
        f"status = inference.main({[str(a) for a in args]!r}); "
        "sys.exit(status or (3 if {'rasterio', 'shapely', 'pyogrio'} & set(sys.modules) else 0))"
    )
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0
    assert (tmp_path / "out" / "maps" / "x.png").is_file()


@pytest.mark.parametrize(
    ("shape", "extra"),
    [
        ((75, 61), []),
        ((75, 61), ["--flip", "--normalisation", "official", "--stride", "20"]),
        ((20, 70), ["--batch-size", "2"]),  # lower than a window
    ],
)
def test_sliding_geotiffs_are_streamed_with_the_in_memory_maps(
    checkpoint, tmp_path, monkeypatch, shape, extra
):
    write_input_tif(tmp_path / "in" / "tile.tif", random_image(*shape), ROTATED)
    base = ["-m", checkpoint, "-i", tmp_path / "in", "--mode", "sliding", "--window", "32"]
    assert run_cli(*base, "-o", tmp_path / "png", "--format", "png", *extra) == 0
    in_memory = cv2.imread(str(tmp_path / "png" / "maps" / "tile.png"), cv2.IMREAD_UNCHANGED)

    def refuse(*args, **kwargs):
        raise AssertionError("a sliding GeoTIFF went through the in-memory path")

    monkeypatch.setattr(Predictor, "_slide", refuse)
    assert run_cli(*base, "-o", tmp_path / "tif", "--save", "map,mask", *extra) == 0
    with rasterio.open(tmp_path / "tif" / "maps" / "tile.tif") as dst:
        streamed = dst.read(1)
    with rasterio.open(tmp_path / "tif" / "masks" / "tile.tif") as dst:
        mask = dst.read(1)
    assert np.array_equal(streamed, in_memory)
    assert np.array_equal(mask == 255, streamed >= 128)


def test_inria_submission_format(checkpoint, tmp_path, monkeypatch):
    """The Inria leaderboard asks for one 0/255 8-bit single-channel TIFF per test tile, named as
    the input (project.inria.fr/aerialimagelabeling/contest): masks/ of --save mask --format tif."""
    red_is_probability(monkeypatch)
    names = ["bellingham1", "innsbruck12", "sfo3"]
    for seed, name in enumerate(names):
        tile = random_image(40, 56, seed)
        write_input_tif(tmp_path / "test" / "images" / f"{name}.tif", tile)
    out = tmp_path / "submission"
    args = ["-m", checkpoint, "-i", tmp_path / "test" / "images", "-o", out]
    assert (
        run_cli(*args, "--mode", "sliding", "--window", "32", "--save", "mask", "--format", "tif")
        == 0
    )
    assert sorted(path.name for path in (out / "masks").iterdir()) == [f"{n}.tif" for n in names]
    for name in names:
        with rasterio.open(out / "masks" / f"{name}.tif") as mask:
            assert (mask.count, mask.dtypes[0], mask.crs.to_string()) == (1, "uint8", CRS)
            assert set(np.unique(mask.read(1))) <= {0, 255}
