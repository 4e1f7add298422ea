"""Shared test data: varied (prediction, ground truth) uint8 pairs for the metric tests."""

from __future__ import annotations

from functools import cache

import numpy as np

SIZES = ((32, 32), (31, 45), (17, 23), (48, 40), (64, 57), (2, 3), (1, 9), (9, 1))


def adaptive_tie_pair() -> tuple[np.ndarray, np.ndarray]:
    """A 28x33 map whose adaptive threshold ``2 * mean`` equals a present level (119 / 255) in
    exact arithmetic: 7 pixels at 255, 447 at 119, the rest 0; np.mean's rounding decides."""
    flat = np.zeros(28 * 33, np.uint8)
    flat[:7] = 255
    flat[7 : 7 + 447] = 119
    pred = flat.reshape(28, 33)
    gt = np.zeros_like(pred)
    gt[:, :20] = 255
    return pred, gt


def to_u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x * 255), 0, 255).astype(np.uint8)


def mask(x: np.ndarray) -> np.ndarray:
    return np.where(x, 255, 0).astype(np.uint8)


def blob(h: int, w: int, cy: float, cx: float, sigma: float) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2))


def cases(h: int, w: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """About 30 (pred, gt) uint8 pairs of one size: random, structured and degenerate."""
    rng = np.random.default_rng(1000 * h + w)
    noise = rng.integers(0, 256, size=(h, w), dtype=np.uint8)
    empty, full = np.zeros((h, w), np.uint8), np.full((h, w), 255, np.uint8)
    yy, xx = np.mgrid[0:h, 0:w]
    out = []
    # random maps; gt with arbitrary grey values (only > 128 is foreground)
    for _ in range(3):
        out.append((rng.integers(0, 256, (h, w), np.uint8), rng.integers(0, 256, (h, w), np.uint8)))
    # blobs: smooth, noisy, low contrast (min-max stretch), salt and pepper
    for kind in range(4):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        radius = rng.uniform(1, max(h, w) / 2)
        gt = mask(blob(h, w, cy, cx, radius) > np.exp(-0.5))
        pred = blob(
            h, w, cy + rng.normal(0, 2), cx + rng.normal(0, 2), radius * rng.uniform(0.7, 1.3)
        )
        if kind == 1:
            pred = pred + rng.normal(0, 0.15, (h, w))
        elif kind == 2:
            pred = 0.3 + 0.1 * pred
        elif kind == 3:
            pred = np.where(rng.random((h, w)) < 0.05, rng.random((h, w)), pred)
        out.append((to_u8(np.clip(pred, 0, 1)), gt))
    # thin structures: one-pixel lines, predicted shifted and blurred
    line = (yy == h // 2) | (xx == (w - 1) // 3) | (np.abs(yy * w - xx * h) < max(h, w) / 2)
    out.append((to_u8(0.8 * np.roll(line, 1, axis=1) + 0.1 * rng.random((h, w))), mask(line)))
    out.append((mask(line), mask(line)))
    # empty and full ground truth
    out += [(noise, empty), (noise, full), (empty, empty), (full, full), (empty, full)]
    # constant predictions, binary predictions
    small = (yy - h / 3) ** 2 + (xx - w / 4) ** 2 < (min(h, w) / 5) ** 2
    for value in (0, 128, 255, 77):
        out.append((np.full((h, w), value, np.uint8), mask(small)))
    out.append((mask(small), mask(small)))
    out.append((mask(~small), mask(small)))
    out.append((np.where(small, 3, 2).astype(np.uint8), mask(small)))  # two levels
    out.append((np.where(xx < w // 2, 128, 77).astype(np.uint8), mask(small)))
    # one-pixel objects: random position, corners, last row / column
    for y, x in (
        (rng.integers(h), rng.integers(w)),
        (0, 0),
        (h - 1, w - 1),
        (h - 1, 0),
        (0, w - 1),
    ):
        gt = np.zeros((h, w), bool)
        gt[y, x] = True
        out.append((noise, mask(gt)))
    # objects touching the last row / column
    out.append((noise, mask(yy >= h - 2)))
    out.append((to_u8(blob(h, w, h - 1, w / 2, 3)), mask(xx >= w - 1)))
    out.append((noise, mask((yy >= h // 2) & (xx >= w // 2))))
    return out


@cache
def all_cases() -> dict[tuple[int, int], tuple[list[np.ndarray], list[np.ndarray]]]:
    grouped = {}
    for h, w in SIZES:
        pairs = cases(h, w)
        grouped[(h, w)] = ([p for p, _ in pairs], [g for _, g in pairs])
    return grouped


def multi_object_pairs(n: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n`` (pred, gt) uint8 pairs of odd sizes (40..95 pixels a side), each ground truth with
    1 to 5 objects of varied size (some under 50 pixels, some touching the border), the
    prediction a shifted, blurred and noisy version of it: for the metrics that look at
    connected components, boundaries and skeletons (size-invariant, HCE, relaxFb, MSIoU)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        h, w = (int(v) for v in rng.integers(40, 96, size=2))
        gt = np.zeros((h, w), bool)
        for _ in range(int(rng.integers(1, 6))):
            radius = rng.uniform(1.5, min(h, w) / 4)
            gt |= blob(h, w, rng.uniform(0, h), rng.uniform(0, w), radius) > np.exp(-0.5)
        if rng.random() < 0.3:  # a thin structure
            gt[int(rng.integers(h)), :] = True
        soft = np.roll(gt.astype(float), tuple(rng.integers(-2, 3, size=2)), axis=(0, 1))
        soft = 0.7 * soft + rng.normal(0, rng.uniform(0.05, 0.4), (h, w))
        soft = np.where(rng.random((h, w)) < 0.02, rng.random((h, w)), soft)
        out.append((to_u8(np.clip(soft, 0, 1)), mask(gt)))
    return out
