"""Fine-tuning a U2Net with more than 3 input channels from 3-channel (RGB) weights (issue 18,
item 5): the first conv is widened, the extra channels starting from the mean of the RGB filters;
every other mismatch of input channels is refused, and trained models load as they were saved."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from models import U2Net, load_pretrained
from models.weight_formats import FIRST_CONV, read_pretrained, widen_first_conv
from tests.helpers import lite_with_batchnorm_statistics
from tests.models.test_export_onnx import load_tool
from tests.models.test_weight_formats import official_state_dict

WIDENED = "first conv widened from 3 to 4 input channels (extra channels: the mean of the RGB"


def save_ours(path: Path) -> None:
    torch.save(lite_with_batchnorm_statistics().state_dict(), path)


def save_official(path: Path) -> None:
    torch.save(official_state_dict("lite"), path)  # with conv biases, folded when read


def save_onnx(path: Path) -> None:
    pytest.importorskip("onnx", reason="onnx (requirements-dev.txt) reads and writes ONNX")
    model = lite_with_batchnorm_statistics().eval()
    load_tool().export(model, path, torch.zeros(1, 3, 64, 64), dynamic=False)


@pytest.fixture
def rgb_weights(tmp_path: Path) -> Path:
    """A lite U2Net's 3-channel state dict, saved with torch.save."""
    path = tmp_path / "rgb.pth"
    save_ours(path)
    return path


def test_rgb_filters_are_kept_and_the_extra_one_is_their_mean(rgb_weights):
    saved = torch.load(rgb_weights, weights_only=True)
    model = U2Net("lite", in_channels=4, pretrained=str(rgb_weights))
    state = model.state_dict()
    conv = state[FIRST_CONV]
    assert conv.shape == (64, 4, 3, 3)
    assert torch.equal(conv[:, :3], saved[FIRST_CONV])
    assert torch.equal(conv[:, 3:], saved[FIRST_CONV].mean(dim=1, keepdim=True))
    assert state.keys() == saved.keys()
    changed = [k for k in saved if k != FIRST_CONV and not torch.equal(state[k], saved[k])]
    assert changed == []
    model.eval()
    with torch.inference_mode():
        out = model(torch.rand(1, 4, 64, 64))
    assert out.shape == (1, 1, 64, 64) and torch.isfinite(out).all()


def test_rgb_input_with_a_zero_band_gives_the_rgb_model_output(rgb_weights):
    rgb = U2Net("lite", in_channels=3, pretrained=str(rgb_weights)).eval()
    wide = U2Net("lite", in_channels=4, pretrained=str(rgb_weights)).eval()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    x4 = torch.cat((x, torch.zeros(2, 1, 64, 64)), dim=1)
    with torch.inference_mode():
        first_rgb, first_wide = rgb.encoders[0].conv_in.conv(x), wide.encoders[0].conv_in.conv(x4)
        assert torch.allclose(first_wide, first_rgb, atol=1e-6)
        assert torch.allclose(wide(x4), rgb(x), atol=1e-6)
        # ...and the 4th band is used: a non-zero band changes the output
        assert not torch.allclose(wide(x4 + torch.tensor([0, 0, 0, 1.0])[:, None, None]), rgb(x))


@pytest.mark.parametrize(
    "save", [save_ours, save_official, save_onnx], ids=["ours", "official", "onnx"]
)
def test_every_format_widens_and_says_so(save: Callable[[Path], None], tmp_path, caplog):
    path = tmp_path / ("rgb.onnx" if save is save_onnx else "rgb.pth")
    save(path)
    caplog.set_level(logging.INFO, logger="u2seg")
    wide = U2Net("lite", in_channels=5, pretrained=str(path), freeze_bn_stats=True).eval()
    rgb = U2Net("lite", in_channels=3, pretrained=str(path), freeze_bn_stats=True).eval()
    message = "first conv widened from 3 to 5 input channels (extra channels: the mean of the RGB"
    assert message in wide.pretrained_from and message in wide.summary()
    assert message in caplog.text and str(path) in caplog.text
    assert "widened" not in rgb.pretrained_from
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        assert torch.allclose(wide(torch.cat((x, torch.zeros(1, 2, 64, 64)), dim=1)), rgb(x))


def test_four_channel_weights_do_not_fit_a_three_channel_model(tmp_path):
    path = tmp_path / "rgbn.pth"
    torch.save(U2Net("lite", in_channels=4).state_dict(), path)
    message = r"rgbn\.pth holds a U2Net with 4 input channels, not 3: set arch\.args\.in_channels"
    with pytest.raises(ValueError, match=message):
        U2Net("lite", in_channels=3, pretrained=str(path))
    with pytest.raises(ValueError, match=r"4 input channels, not 6"):  # only 3 widens
        U2Net("lite", in_channels=6, pretrained=str(path))


@pytest.mark.parametrize("in_channels", [1, 2])
def test_fewer_channels_than_rgb_weights_are_refused(rgb_weights, in_channels):
    message = rf"rgb\.pth holds a U2Net with 3 input channels, not {in_channels}: set arch\.args"
    with pytest.raises(ValueError, match=message):
        U2Net("lite", in_channels=in_channels, pretrained=str(rgb_weights))


def test_widening_refuses_weights_without_an_rgb_first_conv(rgb_weights):
    weights = read_pretrained(rgb_weights)
    four = weights._replace(state_dict=weights.state_dict | {FIRST_CONV: torch.zeros(64, 4, 3, 3)})
    with pytest.raises(ValueError, match=r"rgb\.pth: cannot widen .*found: shape \[64, 4, 3, 3\]"):
        widen_first_conv(four, 5)
    assert widen_first_conv(weights, 4).adapted.startswith(WIDENED)


def test_a_trained_four_channel_model_loads_with_its_own_channels(rgb_weights, tmp_path):
    trained = U2Net("lite", in_channels=4, pretrained=str(rgb_weights))
    with torch.no_grad():
        trained.encoders[0].conv_in.conv.weight[:, 3].add_(0.5)  # as fine-tuning would
    path = tmp_path / "rgbn.pth"
    torch.save(trained.state_dict(), path)
    loaded = load_pretrained(path)
    assert loaded.encoders[0].conv_in.conv.in_channels == 4
    assert read_pretrained(path).adapted == ""
    assert torch.equal(loaded.state_dict()[FIRST_CONV], trained.state_dict()[FIRST_CONV])
