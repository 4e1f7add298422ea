"""The official normalisation (x / max(x), then ImageNet mean/std) in prediction and datasets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dataloaders import DUTS
from tests.helpers import random_image
from u2seg import load_model
from utils.inference.predictor import PredictOptions, Predictor
from utils.io.checkpoint import save_checkpoint
from utils.preprocessing import IMAGENET_MEAN, IMAGENET_STD, normalise_


def dark_and_bright(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """A dark image (maximum 85) and the same image times 3 (maximum 255), exactly."""
    dark = (random_image(height, width).astype(np.int32) // 3).astype(np.uint8)
    dark[0, 0] = 85
    return dark, dark * 3


def test_normalise_official_divides_by_the_image_maximum():
    image = np.random.default_rng(0).uniform(0, 137, (3, 8, 8)).astype(np.float32)
    image[0, 0, 0] = 137
    expected = (image / 137 - np.array(IMAGENET_MEAN)[:, None, None]) / np.array(IMAGENET_STD)[
        :, None, None
    ]
    assert np.abs(normalise_(image.copy(), "official") - expected).max() < 1e-5
    black = np.zeros((3, 4, 4), np.float32)
    assert np.array_equal(normalise_(black.copy(), "official"), normalise_(black, "imagenet"))


@pytest.mark.parametrize("mode", ["single", "sliding"])
def test_official_prediction_of_a_dark_image_is_that_of_the_image_scaled_to_255(lite, mode):
    dark, bright = dark_and_bright(64, 96)
    options = PredictOptions(mode=mode, size=64, window=48, overlap=0.5)  # no resize at 64
    if mode == "single":
        dark, bright = dark[:, :64], bright[:, :64]
    official = Predictor(lite, options, normalisation="official").predict(dark)
    imagenet = Predictor(lite, options).predict(bright)
    assert np.array_equal(official, imagenet)
    assert not np.array_equal(Predictor(lite, options).predict(dark), imagenet)


def test_an_unknown_normalisation_is_refused(lite):
    with pytest.raises(ValueError, match=r"normalisation must be one of 'imagenet', 'official'"):
        Predictor(lite, normalisation="max")


def test_official_dataset_images_reach_one_at_their_brightest(duts_dir):
    for normalisation, brightest in (("official", True), ("imagenet", False)):
        loader = DUTS(
            data_dir=str(duts_dir), batch_size=2, normalisation=normalisation, base_size=32
        )
        images, _ = next(iter(loader))
        pixels = images * torch.tensor(IMAGENET_STD)[:, None, None]
        pixels += torch.tensor(IMAGENET_MEAN)[:, None, None]
        peaks = pixels.flatten(1).amax(1)
        assert torch.allclose(peaks, torch.ones_like(peaks), atol=1e-5) == brightest


def test_checkpoints_carry_their_normalisation_to_prediction(lite, tmp_path):
    for normalisation in ("official", "imagenet"):
        path = tmp_path / f"{normalisation}.pth"
        config = {"normalisation": normalisation} if normalisation == "official" else {}
        save_checkpoint(
            {"arch": "U2Net", "epoch": 1, "state_dict": lite.state_dict(), "config": config}, path
        )
        assert load_model(path).normalisation == normalisation
