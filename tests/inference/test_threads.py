"""Speed settings of inference: the thread layout (--threads, --workers 0) and --fuse."""

from __future__ import annotations

import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

import inference
from models.u2net import ConvBNReLU
from tests.helpers import ROOT, lite_with_batchnorm_statistics, random_image
from tests.inference.test_api import GOLDEN, digests, golden_checkpoint, golden_images
from utils.inference.files import InlineExecutor, predict_files
from utils.inference.fusion import FusedConv
from utils.inference.predictor import PredictOptions, Predictor
from utils.runtime.threads import (
    ThreadLayout,
    apply_threads,
    thread_layout,
    usable_cores,
    wait_policy,
)


def test_the_layout_counts_io_threads_against_the_cores():
    assert thread_layout(1, cores=8) == ThreadLayout(cores=8, compute=1, io=0)
    assert thread_layout(2, cores=8) == ThreadLayout(cores=8, compute=2, io=0)
    assert thread_layout(4, cores=8) == ThreadLayout(cores=8, compute=3, io=1)
    assert thread_layout(0, cores=6) == ThreadLayout(cores=6, compute=5, io=1)
    assert thread_layout(None, cores=2) == ThreadLayout(cores=2, compute=2, io=0)
    assert thread_layout(2, cores=8, gpu=True) == ThreadLayout(cores=8, compute=2, io=2)
    assert usable_cores() == len(os.sched_getaffinity(0))
    with pytest.raises(ValueError, match="threads must be 0"):
        thread_layout(-1)


def test_apply_threads_sets_torch_and_opencv(restore_threads):
    layout = apply_threads(1)
    assert (layout.compute, layout.io) == (1, 0)
    assert torch.get_num_threads() == 1 and cv2.getNumThreads() == 1
    layout = apply_threads(0)
    assert torch.get_num_threads() == layout.compute == thread_layout().compute


@pytest.mark.parametrize(
    ("options", "printed", "compute"),
    [
        (["--threads", "1"], "threads: 1 compute, 0 read + 0 write", 1),
        (["--threads", "3", "--workers", "2"], "threads: 2 compute, 2 read + 2 write", 2),
    ],
)
def test_cli_threads_write_the_recorded_maps(
    options, printed, compute, tmp_path, capsys, restore_threads
):
    checkpoint = golden_checkpoint(tmp_path / "model.pth")
    images = golden_images(tmp_path / "images")
    out = tmp_path / "out"
    args = ["-m", checkpoint, "-i", images, "-o", out, "--device", "cpu", "--no-fuse", *options]
    assert inference.main([str(a) for a in args]) == 0
    assert digests(out / "maps") == GOLDEN["single"]  # the recorded maps, byte for byte
    assert printed in capsys.readouterr().out
    assert torch.get_num_threads() == compute


def test_inline_io_writes_outputs_and_reports_unreadable_files(tmp_path, lite):
    good = tmp_path / "in" / "a.png"
    good.parent.mkdir()
    cv2.imwrite(str(good), random_image(30, 40))
    bad = tmp_path / "in" / "b.png"
    bad.write_bytes(b"not an image")
    predictor = Predictor(lite, PredictOptions(size=32, batch_size=1))
    inputs = [("a", good), ("b", bad)]
    written, failures = predict_files(predictor, inputs, tmp_path / "out", ("map",), workers=0)
    assert written == 1 and len(failures) == 1 and str(bad) in failures[0]
    assert cv2.imread(str(tmp_path / "out" / "maps" / "a.png"), 0).shape == (30, 40)
    future = InlineExecutor().submit(int, "x")
    with pytest.raises(ValueError):
        future.result()


def test_fuse_replaces_conv_bn_relu_and_keeps_the_maps(tmp_path):
    model = lite_with_batchnorm_statistics().eval()
    blocks = sum(isinstance(m, ConvBNReLU) for m in model.modules())
    image = random_image(50, 70)
    plain = Predictor(model, PredictOptions(size=64))
    fused = Predictor(model, PredictOptions(size=64)).fuse()
    assert sum(isinstance(m, FusedConv) for m in fused.model.modules()) == blocks > 0
    assert not any(isinstance(m, ConvBNReLU) for m in fused.model.modules())
    assert sum(isinstance(m, ConvBNReLU) for m in model.modules()) == blocks  # a copy is fused
    expected = plain.predict(image)
    assert np.abs(fused.predict(image) - expected).max() < 1e-4
    bf16 = Predictor(model, PredictOptions(size=64), amp="bf16").fuse()  # the unfused-op path
    assert np.abs(bf16.predict(image) - expected).max() < 0.05


def test_cli_fuses_by_default_on_the_cpu_within_one_level(tmp_path, capsys, restore_threads):
    checkpoint = golden_checkpoint(tmp_path / "model.pth")
    images = golden_images(tmp_path / "images")
    maps, lines = {}, {}
    for name, extra in (("plain", ["--no-fuse"]), ("fused", [])):
        args = ["-m", checkpoint, "-i", images, "-o", tmp_path / name, "--device", "cpu", *extra]
        assert inference.main([str(a) for a in args]) == 0
        maps[name] = {p.name: cv2.imread(str(p), 0) for p in (tmp_path / name / "maps").iterdir()}
        lines[name] = capsys.readouterr().out.splitlines()[0]
    assert "fused" in lines["fused"] and "fused" not in lines["plain"]
    assert sorted(maps["fused"]) == sorted(maps["plain"]) == sorted(GOLDEN["single"])
    for key, plain in maps["plain"].items():
        diff = np.abs(maps["fused"][key].astype(int) - plain.astype(int))
        assert diff.max() <= 1, key


def test_the_wait_policy_is_a_short_spin_unless_the_user_chose(monkeypatch):
    for name in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT"):
        monkeypatch.delenv(name, raising=False)
    assert wait_policy() == {"GOMP_SPINCOUNT": "1000"}
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert wait_policy() == {}
    monkeypatch.delenv("OMP_WAIT_POLICY")
    monkeypatch.setenv("GOMP_SPINCOUNT", "0")
    assert wait_policy() == {}
    # the CLIs apply it before torch is imported
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    for cli in ("inference", "evaluate", "train"):
        code = f"import sys, {cli}, os; print(os.environ.get('GOMP_SPINCOUNT'))"
        done = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
        )
        assert done.stdout.strip() == "1000", done.stderr
