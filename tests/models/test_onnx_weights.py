"""ONNX import: U2Net graphs (BatchNorm folded, initializers unnamed) loaded by load_pretrained."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import train
from models import U2Net, load_pretrained
from tests.helpers import lite_with_batchnorm_statistics, tiny_config
from tests.models.test_export_onnx import load_tool

onnx = pytest.importorskip("onnx", reason="onnx (requirements-dev.txt) reads and writes ONNX")


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, Path]:
    """A lite U2Net with non-default BatchNorm statistics and affine terms, and its ONNX export
    (64x64; the exporter folds every BatchNorm into its convolution)."""
    model = lite_with_batchnorm_statistics()
    model.eval()
    path = tmp_path_factory.mktemp("onnx") / "lite.onnx"
    load_tool().export(model, path, torch.zeros(1, 3, 64, 64), dynamic=False)
    return model, path


def test_our_export_loads_back_to_the_same_outputs(exported):
    model, path = exported
    imported = load_pretrained(path)
    assert imported.variant == "lite" and not imported.training
    for size in ((64, 64), (75, 90)):  # any size: the imported model is ours
        x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(1))
        with torch.inference_mode():
            assert float((imported(x) - model(x)).abs().max()) < 1e-5


def test_folded_batchnorm_is_an_exact_identity_but_for_its_shift(exported):
    _, path = exported
    imported = load_pretrained(path)
    bn = imported.encoders[0].conv_in.bn
    x = torch.randn(1, bn.num_features, 5, 5) * 100
    with torch.inference_mode():
        assert torch.equal(bn(x), x + bn.bias[:, None, None])


def test_a_variant_asked_for_must_be_the_one_in_the_file(exported):
    _, path = exported
    with pytest.raises(ValueError, match=r"holds U2Net variant 'lite'.*not 'full'"):
        load_pretrained(path, variant="full")


def test_a_truncated_file_is_refused_with_its_name(exported, tmp_path):
    _, path = exported
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match=r"cut\.onnx cannot be read as an ONNX model"):
        load_pretrained(cut)


def test_another_architecture_is_refused_with_what_it_holds(tmp_path):
    path = tmp_path / "other.onnx"
    other = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 1, 1)).eval()
    load_tool().export(other, path, torch.zeros(1, 3, 32, 32), dynamic=False)
    message = r"other\.onnx is an ONNX model but not a U2Net: 3 nodes \(2 Conv, 1 Relu\)"
    with pytest.raises(ValueError, match=message):
        load_pretrained(path)


def test_a_convolution_with_other_attributes_is_named(exported, tmp_path):
    _, path = exported
    graph = onnx.load(str(path))
    convs = [node for node in graph.graph.node if node.op_type == "Conv"]
    target = convs[7]  # En1's last encoder: dilation 2 in U2Net
    for attribute in target.attribute:
        if attribute.name == "dilations":
            attribute.ints[:] = [1, 1]
    changed = tmp_path / "changed.onnx"
    onnx.save(graph, str(changed))
    with pytest.raises(ValueError, match=rf"Conv node '{target.name}'.*does not match.*"):
        load_pretrained(changed)


def test_a_u2net_onnx_file_is_recognised_without_its_suffix(exported, tmp_path):
    model, path = exported
    renamed = tmp_path / "weights.bin"
    renamed.write_bytes(path.read_bytes())
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        assert np.allclose(load_pretrained(renamed)(x), model(x), atol=1e-5)


def test_training_from_onnx_weights_needs_frozen_batchnorm_statistics(exported):
    _, path = exported
    with pytest.raises(ValueError, match=r"BatchNorm layers are folded.*freeze_bn_stats true"):
        U2Net("lite", pretrained=str(path))
    model = U2Net("lite", pretrained=str(path), freeze_bn_stats=True).train()
    assert model.training and not any(
        m.training for m in model.modules() if isinstance(m, nn.BatchNorm2d)
    )
    x = torch.randn(2, 3, 64, 64)
    model(x)  # a training forward leaves the statistics as they were
    bn = model.encoders[0].conv_in.bn
    assert torch.equal(bn.running_mean, torch.zeros_like(bn.running_mean))


@pytest.mark.parametrize("normalisation", ["imagenet", "official"])
def test_training_logs_the_pretrained_file_and_warns_of_another_normalisation(
    exported, tmp_path, normalisation
):
    _, path = exported  # no metadata: official, like rembg's files
    options = [f"arch.args.pretrained={path}", "arch.args.freeze_bn_stats=true"]
    options += ["trainer.epochs=1", "trainer.tensorboard=false", f"normalisation={normalisation}"]
    config = tiny_config(tmp_path)
    run = train.main(["-c", str(config), "-d", "cpu", "--opt", *options])
    log = (run / "train.log").read_text()
    assert f"started from {path} (ONNX graph" in log
    warned = "arch.args.pretrained expects 'official' normalisation" in log
    assert warned == (normalisation == "imagenet"), log
