"""Multi-band, 16-bit GeoTIFF tiles end to end: fine-tune a 4-band lite U2Net from 3-band weights
with an ``imagery`` section, then predict the tiles with the checkpoint (single and sliding
mode, GeoTIFF outputs on the input grid), reading them as training did."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import inference
import train
from models import U2Net
from tests.data.test_imagery import CRS, NODATA, TRANSFORM, rgbn_uint16, write_raster
from u2seg import Predictor, load_model
from utils.io.checkpoint import load_checkpoint
from utils.metrics.prepare import prob_to_uint8

rasterio = pytest.importorskip("rasterio")

IMAGERY = {"bands": [4, 1, 2, 3], "scale": "percentile", "percentiles": [2, 98]}


def write_tiles(root: Path) -> None:
    """WHU-layout 4-band uint16 tiles with nodata corners: 2 for training, 1 for validation."""
    for split, names in (("train", ("a", "b")), ("val", ("c",))):
        for name in names:
            bands = rgbn_uint16(64, 64, seed=ord(name))
            buildings = np.zeros((1, 64, 64), np.uint8)
            buildings[:, 20:44, 16:40] = 255
            bands[:, 20:44, 16:40] //= 3  # dark roofs
            write_raster(root / split / "image" / f"{name}.tif", bands, NODATA)
            write_raster(root / split / "label" / f"{name}.tif", buildings)


def write_config(tmp_path: Path, pretrained: Path) -> Path:
    loader = {"data_dir": str(tmp_path / "whu"), "crop_size": 32, "num_workers": 0}
    config = {
        "name": "rgbn",
        "seed": 1,
        "imagery": IMAGERY,
        "arch": {
            "type": "U2Net",
            "args": {"variant": "lite", "in_channels": 4, "pretrained": str(pretrained)},
        },
        "train_loader": {
            "type": "WHUBuilding",
            "args": {**loader, "batch_size": 2, "augment": True, "windows_per_epoch": 4},
        },
        "val_loader": {"type": "WHUBuilding", "args": {**loader, "split": "val", "batch_size": 2}},
        "loss": {"type": "DeepSupervisionLoss", "args": {"mode": "bce_iou"}},
        "optimizer": {"type": "AdamW", "args": {"lr": 0.001}},
        "trainer": {
            "epochs": 1,
            "save_dir": str(tmp_path / "saved"),
            "monitor": "max IoU",
            "tensorboard": False,
            "log_per_iter": 1,
        },
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run folder of one epoch of fine-tuning on the 4-band tiles."""
    tmp_path = tmp_path_factory.mktemp("rgbn")
    torch.manual_seed(0)
    rgb_weights = tmp_path / "rgb_lite.pth"
    torch.save(U2Net("lite").state_dict(), rgb_weights)
    write_tiles(tmp_path / "whu")
    return train.main(["-c", str(write_config(tmp_path, rgb_weights))])


def test_the_checkpoint_records_the_imagery_and_four_input_channels(run):
    checkpoint = load_checkpoint(run / "checkpoint-epoch1.pth")
    assert checkpoint["config"]["imagery"] == IMAGERY
    first = checkpoint["state_dict"]["encoders.0.conv_in.conv.weight"]
    assert first.shape[1] == 4  # widened from the 3-band weights
    predictor = Predictor.from_checkpoint(run / "checkpoint-epoch1.pth")
    assert predictor.imagery is not None and predictor.imagery.bands == (4, 1, 2, 3)
    assert predictor.channels == 4


@pytest.mark.parametrize("mode", ["single", "sliding"])
def test_inference_reads_the_tiles_as_training_did_and_keeps_their_grid(run, tmp_path, mode):
    source = run.parents[3] / "whu" / "val" / "image"
    out = tmp_path / "out"
    args = ["-m", run / "checkpoint-epoch1.pth", "-i", source, "-o", out, "--mode", mode]
    args += ["--window", "32", "--save", "map,mask", "--no-fuse"]
    assert inference.main([str(a) for a in args]) == 0
    with rasterio.open(out / "maps" / "c.tif") as dst:
        assert (dst.crs.to_string(), dst.transform, dst.shape) == (CRS, TRANSFORM, (64, 64))
        written = dst.read(1)
        valid = dst.dataset_mask() > 0
    assert not valid[:5, :9].any() and valid[5:, 9:].all()  # the input's nodata corner
    predictor = Predictor.from_checkpoint(
        run / "checkpoint-epoch1.pth", mode=mode, window=32, fuse=False
    )
    expected = prob_to_uint8(torch.from_numpy(predictor.predict(source / "c.tif"))).numpy()
    assert np.array_equal(np.where(valid, written, 0), np.where(valid, expected, 0))


def test_an_onnx_export_records_the_imagery_and_predicts_like_the_checkpoint(run, tmp_path):
    pytest.importorskip(
        "onnxruntime", reason="onnxruntime (requirements-dev.txt) checks the export"
    )
    from tests.models.test_export_onnx import load_tool

    out = tmp_path / "rgbn.onnx"
    assert load_tool().main(["-m", str(run / "checkpoint-epoch1.pth"), "-o", str(out)]) == 0
    tile = run.parents[3] / "whu" / "val" / "image" / "c.tif"
    from_onnx = Predictor.from_checkpoint(out, size=64, fuse=False)
    assert from_onnx.imagery == Predictor.from_checkpoint(run / "checkpoint-epoch1.pth").imagery
    expected = Predictor.from_checkpoint(run / "checkpoint-epoch1.pth", size=64, fuse=False)
    np.testing.assert_allclose(from_onnx.predict(tile), expected.predict(tile), atol=1e-4)


def test_a_config_without_imagery_keeps_the_checkpoints(run, tmp_path):
    config = json.loads((run.parents[3] / "config.json").read_text())
    config.pop("imagery")  # the arch alone: the imagery (and in_channels) come with the weights
    del config["arch"]["args"]["in_channels"]
    path = tmp_path / "arch_only.json"
    path.write_text(json.dumps(config))
    loaded = load_model(run / "checkpoint-epoch1.pth", path)
    assert loaded.imagery is not None and loaded.imagery.to_config() == IMAGERY
    config["imagery"] = {"bands": [4, 3, 2, 1], "scale": "divide", "divisor": 4095}
    path.write_text(json.dumps(config))  # a config's own imagery replaces it
    assert load_model(run / "checkpoint-epoch1.pth", path).imagery.bands == (4, 3, 2, 1)
