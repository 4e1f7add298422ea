"""The official U2NETP weights (rembg's u2netp.onnx) imported, run, exported and fine-tuned."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from models import load_pretrained, read_pretrained
from tests.helpers import ROOT, official_u2netp, real_photos
from tests.models.test_export_onnx import load_tool

ort = pytest.importorskip("onnxruntime", reason="onnxruntime (requirements-dev.txt) runs ONNX")
MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])


def official_input(image: np.ndarray) -> np.ndarray:
    """1x3x320x320 float32: resized bilinearly, divided by its maximum, ImageNet mean/std."""
    x = cv2.resize(image, (320, 320), interpolation=cv2.INTER_LINEAR).astype(np.float64)
    x = (x / x.max() - MEAN) / STD
    return x.transpose(2, 0, 1)[None].astype(np.float32)


def run_onnx(path: Path, x: np.ndarray, optimise: bool = True) -> np.ndarray:
    """The first output of the ONNX file at ``path`` for ``x``, with onnxruntime's graph
    optimisations (its default) or without them."""
    options = ort.SessionOptions()
    if not optimise:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


@pytest.fixture(scope="module")
def inputs() -> dict[str, np.ndarray]:
    return {name: official_input(photo) for name, photo in real_photos().items()}


def test_imported_weights_equal_onnxruntime_on_real_photos(inputs):
    path = official_u2netp()
    weights = read_pretrained(path)
    assert (weights.variant, weights.normalisation) == ("lite", "official")
    model = load_pretrained(path)
    exact = copy.deepcopy(model).double()
    for name, x in inputs.items():
        with torch.inference_mode():
            ours = model(torch.from_numpy(x)).numpy()
            truth = exact(torch.from_numpy(x).double()).numpy()
        reference = run_onnx(path, x)
        unoptimised = run_onnx(path, x, optimise=False)
        # float32 convolutions summed in another order: onnxruntime differs from itself by
        # 4e-5 to 7e-5 on these photos between its optimisation levels, and both of its results
        # are 3e-5 to 6e-5 from the exact (float64) forward; ours is no farther from it
        own_spread = np.abs(reference - unoptimised).max()
        assert np.abs(ours - reference).max() <= max(1e-5, own_spread), name
        assert np.abs(ours - reference).max() < 2e-5, name
        error = np.abs(ours - truth).max()
        assert error <= max(np.abs(reference - truth).max(), np.abs(unoptimised - truth).max())


def conv_tensors(path: Path) -> list[bytes]:
    """The bytes of every Conv weight and bias of an ONNX file, sorted."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    stored = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    convs = [node for node in graph.node if node.op_type == "Conv"]
    return sorted(stored[name].tobytes() for node in convs for name in node.input[1:])


def test_round_trip_through_our_export_reproduces_the_original(inputs, tmp_path):
    path = official_u2netp()
    exported = tmp_path / "u2netp_again.onnx"
    load_tool().export(load_pretrained(path), exported, torch.zeros(1, 3, 320, 320), False)
    assert conv_tensors(exported) == conv_tensors(path)  # all 119 convolutions, bit for bit
    for name, x in inputs.items():
        reference = run_onnx(path, x)
        own_spread = np.abs(reference - run_onnx(path, x, optimise=False)).max()
        difference = np.abs(run_onnx(exported, x) - reference).max()
        assert difference <= max(1e-5, own_spread) and difference < 2e-5, name


def official_test_map(path: Path, image: np.ndarray) -> np.ndarray:
    """The official test script's map (u2net_test.py) in [0, 1]: scikit-image resize to 320
    (bilinear, mode constant, no anti-aliasing, as the scikit-image of its time), x / max(x),
    ImageNet mean/std, the fused output min-max normalised at 320, then resized back with PIL
    (bilinear) from 8 bits."""
    from PIL import Image
    from skimage import transform

    x = transform.resize(image, (320, 320), mode="constant", anti_aliasing=False)
    x = ((x / x.max() - MEAN) / STD).transpose(2, 0, 1)[None].astype(np.float32)
    prob = run_onnx(path, x)[0, 0]
    prob = (prob - prob.min()) / (prob.max() - prob.min())
    back = Image.fromarray(prob * 255).convert("RGB").resize(image.shape[1::-1], Image.BILINEAR)
    return np.asarray(back)[:, :, 0] / 255


def test_official_normalisation_reproduces_the_official_test_script(tmp_path):
    pytest.importorskip("PIL", reason="Pillow resizes as the official test script does")
    path = official_u2netp()
    photos = real_photos()
    (tmp_path / "in").mkdir()
    for name, photo in photos.items():
        cv2.imwrite(str(tmp_path / "in" / f"{name}.png"), photo[:, :, ::-1])
    errors = {}
    for normalisation in ("official", "imagenet"):
        out = tmp_path / normalisation
        command = [sys.executable, "inference.py", "-m", str(path), "-i", str(tmp_path / "in")]
        command += ["-o", str(out), "--post-norm", "--normalisation", normalisation]
        subprocess.run(command, cwd=ROOT, check=True, capture_output=True, timeout=600)
        for name, photo in photos.items():
            ours = cv2.imread(str(out / "maps" / f"{name}.png"), cv2.IMREAD_GRAYSCALE) / 255
            errors[normalisation, name] = np.abs(ours - official_test_map(path, photo)).mean()
    assert all(errors["official", name] < 0.01 for name in photos), errors
    # ImageNet's x / 255 is another input for a photo whose maximum is not 255
    assert errors["imagenet", "astronaut_dark"] > 5 * errors["official", "astronaut_dark"]


def best_maxf(run_root: Path) -> float:
    lines = next(run_root.rglob("metrics.jsonl")).read_text().splitlines()
    return max(json.loads(line)["maxF"] for line in lines if '"maxF"' in line)


def test_fine_tuning_from_the_official_weights_beats_training_from_scratch(tmp_path):
    """One epoch of the README's demo (config.json), same seed and data, from scratch (its
    learning rate) and from the official weights (frozen BatchNorm statistics, a fine-tuning
    learning rate): the fine-tuned model validates better."""
    path = official_u2netp()
    data = [
        f"{loader}.args.data_dir={tmp_path / 'demo'}" for loader in ("train_loader", "val_loader")
    ]
    common = [*data, "trainer.epochs=1", "trainer.tensorboard=false", "normalisation=official"]
    official = [f"arch.args.pretrained={path}", "arch.args.freeze_bn_stats=true"]
    scores = {}
    for start, extra in (("scratch", []), ("official", [*official, "optimizer.args.lr=0.0002"])):
        options = [f"trainer.save_dir={tmp_path / start}", *common, *extra]
        command = [sys.executable, "train.py", "-c", "config.json", "--opt", *options]
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stderr[-2000:]
        scores[start] = best_maxf(tmp_path / start)
    assert scores["official"] > scores["scratch"], scores
