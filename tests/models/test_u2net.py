"""Tests for BaseModel and U2Net (both variants, small inputs, CPU)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from base.base_model import BaseModel
from models import U2Net
from models.u2net import RSU, RSU4F, ConvBNReLU

OFFICIAL_PARAMS = {"full": 44_009_869, "lite": 1_131_181}  # official U2NET / U2NETP
OUR_PARAMS = {"full": 43_995_469, "lite": 1_128_333}  # without the biases of convs before BN
SIZES = {"full": (65, 47), "lite": (97, 131)}  # neither a multiple of 32


@pytest.fixture(scope="module", params=["full", "lite"])
def model(request: pytest.FixtureRequest) -> U2Net:
    torch.manual_seed(0)
    return U2Net(request.param)


def _input(model: U2Net, batch: int = 1) -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(batch, 3, *SIZES[model.variant])


def test_training_returns_seven_logit_maps_of_input_size(model: U2Net) -> None:
    x = _input(model, batch=2)
    model.train()
    with torch.no_grad():
        outputs = model(x)
    assert isinstance(outputs, tuple) and len(outputs) == 7
    for out in outputs:
        assert out.shape == (2, 1, *x.shape[-2:])
        assert torch.isfinite(out).all()


def test_eval_returns_probability_map_of_input_size(model: U2Net) -> None:
    x = _input(model)
    model.eval()
    with torch.no_grad():
        out = model(x)
    assert isinstance(out, torch.Tensor)
    assert out.shape == (1, 1, *x.shape[-2:])
    assert out.min() >= 0 and out.max() <= 1


@pytest.mark.parametrize("size", [(64, 64), (33, 35), (97, 131), (301, 257)])
def test_lite_any_input_size(size: tuple[int, int]) -> None:
    model = U2Net("lite").eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, *size))
    assert out.shape == (1, 1, *size)


def test_parameter_counts(model: U2Net) -> None:
    bn_features = sum(m.num_features for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    assert model.num_parameters() == OUR_PARAMS[model.variant]
    assert model.num_parameters() + bn_features == OFFICIAL_PARAMS[model.variant]
    assert model.num_parameters(trainable_only=True) == OUR_PARAMS[model.variant]


def test_trainable_only_skips_frozen_parameters() -> None:
    model = U2Net("lite")
    model.fusion.requires_grad_(False)
    assert model.num_parameters(trainable_only=True) == OUR_PARAMS["lite"] - 7
    assert model.num_parameters() == OUR_PARAMS["lite"]


def test_structure(model: U2Net) -> None:
    assert [type(m) for m in model.encoders] == [RSU] * 4 + [RSU4F] * 2
    assert [type(m) for m in model.decoders] == [RSU4F] + [RSU] * 4
    assert [m.height for m in model.encoders[:4]] == [7, 6, 5, 4]
    assert [m.height for m in model.decoders[1:]] == [4, 5, 6, 7]
    side_in = {"full": [512, 512, 256, 128, 64, 64], "lite": [64] * 6}[model.variant]
    assert [h.in_channels for h in model.side_heads] == side_in  # En6, De5, ..., De1
    assert model.fusion.in_channels == 6 and model.fusion.kernel_size == (1, 1)
    assert all(m.bias is not None for m in [*model.side_heads, model.fusion])
    for cbr in model.modules():
        if isinstance(cbr, ConvBNReLU):
            assert cbr.conv.bias is None
            assert cbr.conv.padding == cbr.conv.dilation
    rsu7 = model.encoders[0]
    assert len(rsu7.encoders) == 7 and len(rsu7.decoders) == 6
    assert rsu7.encoders[-1].conv.dilation == (2, 2)
    rsu4f = model.encoders[5]
    assert [c.conv.dilation[0] for c in rsu4f.encoders] == [1, 2, 4, 8]
    assert [c.conv.dilation[0] for c in rsu4f.decoders] == [4, 2, 1]


def test_output_order_and_fusion() -> None:
    """Outputs are (fused, De1, ..., De5, En6) and the fusion sees the sides in that order."""
    model = U2Net("lite").train()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eval()  # deterministic normalisation, the rest stays in training mode
    raw: list[torch.Tensor] = []
    for head in model.side_heads:
        head.register_forward_hook(lambda _m, _i, out: raw.append(out))
    x = torch.randn(1, 3, 45, 77)
    with torch.no_grad():
        fused, *sides = model(x)
        expected = [
            F.interpolate(r, size=x.shape[-2:], mode="bilinear", align_corners=False)
            for r in reversed(raw)
        ]
        torch.testing.assert_close(sides, expected)
        assert raw[-1].shape[-2:] == x.shape[-2:]  # De1 is already at full resolution
        assert raw[0].shape[-2:] == (2, 3)  # En6: 45x77 pooled five times with ceil
        torch.testing.assert_close(fused, model.fusion(torch.cat(sides, dim=1)))


def test_eval_is_sigmoid_of_fused() -> None:
    model = U2Net("lite").eval()
    x = torch.randn(1, 3, 40, 50)
    with torch.no_grad():
        prob = model(x)
        model.train()
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eval()
        fused = model(x)[0]
    torch.testing.assert_close(prob, torch.sigmoid(fused))


def test_channels_last_matches_contiguous() -> None:
    torch.manual_seed(0)
    model = U2Net("lite").eval()
    x = torch.randn(2, 3, 97, 131)
    with torch.no_grad():
        ref = model(x)
        out_cl = model(x.to(memory_format=torch.channels_last))
        model.to(memory_format=torch.channels_last)
        out_both = model(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(out_cl, ref, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out_both, ref, atol=1e-5, rtol=1e-4)


def test_backward_reaches_every_parameter() -> None:
    model = U2Net("lite").train()
    outputs = model(torch.randn(2, 3, 40, 36))
    sum(o.mean() for o in outputs).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing


def test_in_channels() -> None:
    model = U2Net("lite", in_channels=1).eval()
    assert model.encoders[0].conv_in.conv.in_channels == 1
    with torch.no_grad():
        assert model(torch.randn(1, 1, 37, 41)).shape == (1, 1, 37, 41)


def test_unknown_variant() -> None:
    with pytest.raises(ValueError, match="'full', 'lite'") as info:
        U2Net("huge")
    assert "huge" in str(info.value)


def test_summary_and_str(model: U2Net) -> None:
    count = f"{OUR_PARAMS[model.variant]:,}"
    assert "U2Net" in model.summary() and count in model.summary()
    text = str(model)
    assert text.startswith(nn.Module.__repr__(model))
    assert text.endswith(model.summary())


def test_base_model_is_abstract() -> None:
    with pytest.raises(TypeError):
        BaseModel()
