"""Synthetic salient-object dataset, generated on first use in the DUTS layout (no download).

Each image has a cluttered low-saturation background (gradient, blobs, lines, noise), small
distractor shapes and strokes as colourful as the objects (background too), and one or two
larger, saturated, textured salient objects (ellipse, polygon, star, rounded rectangle or ring)
that form the mask.
Every image is drawn from its own fixed seed, so the data is the same on every run (and on
every machine, up to the JPEG encoder).
"""

from __future__ import annotations

import os
from typing import Any

import cv2
import numpy as np

from base.base_dataloader import BaseDataLoader
from dataloaders.duts import SPLIT_DIRS, DUTSDataset
from dataloaders.generated import ensure_generated

DEMO_VERSION = 2


def _colour(
    rng: np.random.Generator,
    saturation: tuple[float, float],
    value: tuple[float, float] = (60, 250),
) -> np.ndarray:
    """Random RGB colour (float32, 0..255) with saturation (0..1) and value in the given ranges."""
    hsv = np.array([[[rng.uniform(0, 180), rng.uniform(*saturation) * 255, rng.uniform(*value)]]])
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)


def _shape(rng: np.random.Generator, h: int, w: int, cx: float, cy: float, r: float) -> np.ndarray:
    """HxW uint8 mask (0/255) of a random shape of radius about ``r`` centred on (cx, cy)."""
    mask = np.zeros((h, w), np.uint8)
    kind = rng.integers(5)
    angle = rng.uniform(0, 2 * np.pi)
    if kind in (0, 4):  # ellipse, ring
        axes = (round(r), round(r * rng.uniform(0.55, 1)))
        cv2.ellipse(mask, (round(cx), round(cy)), axes, np.degrees(angle), 0, 360, 255, -1)
        if kind == 4:
            inner = (round(axes[0] * 0.5), round(axes[1] * 0.5))
            cv2.ellipse(mask, (round(cx), round(cy)), inner, np.degrees(angle), 0, 360, 0, -1)
        return mask
    if kind == 1:  # irregular polygon
        n = rng.integers(5, 9)
        theta = (np.arange(n) + rng.uniform(-0.3, 0.3, n)) * (2 * np.pi / n)
        radii = r * rng.uniform(0.6, 1.0, n)
    elif kind == 2:  # star
        n = 2 * rng.integers(5, 8)
        theta = np.arange(n) * 2 * np.pi / n
        radii = np.where(np.arange(n) % 2 == 0, r, r * rng.uniform(0.4, 0.6))
    else:  # rounded rectangle: four quarter-circle arcs
        hw, hh = r, r * rng.uniform(0.5, 0.9)
        k = hh * rng.uniform(0.2, 0.8)
        arc = np.linspace(0, np.pi / 2, 6) + np.arange(4)[:, None] * np.pi / 2  # 4 corners
        signs = np.array([[1, 1], [-1, 1], [-1, -1], [1, -1]])
        px = (signs[:, :1] * (hw - k) + k * np.cos(arc)).ravel()
        py = (signs[:, 1:] * (hh - k) + k * np.sin(arc)).ravel()
        theta, radii = np.arctan2(py, px), np.hypot(px, py)
    xy = np.stack([cx + radii * np.cos(theta + angle), cy + radii * np.sin(theta + angle)], 1)
    cv2.fillPoly(mask, [np.round(xy).astype(np.int32)], 255)
    return mask


def _texture(rng: np.random.Generator, h: int, w: int, colour: np.ndarray) -> np.ndarray:
    """HxWx3 float32 fill: plain, stripes, checker or noise around ``colour``."""
    kind = rng.integers(4)
    if kind == 0:
        return np.broadcast_to(colour, (h, w, 3))
    other = np.clip(colour * rng.uniform(0.4, 0.7) + rng.uniform(-20, 20, 3), 0, 255)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if kind == 1:
        a, period = rng.uniform(0, np.pi), rng.uniform(5, 14)
        on = np.sin((xx * np.cos(a) + yy * np.sin(a)) * (2 * np.pi / period)) > 0
    elif kind == 2:
        cell = rng.integers(4, 11)
        on = (xx // cell + yy // cell) % 2 == 0
    else:
        return colour + rng.random((h, w, 1), np.float32) * 80 - 40
    return np.where(on[:, :, None], colour, other)


def _sample(seed: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """One (HxWx3 uint8 RGB image, HxW uint8 0/255 mask) drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    w, h = int(rng.integers(160, 241)), int(rng.integers(120, 201))
    grey = (0.0, 0.2)
    # background: gradient between two greyish colours, low-frequency shading, blobs and lines
    a = rng.uniform(0, 2 * np.pi)
    ramp = (
        np.cos(a) * np.arange(w, dtype=np.float32) / w
        + np.sin(a) * np.arange(h, dtype=np.float32)[:, None] / h
    )
    ramp = (ramp - ramp.min()) / (ramp.max() - ramp.min())
    c0, c1 = _colour(rng, grey), _colour(rng, grey)
    shading = cv2.resize(rng.normal(0, 12, (h // 24 + 2, w // 24 + 2, 3)), (w, h))
    image = np.ascontiguousarray(c0 + ramp[:, :, None] * (c1 - c0) + shading, dtype=np.float32)
    for _ in range(rng.integers(3, 8)):
        centre = (int(rng.integers(w)), int(rng.integers(h)))
        axes = (int(rng.integers(10, w // 3)), int(rng.integers(8, h // 3)))
        angle = rng.uniform(0, 180)
        cv2.ellipse(image, centre, axes, angle, 0, 360, _colour(rng, grey).tolist(), -1)
    for _ in range(rng.integers(2, 7)):
        p0, p1 = rng.integers(0, (w, h), size=(2, 2))
        thickness = int(rng.integers(1, 4))
        cv2.line(image, p0.tolist(), p1.tolist(), _colour(rng, grey).tolist(), thickness)
    # distractors: as colourful and textured as the objects but small, plus bright thin strokes,
    # so saliency has to be learnt from size and shape, not from colour alone
    side = min(h, w)
    for _ in range(rng.integers(3, 8)):
        r = side * rng.uniform(0.04, 0.11)
        shape = _shape(rng, h, w, rng.uniform(0, w), rng.uniform(0, h), r)
        fill = _texture(rng, h, w, _colour(rng, (0.45, 1.0), (110, 250)))
        image[shape > 0] = fill[shape > 0]
    for _ in range(rng.integers(1, 4)):
        p0, p1 = rng.integers(0, (w, h), size=(2, 2))
        cv2.line(image, p0.tolist(), p1.tolist(), _colour(rng, (0.5, 1.0), (150, 250)).tolist(), 2)
    # salient objects: larger, saturated, textured
    mask = np.zeros((h, w), np.uint8)
    count = 2 if rng.random() < 0.25 else 1
    for _ in range(count):
        r = side * rng.uniform(0.18, 0.32) * (0.75 if count == 2 else 1)
        cx, cy = rng.uniform(0.8 * r, w - 0.8 * r), rng.uniform(0.8 * r, h - 0.8 * r)
        shape = _shape(rng, h, w, cx, cy, r)
        alpha = cv2.GaussianBlur(shape, (3, 3), 0).astype(np.float32)[:, :, None] / 255
        image += alpha * (_texture(rng, h, w, _colour(rng, (0.45, 1.0), (110, 250))) - image)
        mask |= shape
    image += rng.random((h, w, 3), np.float32) * 14 - 7  # pixel noise
    return np.clip(image, 0, 255).astype(np.uint8), mask


def _generate(root: str, num_train: int, num_test: int) -> None:
    for split_id, (split, count) in enumerate((("train", num_train), ("test", num_test))):
        image_dir, mask_dir = (os.path.join(root, d) for d in SPLIT_DIRS[split])
        os.makedirs(image_dir)
        os.makedirs(mask_dir)
        for i in range(count):
            image, mask = _sample([DEMO_VERSION, split_id, i])
            name = f"demo_{split}_{i:04d}"
            bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
            cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 92])[1].tofile(
                os.path.join(image_dir, name + ".jpg")
            )
            cv2.imencode(".png", mask)[1].tofile(os.path.join(mask_dir, name + ".png"))


def ensure_demo_data(data_dir: str, num_train: int = 240, num_test: int = 60) -> None:
    """Generate the demo dataset into ``data_dir`` unless it is there with these counts.

    The data is written to a temporary sibling folder that is renamed into place once complete
    (the marker file is written last), so a partial folder is never used. Demo data of other
    counts or of another generator version is replaced; if several processes race, the first
    rename wins and the others use its folder. A non-empty folder without the marker is left
    alone and reported, since it is not ours to delete (see ``dataloaders.generated``).
    """
    if num_train < 1 or num_test < 1:
        raise ValueError(f"num_train and num_test must be >= 1, got {num_train} and {num_test}")
    expected = {"version": DEMO_VERSION, "num_train": num_train, "num_test": num_test}
    # a lambda, so that ``_generate`` is looked up at call time (tests replace it)
    ensure_generated(data_dir, expected, lambda root: _generate(root, num_train, num_test), "demo")


class DemoSODDataset(DUTSDataset):
    """``DUTSDataset`` over synthetic demo data, generated in ``data_dir`` on first use."""

    def __init__(
        self,
        data_dir: str = "data/demo",
        split: str = "train",
        num_train: int = 240,
        num_test: int = 60,
        **kwargs: Any,
    ) -> None:
        ensure_demo_data(data_dir, num_train, num_test)
        super().__init__(data_dir, split, **kwargs)


class DemoSOD(BaseDataLoader):
    """Loader for the synthetic demo dataset (``DemoSODDataset``)."""

    dataset_class = DemoSODDataset
