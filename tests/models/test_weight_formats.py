"""Pretrained weights: official U2NET/U2NETP files, the config-driven port and our checkpoints load
exactly (checked against a long-hand forward of the official layout), or fail clearly."""

from __future__ import annotations

import argparse
import gzip
import json
import re
import zipfile
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import train
from models import U2Net, load_pretrained
from models.weight_formats import read_pretrained
from tests.helpers import tiny_config
from train import registries
from utils import config as cfg
from utils.io.checkpoint import load_checkpoint

# The official model (xuebinqin/U-2-Net, model/u2net.py): stage -> (RSU height, 0 for RSU-4F,
# in, mid, out), and the input channels of side1..side6.
OFFICIAL = {
    "full": {
        "stage1": (7, 3, 32, 64),
        "stage2": (6, 64, 32, 128),
        "stage3": (5, 128, 64, 256),
        "stage4": (4, 256, 128, 512),
        "stage5": (0, 512, 256, 512),
        "stage6": (0, 512, 256, 512),
        "stage5d": (0, 1024, 256, 512),
        "stage4d": (4, 1024, 128, 256),
        "stage3d": (5, 512, 64, 128),
        "stage2d": (6, 256, 32, 64),
        "stage1d": (7, 128, 16, 64),
    },
    "lite": {
        "stage1": (7, 3, 16, 64),
        "stage2": (6, 64, 16, 64),
        "stage3": (5, 64, 16, 64),
        "stage4": (4, 64, 16, 64),
        "stage5": (0, 64, 16, 64),
        "stage6": (0, 64, 16, 64),
        "stage5d": (0, 128, 16, 64),
        "stage4d": (4, 128, 16, 64),
        "stage3d": (5, 128, 16, 64),
        "stage2d": (6, 128, 16, 64),
        "stage1d": (7, 128, 16, 64),
    },
}
SIDES = {"full": (64, 64, 128, 256, 512, 512), "lite": (64,) * 6}
SIZES = [(320, 320), (301, 257)]
TOLERANCE = 1e-5

REGISTRIES = registries()


def rebnconvs(height: int, in_ch: int, mid: int, out: int) -> list[tuple[str, int, int, int]]:
    """The REBNCONVs of an official RSU block: (name, in, out, dilation)."""
    if height == 0:  # RSU4F
        return [
            ("rebnconvin", in_ch, out, 1),
            ("rebnconv1", out, mid, 1),
            ("rebnconv2", mid, mid, 2),
            ("rebnconv3", mid, mid, 4),
            ("rebnconv4", mid, mid, 8),
            ("rebnconv3d", 2 * mid, mid, 4),
            ("rebnconv2d", 2 * mid, mid, 2),
            ("rebnconv1d", 2 * mid, out, 1),
        ]
    convs = [("rebnconvin", in_ch, out, 1), ("rebnconv1", out, mid, 1)]
    convs += [(f"rebnconv{k}", mid, mid, 1) for k in range(2, height)]
    convs += [(f"rebnconv{height}", mid, mid, 2)]
    convs += [(f"rebnconv{k}d", 2 * mid, mid, 1) for k in range(height - 1, 1, -1)]
    return [*convs, ("rebnconv1d", 2 * mid, out, 1)]


def official_state_dict(variant: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random official-format weights, with conv biases and BN statistics far from the defaults."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape: int, scale: float = 1.0, shift: float = 0.0) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * scale + shift

    sd: dict[str, torch.Tensor] = {}
    for stage, spec in OFFICIAL[variant].items():
        for name, cin, cout, _ in rebnconvs(*spec):
            p = f"{stage}.{name}"
            sd[f"{p}.conv_s1.weight"] = rand(cout, cin, 3, 3, scale=(2 / (9 * cin)) ** 0.5)
            sd[f"{p}.conv_s1.bias"] = rand(cout, scale=0.3)
            sd[f"{p}.bn_s1.weight"] = rand(cout, scale=0.1, shift=1.0)
            sd[f"{p}.bn_s1.bias"] = rand(cout, scale=0.1)
            sd[f"{p}.bn_s1.running_mean"] = rand(cout, scale=0.3)
            sd[f"{p}.bn_s1.running_var"] = rand(cout, scale=0.2, shift=1.5).abs()
            sd[f"{p}.bn_s1.num_batches_tracked"] = torch.tensor(1000)
    for i, ch in enumerate(SIDES[variant], start=1):
        sd[f"side{i}.weight"] = rand(1, ch, 3, 3, scale=(1 / (9 * ch)) ** 0.5)
        sd[f"side{i}.bias"] = rand(1, scale=0.1)
    sd["outconv.weight"] = rand(1, 6, 1, 1, scale=0.4)
    sd["outconv.bias"] = rand(1, scale=0.1)
    return sd


def official_forward(sd: dict[str, torch.Tensor], variant: str, x: torch.Tensor) -> torch.Tensor:
    """The official U2NET / U2NETP forward, long-hand from the official weights: sigmoid(d0)."""

    def rebnconv(p: str, h: torch.Tensor, dirate: int) -> torch.Tensor:
        h = F.conv2d(h, sd[f"{p}.conv_s1.weight"], sd[f"{p}.conv_s1.bias"], 1, dirate, dirate)
        h = F.batch_norm(
            h,
            sd[f"{p}.bn_s1.running_mean"],
            sd[f"{p}.bn_s1.running_var"],
            sd[f"{p}.bn_s1.weight"],
            sd[f"{p}.bn_s1.bias"],
            training=False,
            eps=1e-5,
        )
        return F.relu(h)

    def up(src: torch.Tensor, tar: torch.Tensor) -> torch.Tensor:
        return F.interpolate(src, size=tar.shape[2:], mode="bilinear", align_corners=False)

    def pool(h: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(h, 2, stride=2, ceil_mode=True)

    def rsu(stage: str, h: torch.Tensor) -> torch.Tensor:
        height = OFFICIAL[variant][stage][0]
        hxin = rebnconv(f"{stage}.rebnconvin", h, 1)
        if height == 0:  # RSU4F
            hx1 = rebnconv(f"{stage}.rebnconv1", hxin, 1)
            hx2 = rebnconv(f"{stage}.rebnconv2", hx1, 2)
            hx3 = rebnconv(f"{stage}.rebnconv3", hx2, 4)
            hx4 = rebnconv(f"{stage}.rebnconv4", hx3, 8)
            hx3d = rebnconv(f"{stage}.rebnconv3d", torch.cat((hx4, hx3), 1), 4)
            hx2d = rebnconv(f"{stage}.rebnconv2d", torch.cat((hx3d, hx2), 1), 2)
            return rebnconv(f"{stage}.rebnconv1d", torch.cat((hx2d, hx1), 1), 1) + hxin
        hx = [rebnconv(f"{stage}.rebnconv1", hxin, 1)]  # hx1 .. hx{height-1}
        for k in range(2, height):
            hx.append(rebnconv(f"{stage}.rebnconv{k}", pool(hx[-1]), 1))
        bottom = rebnconv(f"{stage}.rebnconv{height}", hx[-1], 2)
        hd = rebnconv(f"{stage}.rebnconv{height - 1}d", torch.cat((bottom, hx[-1]), 1), 1)
        for k in range(height - 2, 0, -1):
            hd = rebnconv(f"{stage}.rebnconv{k}d", torch.cat((up(hd, hx[k - 1]), hx[k - 1]), 1), 1)
        return hd + hxin

    hx1 = rsu("stage1", x)
    hx2 = rsu("stage2", pool(hx1))
    hx3 = rsu("stage3", pool(hx2))
    hx4 = rsu("stage4", pool(hx3))
    hx5 = rsu("stage5", pool(hx4))
    hx6 = rsu("stage6", pool(hx5))
    hx5d = rsu("stage5d", torch.cat((up(hx6, hx5), hx5), 1))
    hx4d = rsu("stage4d", torch.cat((up(hx5d, hx4), hx4), 1))
    hx3d = rsu("stage3d", torch.cat((up(hx4d, hx3), hx3), 1))
    hx2d = rsu("stage2d", torch.cat((up(hx3d, hx2), hx2), 1))
    hx1d = rsu("stage1d", torch.cat((up(hx2d, hx1), hx1), 1))

    def side(i: int, h: torch.Tensor) -> torch.Tensor:
        return up(F.conv2d(h, sd[f"side{i}.weight"], sd[f"side{i}.bias"], padding=1), x)

    d = [side(i, h) for i, h in enumerate((hx1d, hx2d, hx3d, hx4d, hx5d, hx6), start=1)]
    return torch.sigmoid(F.conv2d(torch.cat(d, 1), sd["outconv.weight"], sd["outconv.bias"]))


def without_conv_biases(official: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same function with bias-free convs: each conv bias moved into its BN running mean."""
    out = {}
    for key, value in official.items():
        if key.endswith("conv_s1.bias"):
            continue
        if key.endswith("bn_s1.running_mean"):
            value = value - official[key.replace("bn_s1.running_mean", "conv_s1.bias")]
        out[key] = value
    return out


def port_state_dict(official: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same weights in the config-driven port's naming (``encode_modules``, ``conv_in``,
    ``side_modules``, ``out_conv``...)."""
    encoders = [f"stage{n}" for n in range(1, 7)]
    decoders = [f"stage{n}d" for n in range(5, 0, -1)]
    blocks = {s: f"encode_modules.{i}" for i, s in enumerate(encoders)}
    blocks |= {s: f"decode_modules.{i}" for i, s in enumerate(decoders)}
    heads = {f"side{n}": f"side_modules.{6 - n}" for n in range(1, 7)}
    port = {}
    for key, value in official.items():
        first, rest = key.split(".", 1)
        if first == "outconv":
            port[f"out_conv.{rest}"] = value
        elif first in heads:
            port[f"{heads[first]}.{rest}"] = value
        else:
            height = OFFICIAL["full"][first][0] or 4
            conv, layer, param = rest.split(".")
            if conv == "rebnconvin":
                inner = "conv_in"
            elif conv.endswith("d"):
                inner = f"decode_modules.{height - 1 - int(conv[8:-1])}"
            else:
                inner = f"encode_modules.{int(conv[8:]) - 1}"
            port[f"{blocks[first]}.{inner}.{layer[:-3]}.{param}"] = value
    return port


@pytest.fixture(scope="module")
def official() -> dict[str, dict[str, torch.Tensor]]:
    return {variant: official_state_dict(variant) for variant in OFFICIAL}


@pytest.fixture(scope="module")
def reference(official) -> Callable[[str, tuple[int, int]], tuple[torch.Tensor, torch.Tensor]]:
    """``reference(variant, size)``: an input and the official forward of ``official[variant]``
    on it (computed once per module)."""
    cache: dict[tuple[str, tuple[int, int]], tuple[torch.Tensor, torch.Tensor]] = {}

    def get(variant: str, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        if (variant, size) not in cache:
            x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(sum(size)))
            with torch.no_grad():
                expected = official_forward(official[variant], variant, x)
            assert expected.shape == (1, 1, *size)
            spread = ((expected > 0.01) & (expected < 0.99)).float().mean()
            assert spread > 0.5 and expected.std() > 0.02  # not saturated: the test means something
            cache[variant, size] = x, expected
        return cache[variant, size]

    return get


def assert_matches_official(model: U2Net, reference: Callable, variant: str) -> None:
    assert not model.training and model.variant == variant
    for size in SIZES:
        x, expected = reference(variant, size)
        with torch.no_grad():
            got = model(x)
        assert got.shape == expected.shape
        assert (got - expected).abs().max().item() <= TOLERANCE, size


def assert_same_weights(model: U2Net, expected: U2Net) -> None:
    got, want = model.state_dict(), expected.state_dict()
    assert got.keys() == want.keys()
    for key, value in want.items():
        assert torch.equal(got[key], value), key


@pytest.mark.parametrize("variant", ["full", "lite"])
def test_official_weights_match_the_official_forward(official, reference, variant, tmp_path):
    path = tmp_path / ("u2net.pth" if variant == "full" else "u2netp.pth")
    torch.save(official[variant], path)
    assert_matches_official(load_pretrained(path), reference, variant)


@pytest.mark.parametrize("bias", [True, False], ids=["conv-bias", "bias-free"])
def test_port_weights_match_the_official_forward(official, reference, bias, tmp_path):
    sd = official["lite"] if bias else without_conv_biases(official["lite"])
    path = tmp_path / "port.pth"
    torch.save(port_state_dict(sd), path)
    assert_matches_official(load_pretrained(path), reference, "lite")


def test_port_training_checkpoint_with_ddp_prefix_loads_the_same_full_weights(official, tmp_path):
    """The port's training script saves {"model", "optimizer", ..., "args": Namespace}."""
    port = {f"module.{k}": v for k, v in port_state_dict(official["full"]).items()}
    path = tmp_path / "model_best.pth"
    args = argparse.Namespace(lr=0.001, data_path="./DUTS", amp=True, device="cuda")
    torch.save({"model": port, "optimizer": {}, "epoch": 359, "args": args}, path)
    official_path = tmp_path / "u2net.pth"
    torch.save(official["full"], official_path)
    got = read_pretrained(path, variant="full")
    expected = read_pretrained(official_path)
    assert (got.source, expected.source) == ("config-driven port", "official U2NET/U2NETP")
    assert got.state_dict.keys() == expected.state_dict.keys()
    for key, value in expected.state_dict.items():
        assert torch.equal(got.state_dict[key], value), key


def test_ddp_prefixed_official_file_and_our_checkpoint_load(official, tmp_path):
    plain, prefixed = tmp_path / "u2netp.pth", tmp_path / "ddp.pth"
    torch.save(official["lite"], plain)
    torch.save({f"module.{k}": v for k, v in official["lite"].items()}, prefixed)
    model = load_pretrained(plain)
    assert_same_weights(load_pretrained(prefixed), model)

    ours = tmp_path / "checkpoint-epoch1.pth"
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    torch.save({"arch": "U2Net", "epoch": 1, "state_dict": state, "config": {}}, ours)
    again = load_pretrained(ours, variant="lite")
    assert again.variant == "lite" and not again.training
    assert_same_weights(again, model)


def test_variant_mismatch_is_named(official, tmp_path):
    path = tmp_path / "u2netp.pth"
    torch.save(official["lite"], path)
    with pytest.raises(ValueError, match=r"holds U2Net variant 'lite'.*not 'full'"):
        load_pretrained(path, variant="full")
    assert_same_weights(U2Net("lite", pretrained=str(path)), load_pretrained(path))


def test_unrelated_state_dict_is_refused_with_its_keys(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(8, 3, 7, 7), "fc.bias": torch.zeros(10)}, path)
    with pytest.raises(ValueError) as err:
        load_pretrained(path)
    message = str(err.value)
    assert "unrecognised U2Net state dict format" in message and str(path) in message
    assert "first unexpected keys: conv1.weight, fc.bias" in message.lower()
    assert "first missing keys: encoders.0.conv_in.conv.weight" in message


def test_recognised_format_with_missing_keys_lists_them(official, tmp_path):
    sd = dict(official["lite"])
    del sd["side3.weight"]
    sd["stage1.extra.weight"] = torch.zeros(1)
    path = tmp_path / "broken.pth"
    torch.save(sd, path)
    with pytest.raises(ValueError, match=r"official U2NET/U2NETP state dict does not fit") as err:
        load_pretrained(path)
    assert "stage1.extra.weight" in str(err.value) and "side_heads.3.weight" in str(err.value)


def test_pickle_that_is_not_weights_only_is_refused(tmp_path):
    path = tmp_path / "whole_model.pth"
    torch.save(torch.nn.Conv2d(3, 1, 3), path)  # a pickled module, not a state dict
    with pytest.raises(ValueError, match=r"not a weights-only file.*arbitrary unpickling") as err:
        load_pretrained(path)
    assert "torch.nn.modules.conv.Conv2d" in str(err.value)


def test_fine_tuning_from_official_weights_trains_one_epoch(official, tmp_path):
    weights = tmp_path / "u2netp.pth"
    torch.save(official["lite"], weights)
    config_path = tiny_config(tmp_path / "run", epochs=1)
    config = json.loads(config_path.read_text())
    config["arch"]["args"]["pretrained"] = str(weights)
    config["trainer"] |= {"tensorboard": False, "vis_samples": 0}
    config_path.write_text(json.dumps(config))
    start = load_pretrained(weights).state_dict()
    built = cfg.build(cfg.validate_config(config, REGISTRIES), "arch", REGISTRIES["arch"])
    assert all(torch.equal(v, start[k]) for k, v in built.state_dict().items())

    run = train.main(["-c", str(config_path), "-d", "cpu"])
    trained = load_checkpoint(run / "checkpoint-epoch1.pth")
    assert trained["config"]["arch"]["args"]["pretrained"] == str(weights)
    key = "encoders.0.conv_in.conv.weight"  # two small AdamW steps away from the start
    assert 0 < (trained["state_dict"][key] - start[key]).abs().max() < 0.02

    weights.unlink()  # a resumed run takes its weights from the checkpoint alone
    train.main(["-r", str(run / "checkpoint-epoch1.pth"), "-d", "cpu",
                "--opt", "trainer.epochs=2"])  # fmt: skip
    assert (run / "checkpoint-epoch2.pth").exists()


def test_pretrained_for_another_variant_is_a_config_error(official, tmp_path):
    weights = tmp_path / "u2netp.pth"
    torch.save(official["lite"], weights)
    config = json.loads(tiny_config(tmp_path).read_text())
    config["arch"]["args"] = {"variant": "full", "pretrained": str(weights)}
    with pytest.raises(cfg.ConfigError, match=r"arch \(U2Net\):.*variant 'lite'"):
        cfg.build(cfg.validate_config(config, REGISTRIES), "arch", REGISTRIES["arch"])


@pytest.mark.parametrize(
    "content", [b"this is not an image\n", b'{"arch": {"type": "U2Net"}}\n', b"\x89PNG\r\n\x1a\n"]
)
def test_a_file_that_is_not_from_torch_save_is_named_without_unsafe_advice(tmp_path, content):
    path = tmp_path / "mixed_up.pth"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=r"mixed_up\.pth is not a (readable )?PyTorch") as err:
        load_pretrained(path)
    assert "weights_only=False" not in str(err.value)


def test_missing_file_is_named(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match=r"nothing\.pth"):
        load_pretrained(tmp_path / "nothing.pth")


def torch_zip_cut_short(path: Path) -> None:
    torch.save({"w": torch.randn(64, 64)}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def legacy_torch_cut_short(path: Path) -> None:
    torch.save({"w": torch.randn(64, 64)}, path, _use_new_zipfile_serialization=False)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def zip_of_weights(path: Path) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("u2net.pth", b"\x80\x02")


def safetensors(path: Path) -> None:
    header = b'{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'
    path.write_bytes(len(header).to_bytes(8, "little") + header + bytes(4))


def png(path: Path) -> None:
    path.write_bytes(cv2.imencode(".png", np.zeros((4, 4, 3), np.uint8))[1].tobytes())


def jpeg(path: Path) -> None:
    path.write_bytes(cv2.imencode(".jpg", np.zeros((4, 4, 3), np.uint8))[1].tobytes())


def gzipped(path: Path) -> None:
    path.write_bytes(gzip.compress(b"\x80\x02 weights"))


def content(data: bytes) -> Callable[[Path], None]:
    return lambda path: path.write_bytes(data)


HTML = b"\n<!DOCTYPE html>\n<html lang='en'><head><title>u2net.pth - GitHub</title>"
LFS = b"version https://git-lfs.github.com/spec/v1\noid sha256:4f6a\nsize 176300000\n"
NOT_TORCH_FILES: dict[str, tuple[str, Callable[[Path], None], str]] = {
    # format: (file name, writer, message after "NAME is not a PyTorch weights file ...: ")
    "html": ("u2net.pth", content(HTML), r"it is a web page \(HTML\).*download the raw file"),
    "png": ("u2net.pth", png, r"it is a PNG image, not weights.*did you swap -m and -i\?"),
    "jpeg": ("u2net.pth", jpeg, r"it is a JPEG image, not weights.*did you swap -m and -i\?"),
    "empty": ("u2net.pth", content(b""), r"it is empty \(0 bytes\).*fetch the file again"),
    "random": (
        "u2net.pth",
        content(bytes(range(7, 256)) * 3),
        r"its first bytes \(07 08 09 0a.*no known format",
    ),
    "torch zip cut short": (
        "u2net.pth",
        torch_zip_cut_short,
        r"it is a PyTorch zip archive cut short",
    ),
    "zip": (
        "u2net.zip",
        zip_of_weights,
        r"it is a zip archive, but not a PyTorch one: .*\(u2net\.pth\).*unzip it",
    ),
    "json": ("u2net.pth", content(b'{"arch": {"type": "U2Net"}}\n'), r"it is JSON text"),
    "text": (
        "u2net.pth",
        content(b"not weights\n"),
        r"it is a text file \(first line: 'not weights'\)",
    ),
    "git lfs pointer": ("u2net.pth", content(LFS), r"it is a Git LFS pointer.*git lfs pull"),
    "safetensors": ("u2net.safetensors", safetensors, r"it is a safetensors file.*load_file"),
    "gzip": ("u2net.pth.gz", gzipped, r"it is a gzip-compressed file: decompress it"),
}


def write_not_torch_file(kind: str, folder: Path) -> tuple[Path, str]:
    """The file of format ``kind`` written in ``folder``, and the regex its message matches."""
    name, write, message = NOT_TORCH_FILES[kind]
    path = folder / name
    write(path)
    return path, re.escape(
        str(path)
    ) + r" is not a PyTorch weights file \(a torch\.save output\)( or an ONNX graph)?: " + message


@pytest.mark.parametrize("kind", NOT_TORCH_FILES)
def test_a_file_of_another_format_is_named_with_advice(kind, tmp_path):
    path, message = write_not_torch_file(kind, tmp_path)
    with pytest.raises(ValueError, match=message) as err:
        load_pretrained(path)
    assert "weights_only=False" not in str(err.value)


def test_a_legacy_torch_file_cut_short_is_named(tmp_path):
    path = tmp_path / "old.pth"
    legacy_torch_cut_short(path)
    with pytest.raises(ValueError, match=r"old\.pth is a PyTorch file cut short.*fetch"):
        load_pretrained(path)


def test_legacy_torch_files_still_load(official, tmp_path):
    legacy, current = tmp_path / "legacy.pth", tmp_path / "current.pth"
    torch.save(official["lite"], legacy, _use_new_zipfile_serialization=False)
    torch.save(official["lite"], current)
    assert_same_weights(load_pretrained(legacy), load_pretrained(current))


def test_a_folder_is_named(tmp_path):
    with pytest.raises(IsADirectoryError, match=r"is a folder, not a file"):
        load_pretrained(tmp_path)
