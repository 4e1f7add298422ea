"""Predictor modes: single, multi-scale, sliding, flip, post-norm, batching, precision."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.helpers import predict_map, random_image
from utils.inference.predictor import PredictOptions, Predictor


class Constant(torch.nn.Module):
    """A stand-in model whose probability is ``value`` everywhere."""

    def __init__(self, value: float = 0.7) -> None:
        super().__init__()
        self.value = value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full_like(x[:, :1], self.value)


class MeanColour(torch.nn.Module):
    """A cheap stand-in model: the sigmoid of the channel mean."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(x.mean(1, keepdim=True))


@pytest.mark.parametrize(
    "options",
    [
        {"mode": "single", "size": 64},
        {"mode": "multiscale", "size": 64, "scales": (0.75, 1.25)},
        {"mode": "sliding", "window": 160, "overlap": 0.25},
        {"mode": "sliding", "window": 96, "scale": 0.5, "blend": "uniform"},
    ],
    ids=["single", "multiscale", "sliding", "sliding-scaled"],
)
def test_each_mode_predicts_at_the_original_odd_size(lite, options):
    prob = predict_map(lite, random_image(333, 517), **options)
    assert prob.shape == (333, 517) and prob.dtype == torch.float32
    assert float(prob.min()) >= 0 and float(prob.max()) <= 1


def test_sliding_with_a_window_covering_the_image_equals_single_mode(lite):
    image = random_image(80, 80, seed=1)
    single = predict_map(lite, image, mode="single", size=80)
    for blend in ("gaussian", "uniform"):
        sliding = predict_map(lite, image, mode="sliding", window=100, blend=blend)
        torch.testing.assert_close(sliding, single, rtol=0, atol=1e-6)


@pytest.mark.parametrize("blend", ["gaussian", "uniform"])
@pytest.mark.parametrize("scale", [1.0, 0.45])
def test_sliding_blend_of_a_constant_model_is_constant_without_seams(blend, scale):
    image = random_image(700, 901)
    prob = predict_map(
        Constant(0.7), image, mode="sliding", window=128, overlap=0.3, blend=blend, scale=scale
    )
    assert prob.shape == (700, 901)
    assert float((prob - 0.7).abs().max()) < 1e-6


@pytest.mark.parametrize("scale", [1.0, 0.3])
def test_sliding_on_a_large_image_keeps_its_size(scale):
    image = random_image(2000, 3000)
    prob = predict_map(
        MeanColour(), image, mode="sliding", window=512, overlap=0.25, batch_size=8, scale=scale
    )
    assert prob.shape == (2000, 3000)
    if scale == 1:  # a per-pixel model: the blend must give back its whole-image output
        whole = Predictor(MeanColour(), PredictOptions()).forward(torch.from_numpy(image)[None])
        torch.testing.assert_close(prob, whole[0], rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "options",
    [
        {"mode": "single", "size": 64},
        {"mode": "multiscale", "size": 64, "scales": (0.8, 1.0, 1.3)},
        {"mode": "sliding", "window": 96, "overlap": 0.4},
        {"mode": "sliding", "window": 96, "scale": 0.7},
    ],
    ids=["single", "multiscale", "sliding", "sliding-scaled"],
)
def test_flip_averaged_output_of_a_symmetric_image_is_exactly_symmetric(lite, options):
    half = random_image(150, 131, seed=2)
    image = np.ascontiguousarray(np.concatenate([half, half[:, ::-1]], axis=1))  # 150x262
    assert np.array_equal(image, image[:, ::-1])
    flipped = predict_map(lite, image, flip=True, **options)
    assert torch.equal(flipped, flipped.flip(-1))
    plain = predict_map(lite, image, **options)
    assert not torch.equal(plain, plain.flip(-1))  # the model itself is not symmetric


def test_post_norm_stretches_each_map_to_zero_one(lite):
    prob = predict_map(lite, random_image(90, 70), mode="single", size=64, post_norm=True)
    assert float(prob.min()) == 0.0 and float(prob.max()) == 1.0
    constant = predict_map(Constant(0.3), random_image(20, 20), size=20, post_norm=True)
    assert torch.equal(constant, torch.full((20, 20), 0.3))


def test_batches_of_images_give_the_same_maps_as_one_at_a_time(lite):
    images = [random_image(60 + 7 * i, 90 - 5 * i, seed=i) for i in range(3)]
    batched = Predictor(lite, PredictOptions(size=64, batch_size=3, flip=True)).predict_tensors(
        images
    )
    for image, prob in zip(images, batched, strict=True):
        alone = predict_map(lite, image, size=64, batch_size=1, flip=True)
        torch.testing.assert_close(prob, alone, rtol=0, atol=1e-6)


def test_bf16_autocast_runs_on_the_cpu(lite):
    image = random_image(64, 64)
    full = predict_map(lite, image, size=64)
    amp = Predictor(lite, PredictOptions(size=64), amp="bf16", channels_last=True).predict_tensors(
        [image]
    )[0]
    assert amp.dtype == torch.float32
    assert float((amp - full).abs().max()) < 0.05


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_fp16_sliding_on_the_gpu_matches_the_cpu(lite):
    image = random_image(300, 400)
    cpu = predict_map(lite, image, mode="sliding", window=128)
    gpu = Predictor(lite, PredictOptions(mode="sliding", window=128), "cuda", amp="fp16")
    assert float((gpu.predict_tensors([image])[0].cpu() - cpu).abs().max()) < 0.02
    lite.cpu()
