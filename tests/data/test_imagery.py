"""The ``imagery`` section: band selection and 8-bit scaling of multi-band, 16-bit and nodata
GeoTIFFs, identical in the building loaders and in inference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from dataloaders.buildings import WHUBuilding, WHUBuildingDataset
from dataloaders.demo import DemoSOD
from utils.config import ConfigError, validate_config
from utils.imagery import (
    Imagery,
    apply_tables,
    band_histograms,
    histogram_percentiles,
    lookup_tables,
    scale_to_8_bits,
)
from utils.inference.predictor import PredictOptions, Predictor
from utils.io.geotiff import read_georeference, valid_pixels
from utils.io.images import read_image
from utils.io.rasters import RasterBands, read_bands, read_model_input
from utils.preprocessing import normalise_, pad_values

rasterio = pytest.importorskip("rasterio")
from rasterio.transform import Affine  # noqa: E402

CRS = "EPSG:32614"
TRANSFORM = Affine(0.3, 0.0, 620_000.0, 0.0, -0.3, 3_350_000.0)
NODATA = 0


def write_raster(path: Path, bands: np.ndarray, nodata: float | None = None, **profile) -> Path:
    """Write the CxHxW ``bands`` as a GeoTIFF with a projected CRS and a 0.3 m grid."""
    path.parent.mkdir(parents=True, exist_ok=True)
    count, height, width = bands.shape
    with rasterio.open(
        path, "w", driver="GTiff", height=height, width=width, count=count,
        dtype=bands.dtype.name, crs=CRS, transform=TRANSFORM, nodata=nodata, **profile,
    ) as dst:  # fmt: skip
        dst.write(bands)
    return path


def rgbn_uint16(height: int, width: int, seed: int = 0) -> np.ndarray:
    """4xHxW uint16 12-bit data (values 1..4095) with a nodata corner (0 in every band)."""
    rng = np.random.default_rng(seed)
    bands = rng.integers(1, 4096, (4, height, width), dtype=np.uint16)
    bands[:, :5, :9] = NODATA
    return bands


# -- the section -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("section", "named"),
    [
        ({"bands": []}, "imagery.bands"),
        ({"bands": [0, 1, 2]}, "imagery.bands"),
        ({"bands": [1, 2, 3], "scale": "stretch"}, "imagery.scale"),
        ({"bands": [1, 2, 3], "scale": "fixed", "min": 0}, "imagery.max"),
        ({"bands": [1, 2, 3], "scale": "fixed", "min": [0, 0], "max": 9}, "imagery.min"),
        ({"bands": [1, 2, 3], "scale": "fixed", "min": 5, "max": 5}, "imagery.max"),
        ({"bands": [1, 2, 3], "scale": "percentile", "percentiles": [98, 2]}, "percentiles"),
        ({"bands": [1, 2, 3], "scale": "percentile", "divisor": 9}, "imagery.divisor"),
        ({"bands": [1, 2, 3], "divisor": -1}, "imagery.divisor"),
        ({"bands": [1, 2, 3], "band": [1]}, "imagery.band"),
    ],
)
def test_a_wrong_section_names_its_key(section, named):
    with pytest.raises(ValueError, match=named):
        Imagery.from_config(section)


def test_the_section_round_trips_through_the_config():
    for section in (
        {"bands": [4, 1, 2], "scale": "percentile", "percentiles": [1.0, 99.0]},
        {"bands": [1, 2, 3, 4], "scale": "fixed", "min": [0.0] * 4, "max": [2047.0] * 4},
        {"bands": [3, 2, 1], "scale": "divide", "divisor": 4095.0},
    ):
        imagery = Imagery.from_config(section)
        assert imagery.to_config() == section
        assert Imagery.from_config(imagery.to_config()) == imagery


def test_the_config_checks_in_channels_against_the_bands(tmp_path):
    from train import registries

    config = {
        "arch": {"type": "U2Net", "args": {"variant": "lite"}},
        "train_loader": {"type": "WHUBuilding", "args": {"data_dir": "whu", "batch_size": 1}},
        "loss": {"type": "DeepSupervisionLoss", "args": {}},
        "optimizer": {"type": "AdamW", "args": {"lr": 0.001}},
        "trainer": {"monitor": "max IoU"},
        "imagery": {"bands": [1, 2, 3, 4], "scale": "percentile"},
    }  # fmt: skip
    full = validate_config(config, registries())  # in_channels left out: one per band
    assert full["arch"]["args"]["in_channels"] == 4 and "in_channels" not in config["arch"]["args"]
    assert full["imagery"] == {"bands": [1, 2, 3, 4], "scale": "percentile", "percentiles": [2, 98]}
    config["arch"]["args"]["in_channels"] = 3
    with pytest.raises(ConfigError, match=r"in_channels' is 3 .* selects 4 band"):
        validate_config(config, registries())
    config["arch"]["args"]["in_channels"] = 4
    assert validate_config(config, registries())["imagery"]["bands"] == [1, 2, 3, 4]
    with pytest.raises(ConfigError, match=r"imagery\.scale"):
        validate_config({**config, "imagery": {"bands": [1], "scale": "log"}}, registries())
    del config["imagery"]
    with pytest.raises(ConfigError, match="in_channels' is 4 but images are read as RGB"):
        validate_config(config, registries())


def test_a_loader_of_rgb_images_refuses_an_imagery_section(tmp_path):
    with pytest.raises(ValueError, match="applies to the building tile loaders; DemoSOD"):
        DemoSOD(batch_size=1, data_dir=str(tmp_path), imagery=Imagery((1, 2, 3)))


# -- scaling ---------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16])
def test_histogram_percentiles_equal_numpys(dtype):
    rng = np.random.default_rng(1)
    info = np.iinfo(dtype)
    values = rng.integers(info.min, int(info.max) + 1, (37, 23, 2), dtype=dtype)
    values[:, :, 1] = values[:, :, 1] // 97  # many ties
    valid = rng.random((37, 23)) > 0.3
    qs = [0, 0.5, 2, 25, 50, 97.3, 98, 100]
    got = histogram_percentiles(band_histograms(values.transpose(2, 0, 1), valid), qs, info.min)
    for band in range(2):
        expected = np.percentile(values[:, :, band][valid].astype(np.float64), qs)
        np.testing.assert_allclose(got[band], expected, rtol=0, atol=1e-9)


def test_dividing_uint16_by_65535_is_the_8_bit_rgb_reading(tmp_path):
    rng = np.random.default_rng(2)
    rgb = rng.integers(0, 65536, (3, 31, 45), dtype=np.uint16)
    path = write_raster(tmp_path / "rgb16.tif", rgb, photometric="RGB")
    assert np.array_equal(read_bands(path, Imagery((1, 2, 3))), read_image(path))


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.uint16, np.int16])
def test_lookup_tables_give_the_scaling_formulas_bytes(dtype):
    info = np.iinfo(dtype)
    pixels = np.random.default_rng(3).integers(info.min, int(info.max) + 1, (9, 11, 3), dtype=dtype)
    low, high = np.array([info.min / 3, 5.0, -1.0]), np.array([info.max / 2, 5.0, 7.5])
    tables = lookup_tables(np.dtype(dtype), low, high)
    by_table = apply_tables(tables, pixels.transpose(2, 0, 1)).transpose(1, 2, 0)
    assert np.array_equal(by_table, scale_to_8_bits(pixels, low, high))


def test_scaling_rounds_clips_and_handles_constant_bands():
    pixels = np.array([[[0, 7], [50, 7], [100, 9], [250, 3]]], np.uint16)
    low, high = np.array([50.0, 7.0]), np.array([150.0, 7.0])
    out = scale_to_8_bits(pixels, low, high)
    assert out[0, :, 0].tolist() == [0, 0, 128, 255]  # 127.5 rounds half to even
    assert out[0, :, 1].tolist() == [0, 0, 255, 0]  # constant band: 255 above low


# -- rasters ---------------------------------------------------------------------------------


def test_percentile_scaling_uses_the_valid_pixels_of_the_whole_raster(tmp_path):
    bands = rgbn_uint16(70, 90)
    path = write_raster(tmp_path / "rgbn.tif", bands, nodata=NODATA)
    imagery = Imagery.from_config({"bands": [4, 1, 2], "scale": "percentile"})
    valid = ~(bands == NODATA).all(axis=0)
    with RasterBands(path, imagery) as raster:
        low, high = raster.limits()
        for channel, band in enumerate(imagery.bands):
            expected = np.percentile(bands[band - 1][valid], [2, 98])
            assert (low[channel], high[channel]) == pytest.approx(tuple(expected), abs=1e-9)
        whole = raster.read()
        assert whole.shape == (70, 90, 3) and whole.dtype == np.uint8
        assert not whole[:5, :9].any()  # nodata: 0 in every band
        expected = scale_to_8_bits(bands[[3, 0, 1]].transpose(1, 2, 0), low, high, valid)
        assert np.array_equal(whole, expected)
        assert np.array_equal(raster.read(40, 60, 64, 64), whole[40:, 60:])  # clipped window


def test_rasters_that_do_not_fit_the_section_are_refused_by_name(tmp_path):
    path = write_raster(tmp_path / "rgbn.tif", rgbn_uint16(8, 8))
    with pytest.raises(OSError, match=r"rgbn.tif has 4 band\(s\); imagery.bands \[1, 5\]"):
        read_bands(path, Imagery((1, 5)))
    floats = write_raster(tmp_path / "float.tif", np.ones((2, 8, 8), np.float32))
    with pytest.raises(
        OSError, match=r"float\.tif holds float32 data: imagery\.scale 'percentile'"
    ):
        read_bands(floats, Imagery((1, 2), "percentile"))
    with pytest.raises(OSError, match=r"float.tif: .* set 'imagery.divisor'"):
        read_bands(floats, Imagery((1, 2)))
    assert read_bands(floats, Imagery((1, 2), divisor=2.0)).max() == 128


# -- the loader and inference read the same pixels ------------------------------------------


class InputRecorder(nn.Module):
    """A stand-in model: records its inputs, predicts 0.5 everywhere."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, 1, 1)
        self.inputs: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.inputs.append(x.clone())
        return torch.full_like(x[:, :1], 0.5)


@pytest.mark.parametrize(
    "section",
    [
        {"bands": [4, 1, 2], "scale": "percentile", "percentiles": [1, 99]},
        {"bands": [1, 2, 3, 4], "scale": "fixed", "min": [100, 100, 100, 0], "max": 4000},
        {"bands": [2], "scale": "divide", "divisor": 4095},
    ],
)
def test_loader_windows_are_the_inference_inputs(tmp_path, section):
    imagery = Imagery.from_config(section)
    root = tmp_path / "whu"
    for name, seed in (("a", 0), ("b", 1)):
        write_raster(root / "val" / "image" / f"{name}.tif", rgbn_uint16(64, 80, seed), NODATA)
        mask = (np.random.default_rng(seed).random((1, 64, 80)) > 0.5).astype(np.uint8) * 255
        write_raster(root / "val" / "label" / f"{name}.tif", mask)
    dataset = WHUBuildingDataset(str(root), "val", crop_size=32, imagery=imagery)
    assert "imagery=" in repr(dataset)
    recorder = InputRecorder(imagery.channels)
    predictor = Predictor(
        recorder,
        PredictOptions(mode="sliding", window=32, overlap=0, batch_size=1),
        imagery=imagery,
    )
    for tile, (image_path, _) in enumerate(dataset.files):
        recorder.inputs.clear()
        predictor.predict(image_path)  # sliding windows of 32 at stride 32: the loader's grid
        windows = [i for i, (t, _, _) in enumerate(dataset.windows) if t == tile]
        assert len(recorder.inputs) == len(windows)
        for index, seen in zip(windows, recorder.inputs, strict=True):
            image, _ = dataset[index]
            assert image.shape == (imagery.channels, 32, 32)
            assert torch.equal(image, seen[0])
    expected = normalise_(
        read_model_input(dataset.files[0][0], imagery)[:32, :32]
        .transpose(2, 0, 1)
        .astype(np.float32)
    )
    assert np.array_equal(dataset[0][0].numpy(), expected)


def test_the_loader_takes_an_imagery_section_and_pads_every_band(tmp_path):
    imagery = Imagery.from_config({"bands": [1, 2, 3, 4], "scale": "divide", "divisor": 4095})
    root = tmp_path / "whu"
    write_raster(root / "train" / "image" / "a.tif", rgbn_uint16(20, 24))
    write_raster(root / "train" / "label" / "a.tif", np.zeros((1, 20, 24), np.uint8))
    loader = WHUBuilding(
        batch_size=2,
        data_dir=str(root),
        crop_size=32,
        augment=True,
        windows_per_epoch=2,
        imagery=imagery,
    )
    images, masks = next(iter(loader))
    assert images.shape == (2, 4, 32, 32) and masks.shape == (2, 1, 32, 32)
    padded = torch.from_numpy(normalise_(np.array(pad_values(4), np.float32)[:, None, None]))
    corners = images[:, :, [0, 0, -1, -1], [0, -1, 0, -1]]  # 12 of 20 rows and columns padded
    assert ((corners == padded.view(1, 4, 1)).sum(dim=2) == 3).all()  # the tile fills one corner


@pytest.mark.parametrize(
    "options",
    [
        PredictOptions(mode="single", size=32, flip=True),
        PredictOptions(mode="multiscale", size=32, scales=(0.5, 1.0)),
        PredictOptions(mode="sliding", window=16, scale=0.7, flip=True),
    ],
)
def test_one_band_imagery_runs_in_every_mode(options):
    """OpenCV's resize and flip return 2-D arrays for one channel; the predictor keeps HxWx1."""
    recorder = InputRecorder(1)
    image = np.random.default_rng(4).integers(0, 256, (37, 45, 1), dtype=np.uint8)
    predictor = Predictor(recorder, options, imagery=Imagery((1,)))
    assert predictor.predict(image).shape == (37, 45)
    assert all(x.shape[1] == 1 for x in recorder.inputs)


def test_a_selected_band_that_gdal_tags_as_alpha_is_data_not_a_mask(tmp_path):
    """GDAL tags the 4th band of a 4-band uint8 GeoTIFF as alpha by default: for RGBN imagery
    that is the NIR band, whose zeros must not blank the pixels of the other bands."""
    bands = np.random.default_rng(6).integers(1, 256, (4, 40, 30), dtype=np.uint8)
    bands[3, 10:20] = 0  # dark NIR: water, shadow
    path = write_raster(tmp_path / "rgbn8.tif", bands)
    with rasterio.open(path) as src:
        assert src.colorinterp[3] == rasterio.enums.ColorInterp.alpha  # the trap
    read = read_bands(path, Imagery((4, 1, 2, 3)))
    assert np.array_equal(read, bands[[3, 0, 1, 2]].transpose(1, 2, 0))  # nothing blanked
    assert np.array_equal(
        read_bands(path, Imagery((1, 2, 3))),
        bands[:3].transpose(1, 2, 0) * (bands[3, :, :, None] > 0),
    )  # RGB read: band 4 is an alpha mask, as GDAL says
    bands[:, :5] = 0  # with a nodata value: pixels that hold it in every selected band
    path = write_raster(tmp_path / "rgbn8_nodata.tif", bands, nodata=0)
    assert valid_pixels(path, bands=(4, 1, 2, 3)).tolist() == (bands.any(axis=0)).tolist()
    assert read_georeference(path, bands=(4, 1, 2, 3)).masked
    assert not read_georeference(tmp_path / "rgbn8.tif", bands=(1, 2, 3, 4)).masked


def test_tiles_that_do_not_fit_the_imagery_stop_the_loader_when_it_is_built(tmp_path):
    root = tmp_path / "whu"
    write_raster(root / "train" / "image" / "a.tif", rgbn_uint16(20, 24))
    write_raster(root / "train" / "label" / "a.tif", np.zeros((1, 20, 24), np.uint8))
    with pytest.raises(OSError, match=r"a\.tif has 4 band\(s\); imagery\.bands \[1, 2, 3, 5\]"):
        WHUBuildingDataset(str(root), crop_size=16, imagery=Imagery((1, 2, 3, 5)))


def test_reading_a_5_band_tiff_as_rgb_names_the_band_count_and_the_section(tmp_path, capfd):
    path = write_raster(tmp_path / "five.tif", np.ones((5, 8, 8), np.uint8))
    capfd.readouterr()
    with pytest.raises(OSError, match=r"five\.tif has 5 bands; .* the config's imagery section"):
        read_image(path)
    assert "Unsupported number of channels" not in capfd.readouterr().err  # OpenCV's own log


@pytest.mark.filterwarnings("error")  # numpy warns when NaN is cast to uint8
def test_nan_values_become_0_without_a_warning():
    pixels = np.array([[[0.5, np.nan], [np.nan, 1.0]]], np.float32)
    out = scale_to_8_bits(pixels, np.zeros(2), np.ones(2))
    assert out.tolist() == [[[128, 0], [0, 255]]]
