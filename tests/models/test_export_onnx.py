"""tools/export_onnx.py: the ONNX model matches PyTorch under onnxruntime, with free sizes."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import inference
from models import load_pretrained, read_pretrained
from tests.helpers import ROOT, lite_with_batchnorm_statistics
from tests.inference.test_api import golden_checkpoint, golden_images
from u2seg import load_model
from utils.io.checkpoint import save_checkpoint

ort = pytest.importorskip(
    "onnxruntime", reason="onnxruntime (requirements-dev.txt) runs the exported model"
)
SCRIPT = ROOT / "tools" / "export_onnx.py"


def load_tool():
    spec = importlib.util.spec_from_file_location("export_onnx", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A lite U2Net with non-default BN statistics, saved as one of our checkpoints."""
    model = lite_with_batchnorm_statistics()
    path = tmp_path_factory.mktemp("run") / "checkpoint-epoch1.pth"
    save_checkpoint({"arch": "U2Net", "epoch": 1, "state_dict": model.state_dict()}, path)
    return path


def test_dynamic_export_matches_pytorch_at_two_sizes(checkpoint, tmp_path):
    out = tmp_path / "u2net.onnx"
    command = ["tools/export_onnx.py", "-m", str(checkpoint), "-o", str(out), "--dynamic"]
    result = subprocess.run(
        [sys.executable, *command],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    diffs = re.findall(r"input (\S+): (\S+)", result.stdout)
    assert [shape for shape, _ in diffs] == ["1x3x320x320", "2x3x301x261"], result.stdout
    assert all(float(diff) < 1e-4 for _, diff in diffs), result.stdout

    # Run as the README shows, at a third size.
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    image = np.random.default_rng(0).standard_normal((1, 3, 97, 131)).astype(np.float32)
    (mask,) = session.run(None, {session.get_inputs()[0].name: image})
    with torch.no_grad():
        expected = load_pretrained(checkpoint)(torch.from_numpy(image)).numpy()
    assert mask.shape == (1, 1, 97, 131)
    assert np.abs(mask - expected).max() < 1e-4
    # The file says how its inputs are normalised, and loads back with it (not the default
    # of metadata-less graphs, official)
    assert "normalisation 'imagenet'" in result.stdout
    assert read_pretrained(out).normalisation == "imagenet"


def test_static_export_and_a_failed_check(checkpoint, tmp_path, capsys, monkeypatch):
    tool = load_tool()
    out = tmp_path / "static.onnx"
    assert tool.main(["-m", str(checkpoint), "-o", str(out), "--size", "64"]) == 0
    assert capsys.readouterr().out.count("input 1x3x64x64: ") == 2
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == [1, 3, 64, 64]

    monkeypatch.setattr(tool, "export", lambda *args, **kwargs: None)  # keep the file above
    monkeypatch.setattr(tool, "check", lambda *args: [((1, 3, 64, 64), 0.5)])
    assert tool.main(["-m", str(checkpoint), "-o", str(out), "--size", "64"]) == 1
    assert "FAILED: 0.5 exceeds the tolerance 0.0001" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without CUDA")
def test_half_needs_cuda(checkpoint, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        load_tool().main(["-m", str(checkpoint), "-o", str(tmp_path / "x.onnx"), "--half"])
    assert exit_info.value.code == 2
    assert "--half needs a CUDA GPU" in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists()


def test_unreadable_model_is_a_clear_error(tmp_path, capsys):
    bogus = tmp_path / "bogus.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, bogus)
    with pytest.raises(ValueError, match="unrecognised U2Net state dict format"):
        load_tool().main(["-m", str(bogus), "-o", str(tmp_path / "x.onnx")])
    with pytest.raises(SystemExit):
        load_tool().main(["-m", str(bogus), "-o", str(tmp_path / "x.onnx"), "--size", "16"])
    assert "--size must be at least 32" in capsys.readouterr().err


def test_the_export_records_the_checkpoints_input_size_and_predicts_like_it(tmp_path, capsys):
    checkpoint = golden_checkpoint(tmp_path / "model.pth")  # validation size 96
    images = golden_images(tmp_path / "images")
    out = tmp_path / "model.onnx"
    assert load_tool().main(["-m", str(checkpoint), "-o", str(out)]) == 0
    assert "size 96" in capsys.readouterr().out
    assert read_pretrained(out).input_size == 96
    assert load_model(out).input_size == load_model(checkpoint).input_size == 96
    maps = {}
    for name, model in (("pth", checkpoint), ("onnx", out)):
        args = ["-m", model, "-i", images, "-o", tmp_path / name, "--device", "cpu"]
        assert inference.main([str(a) for a in args]) == 0
        maps[name] = {p.name: cv2.imread(str(p), 0) for p in (tmp_path / name / "maps").iterdir()}
    assert sorted(maps["pth"]) == sorted(maps["onnx"])
    for key, expected in maps["pth"].items():
        assert np.abs(maps["onnx"][key].astype(int) - expected).max() <= 1, key


def readme_onnx_snippet() -> str:
    """The Python block after "Running the exported file" in the README."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("Running the exported file") :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_onnxruntime_snippet_predicts_like_inference_py(tmp_path, monkeypatch):
    checkpoint = golden_checkpoint(tmp_path / "model.pth")  # validation size 96
    images = golden_images(tmp_path / "images")
    assert load_tool().main(["-m", str(checkpoint), "-o", str(tmp_path / "u2net.onnx")]) == 0
    photo = cv2.imread(str(next(images.glob("img1.*"))))
    cv2.imwrite(str(tmp_path / "photo.jpg"), photo, [cv2.IMWRITE_JPEG_QUALITY, 100])
    monkeypatch.chdir(tmp_path)
    exec(readme_onnx_snippet(), {})  # exactly the README's lines: writes photo_mask.png
    args = ["-m", "model.pth", "-i", "photo.jpg", "-o", "out", "--device", "cpu"]
    assert inference.main(args) == 0
    ours = cv2.imread("out/maps/photo.png", 0).astype(int)
    theirs = cv2.imread("photo_mask.png", 0).astype(int)
    assert theirs.shape == ours.shape == photo.shape[:2]
    assert np.abs(theirs - ours).mean() < 1 and np.abs(theirs - ours).max() <= 8
