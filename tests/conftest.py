"""Shared fixtures: the repository root on ``sys.path`` and tiny DUTS-layout datasets."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


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


@pytest.fixture
def make_duts(tmp_path: Path) -> Callable[..., Path]:
    """``make_duts(name="duts", **kwargs)`` writes ``write_duts(tmp_path / name, **kwargs)``."""
    return lambda name="duts", **kwargs: write_duts(tmp_path / name, **kwargs)


@pytest.fixture
def duts_dir(make_duts: Callable[..., Path]) -> Path:
    """A tiny DUTS-layout dataset: 6 training and 3 test images of 48x40."""
    return make_duts()
