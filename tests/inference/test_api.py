"""The Python API (u2seg.Predictor) as the README shows it, and maps that stay byte-identical."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from models import U2Net
from tests.helpers import ROOT
from u2seg import Predictor

# sha256 of the maps inference.py (--no-fuse: the model as trained) wrote for
# golden_checkpoint() and golden_images() at commit c646538 (before the utils/ regrouping), on
# this project's CI machine kind (x86-64 CPU, torch 2.13). A float change anywhere in the
# pipeline (reading, resizing, normalisation, the forward, flip and scale averaging, window
# blending, quantisation, PNG writing) changes them.
GOLDEN = {
    "single": {
        "img0.png": "ee78cee7e2c74ff420dcf716efa468418e4ce6bb580d5f1e50983d1086c7c313",
        "img1.png": "04b7e5a07a756e9e2ba60abb82123dca6ec8886dfc97efaa2b0817f15db3c688",
        "img2.png": "5e1d1e2d9685b0f24c9dd1278f0f187e3836c95d52d7d863005c4c1ca265f262",
    },
    "multiscale_flip": {
        "img0.png": "debd715b9d37377646d1e2717df2bb5e3f497876f16067c6b78cef7a2648b475",
        "img1.png": "ee1071ca736e536c9d9ccb11d105d39c9b58957ed0485791344610421e998c32",
        "img2.png": "b1e6d4653eeeaad15daf9734b1042729dc1fee33ea1f41fec5645aa6b9976a9d",
    },
    "sliding": {
        "img0.png": "a8dd2c78351ddb64e03bed0f111df445be7ff1a91c39ba22bc9bceb13bb9f9af",
        "img1.png": "9fd5729e82e0de2af58127ab586730ca7d6c94fdf7be1ae89b7a0dfb8459a06e",
        "img2.png": "589f0458470a2b802202b982a42aa61f2527f163d66560c88b620846548e633e",
    },
}
MODES = {
    "single": ["--mode", "single"],
    "multiscale_flip": ["--mode", "multiscale", "--scales", "0.75", "1.25", "--flip"],
    "sliding": ["--mode", "sliding", "--window", "64", "--overlap", "0.5", "--flip", "--post-norm"],
}


def golden_checkpoint(path: Path) -> Path:
    """A U2Net-lite checkpoint whose weights come from a seeded NumPy generator (independent of
    torch's initialisation), with moderate outputs (side heads and fusion scaled down) and a
    stored config whose validation size is 96."""
    rng = np.random.default_rng(7)
    with torch.device("meta"):
        model = U2Net("lite")
    state = {}
    for key, value in model.state_dict().items():
        shape = tuple(value.shape)
        if key.endswith("num_batches_tracked"):
            array = np.zeros(shape, np.int64)
        elif key.endswith("running_var"):
            array = rng.uniform(0.5, 1.5, shape).astype(np.float32)
        elif key.endswith(("running_mean", "bn.bias")):
            array = rng.normal(0, 0.1, shape).astype(np.float32)
        elif key.endswith("bn.weight"):
            array = rng.uniform(0.8, 1.2, shape).astype(np.float32)
        elif key.startswith(("side_heads", "fusion")):
            array = rng.normal(0, 0.02, shape).astype(np.float32)
        elif value.dim() == 4:
            fan_in = shape[1] * shape[2] * shape[3]
            array = rng.normal(0, np.sqrt(2 / fan_in), shape).astype(np.float32)
        else:
            array = rng.normal(0, 0.1, shape).astype(np.float32)
        state[key] = torch.from_numpy(array)
    config = {"val_loader": {"args": {"base_size": 96}}}
    torch.save({"arch": "U2Net", "epoch": 1, "state_dict": state, "config": config}, path)
    return path


def golden_images(folder: Path) -> Path:
    """Three seeded smooth-noise PNG photos with a disc, of sizes 120x90, 100x128, 260x200."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(3)
    for i, (h, w) in enumerate([(90, 120), (128, 100), (200, 260)]):
        coarse = rng.uniform(0, 255, (h // 8 + 1, w // 8 + 1, 3)).astype(np.float32)
        image = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
        colour = tuple(float(c) for c in rng.uniform(0, 255, 3))
        cv2.circle(image, (w // 2, h // 2), min(h, w) // 4, colour, -1)
        cv2.imwrite(str(folder / f"img{i}.png"), np.clip(image, 0, 255).astype(np.uint8))
    return folder


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*"))}


@pytest.mark.parametrize("mode", sorted(MODES))
def test_inference_maps_are_byte_identical_to_the_recorded_ones(mode, tmp_path):
    checkpoint = golden_checkpoint(tmp_path / "model.pth")
    images = golden_images(tmp_path / "images")
    command = [sys.executable, "inference.py", "-m", str(checkpoint), "-i", str(images)]
    command += ["-o", str(tmp_path / "out"), "--device", "cpu", "--no-fuse", *MODES[mode]]
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True)
    assert digests(tmp_path / "out" / "maps") == GOLDEN[mode]


def readme_snippet() -> str:
    """The Python block under the README's "Python API" heading."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Python API") :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_python_api_snippet_runs_and_matches_inference_py(tmp_path, monkeypatch):
    golden_checkpoint(tmp_path / "best_model.pth")
    golden_images(tmp_path / "images")
    for name, target in (("photo.jpg", "img0.png"), ("a.jpg", "img1.png"), ("b.jpg", "img2.png")):
        cv2.imwrite(str(tmp_path / name), cv2.imread(str(tmp_path / "images" / target)))
    monkeypatch.chdir(tmp_path)
    names: dict = {}
    exec(readme_snippet(), names)  # exactly the README's lines

    probability = names["probability"]
    photo = cv2.imread("photo.jpg")
    assert probability.dtype == np.float32 and probability.shape == photo.shape[:2]
    assert probability.min() >= 0 and probability.max() <= 1
    masks = names["masks"]
    assert [m.shape for m in masks] == [cv2.imread(n).shape[:2] for n in ("a.jpg", "b.jpg")]

    command = [sys.executable, str(ROOT / "inference.py"), "-m", "best_model.pth"]
    command += ["-i", "photo.jpg", "-o", "out", "--device", "cpu"]
    subprocess.run(command, check=True, capture_output=True)
    written = cv2.imread("out/maps/photo.png", cv2.IMREAD_GRAYSCALE)
    assert np.array_equal(written, np.rint(probability.astype(np.float64) * 255))


def test_predict_takes_arrays_and_paths_alike(tmp_path):
    predictor = Predictor.from_checkpoint(golden_checkpoint(tmp_path / "m.pth"), device="cpu")
    assert predictor.options.size == 96 and predictor.options.window == 96  # from the checkpoint
    path = golden_images(tmp_path / "images") / "img1.png"
    rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    assert np.array_equal(predictor.predict(rgb), predictor.predict(path))
    with pytest.raises(ValueError, match=r"HxWx3 uint8 RGB image"):
        predictor.predict(rgb[:, :, 0])
    with pytest.raises(TypeError, match=r"predict_batch takes a list"):
        predictor.predict([rgb])
    with pytest.raises(ValueError, match=r"shape \(0, 5, 3\)"):
        predictor.predict(np.zeros((0, 5, 3), np.uint8))
    with pytest.raises(OSError, match=r"missing\.png"):
        predictor.predict(tmp_path / "missing.png")


def test_the_api_defaults_are_the_command_lines(tmp_path):
    import inference

    checkpoint = golden_checkpoint(tmp_path / "m.pth")
    args = inference.parse_args(["-m", str(checkpoint), "-i", "in", "-o", "out"])
    predictor = Predictor.from_checkpoint(checkpoint, device="cpu", mode="multiscale")
    assert predictor.options.scales == tuple(args.scales) == (0.75, 1.0, 1.25)
    for name in ("overlap", "blend", "scale", "flip", "post_norm"):
        assert getattr(predictor.options, name) == getattr(args, name), name
