"""Tests of the weighted F-measure (numpy CPU path and batched torch path) and its exact distance
transforms against PySODMetrics / scipy."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch

from utils.metrics import weighted_f
from utils.metrics.prepare import prepare_batch
from utils.metrics.weighted_f import WeightedFAccumulator, foreground_distance
from utils.metrics.weighted_f_torch import (
    foreground_edt,
    gaussian_filter,
    gaussian_kernel,
    weighted_fmeasure,
)

py_sod_metrics = pytest.importorskip(
    "py_sod_metrics", reason="pysodmetrics (requirements-dev.txt) is the reference to compare with"
)
ndimage = pytest.importorskip("scipy.ndimage")

ATOL = 1e-6  # acceptance tolerance of wF (per image and dataset)
TIGHT = 1e-10  # differences beyond this are counted (none are expected)
SIZES = ((37, 53), (53, 37), (32, 32), (48, 40), (23, 17), (64, 61), (1, 9), (9, 1), (2, 3))
METHODS = ("numpy", "torch")  # the CPU computation, and the batched one of the GPU


# --------------------------------------------------------------------------------------------
# Maps
# --------------------------------------------------------------------------------------------


def blob_mask(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Smooth random blobs (thresholded blurred noise)."""
    sigma = max(1.0, min(h, w) / 8)
    smooth = ndimage.gaussian_filter(rng.random((h, w)), sigma)
    return smooth > np.quantile(smooth, rng.uniform(0.4, 0.85))


def line_mask(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Thin structures: a few 1-2 px horizontal, vertical and diagonal lines."""
    mask = np.zeros((h, w), bool)
    for _ in range(rng.integers(1, 4)):
        width = int(rng.integers(1, 3))
        kind = rng.integers(3)
        if kind == 0:
            y = int(rng.integers(h))
            mask[y : y + width] = True
        elif kind == 1:
            x = int(rng.integers(w))
            mask[:, x : x + width] = True
        else:
            offset = int(rng.integers(-w, h))
            ys, xs = np.indices((h, w))
            mask |= (ys - xs - offset >= 0) & (ys - xs - offset < width)
    return mask


def salt_mask(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Salt-and-pepper: sparse isolated pixels (many equally near pixels, i.e. ties)."""
    return rng.random((h, w)) < rng.choice([0.005, 0.03, 0.2])


def pixel_mask(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """One-pixel object, anywhere (corners included)."""
    mask = np.zeros((h, w), bool)
    corners = [(0, 0), (0, w - 1), (h - 1, 0), (h - 1, w - 1)]
    y, x = corners[rng.integers(4)] if rng.random() < 0.4 else (rng.integers(h), rng.integers(w))
    mask[y, x] = True
    return mask


def border_mask(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Rectangles touching the borders (last row / column included)."""
    mask = np.zeros((h, w), bool)
    mask[int(rng.integers(h)) :, int(rng.integers(w)) :] = True  # bottom-right corner
    if rng.random() < 0.5:
        mask[: int(rng.integers(1, h + 1)), : max(1, w // 4)] = True  # left edge
    return mask


def symmetric_mask(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Mirror-symmetric pairs and checkerboards: exact ties everywhere."""
    mask = np.zeros((h, w), bool)
    if rng.random() < 0.5:
        mask[h // 2, [0, w - 1]] = True
        mask[[0, h - 1], w // 2] = True
    else:
        step = int(rng.integers(2, 6))
        mask[::step, ::step] = True
    return mask


MASKS: dict[str, Callable[[np.random.Generator, int, int], np.ndarray]] = {
    "blob": blob_mask,
    "line": line_mask,
    "salt": salt_mask,
    "pixel": pixel_mask,
    "border": border_mask,
    "symmetric": symmetric_mask,
    "empty": lambda rng, h, w: np.zeros((h, w), bool),
    "full": lambda rng, h, w: np.ones((h, w), bool),
}


def prediction(rng: np.random.Generator, gt: np.ndarray, kind: int) -> np.ndarray:
    """uint8 prediction of one of several kinds."""
    h, w = gt.shape
    if kind == 0:  # uniform noise
        return rng.integers(0, 256, (h, w), dtype=np.uint8)
    if kind == 1:  # a blurred, noisy version of the mask
        soft = ndimage.gaussian_filter(gt.astype(float), 1.5) + rng.normal(0, 0.15, (h, w))
        return np.clip(soft * 255, 0, 255).astype(np.uint8)
    if kind == 2:  # constant map
        return np.full((h, w), rng.choice([0, 77, 255]), np.uint8)
    if kind == 3:  # the mask itself or its inverse
        return (gt if rng.random() < 0.5 else ~gt).astype(np.uint8) * 255
    level = rng.choice([128, 255])
    return np.where(rng.random((h, w)) < 0.5, level, 0).astype(np.uint8)  # binary noise


def gt_uint8(rng: np.random.Generator, mask: np.ndarray) -> np.ndarray:
    """uint8 mask: 255/0, or grey levels on either side of the 128 threshold."""
    if rng.random() < 0.8:
        return mask.astype(np.uint8) * 255
    return np.where(mask, rng.integers(129, 256), rng.integers(0, 129)).astype(np.uint8)


def dataset(seed: int, h: int, w: int, per_kind: int) -> tuple[list, list]:
    """``per_kind`` pairs of every mask kind (the prediction kinds cycle)."""
    rng = np.random.default_rng([seed, h, w])
    preds, gts = [], []
    for name in MASKS:
        for i in range(per_kind):
            mask = MASKS[name](rng, h, w)
            preds.append(prediction(rng, mask, (i + len(preds)) % 5))
            gts.append(gt_uint8(rng, mask))
    return preds, gts


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def reference_scores(preds: list[np.ndarray], gts: list[np.ndarray]) -> tuple[np.ndarray, float]:
    """PySODMetrics' per-image weighted F and its dataset value, fed one image at a time."""
    metric = py_sod_metrics.WeightedFmeasure()
    for pred, gt in zip(preds, gts, strict=True):
        metric.step(pred, gt)
    return np.array(metric.weighted_fms, np.float64), float(metric.get_results()["wfm"])


def our_scores(preds: list, gts: list, batch: int, method: str = "numpy") -> np.ndarray:
    scores = []
    for i in range(0, len(preds), batch):
        prepared = prepare_batch(
            torch.from_numpy(np.stack(preds[i : i + batch])),
            torch.from_numpy(np.stack(gts[i : i + batch])),
        )
        if method == "numpy":
            scores.append(prepared.weighted_f())
        else:
            scores.append(weighted_fmeasure(prepared.pred, prepared.gt).numpy())
    return np.concatenate(scores)


def accumulate(preds: list, gts: list, batch: int) -> WeightedFAccumulator:
    acc = WeightedFAccumulator()
    for i in range(0, len(preds), batch):
        acc.update(
            prepare_batch(
                torch.from_numpy(np.stack(preds[i : i + batch])),
                torch.from_numpy(np.stack(gts[i : i + batch])),
            )
        )
    return acc


def check_edt(masks: np.ndarray) -> int:
    """Our EDTs against scipy's, image by image: the distances of both (bit-identical) and the
    nearest pixels of the torch one; returns the number of differing indices."""
    distance, index_y, index_x = foreground_edt(torch.from_numpy(masks))
    differing = 0
    for b, mask in enumerate(masks):
        if not mask.any():
            continue  # no foreground: no nearest pixel (and wF does not use it)
        ref_distance, (ref_y, ref_x) = ndimage.distance_transform_edt(~mask, return_indices=True)
        got = distance[b].numpy()
        np.testing.assert_array_equal(got, ref_distance)  # bit-identical distances
        np.testing.assert_array_equal(foreground_distance(mask), ref_distance)
        iy, ix = index_y[b].numpy(), index_x[b].numpy()
        assert mask[iy, ix].all()  # a foreground pixel ...
        ys, xs = np.indices(mask.shape)
        dist_sq = ((ys - iy) ** 2 + (xs - ix) ** 2).astype(np.float64)
        np.testing.assert_array_equal(np.sqrt(dist_sq), ref_distance)  # ... that near
        differing += int(((iy != ref_y) | (ix != ref_x)).sum())
    return differing


# --------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("h, w", SIZES)
def test_matches_reference_per_image_and_dataset(h: int, w: int) -> None:
    per_kind = 4 if h * w >= 100 else 2
    preds, gts = dataset(0, h, w, per_kind)
    want, want_dataset = reference_scores(preds, gts)
    got = our_scores(preds, gts, batch=8)
    assert np.isfinite(got).all() and np.isfinite(want).all()
    diff = np.abs(got - want)
    assert diff.max() <= ATOL, f"max |diff| {diff.max():.3g} at image {diff.argmax()}"
    acc = accumulate(preds, gts, batch=16)
    assert acc.num_images == len(preds)
    assert abs(acc.compute()["wF"] - want_dataset) <= ATOL
    # Ties are broken as scipy does, so what remains is summation order (~1e-16).
    assert int((diff > TIGHT).sum()) == 0, f"{(diff > TIGHT).sum()} images differ beyond {TIGHT}"


def test_at_least_200_pairs_and_320px_images() -> None:
    """A 320x320 dataset (the training size) plus the count of all pairs compared."""
    preds, gts = dataset(1, 320, 320, 1)
    want, want_dataset = reference_scores(preds, gts)
    acc = accumulate(preds, gts, batch=len(preds))
    assert abs(acc.compute()["wF"] - want_dataset) <= ATOL
    assert np.abs(our_scores(preds, gts, batch=3) - want).max() <= ATOL
    pairs = sum(len(MASKS) * (4 if h * w >= 100 else 2) for h, w in SIZES)
    assert pairs + len(preds) >= 200


@pytest.mark.parametrize("method", METHODS)
def test_both_computations_match_reference(method: str) -> None:
    preds, gts = dataset(2, 37, 53, 3)
    want, _ = reference_scores(preds, gts)
    assert np.abs(our_scores(preds, gts, batch=5, method=method) - want).max() <= TIGHT


@pytest.mark.parametrize("h, w", (*SIZES, (1, 1), (5, 1), (70, 90)))
def test_edt_matches_scipy(h: int, w: int) -> None:
    rng = np.random.default_rng([3, h, w])
    masks = np.stack([MASKS[name](rng, h, w) for name in MASKS for _ in range(3)])
    differing = check_edt(masks)
    # The separable passes pick, among equally near pixels, the smallest column then the
    # smallest row, which is what scipy's implementation returns.
    assert differing == 0


def test_edt_random_small_masks_with_ties() -> None:
    rng = np.random.default_rng(4)
    for _ in range(40):
        h, w = (int(v) for v in rng.integers(1, 16, 2))
        masks = rng.random((6, h, w)) < rng.choice([0.03, 0.1, 0.3, 0.7])
        assert check_edt(masks) == 0


def test_edt_all_foreground_and_empty() -> None:
    masks = np.zeros((3, 7, 5), bool)
    masks[0] = True
    masks[2, 6, 4] = True  # one pixel in the last row and column
    distance, index_y, index_x = foreground_edt(torch.from_numpy(masks))
    assert float(distance[0].abs().max()) == 0.0
    ys, xs = np.indices((7, 5))
    assert (index_y[0].numpy() == ys).all() and (index_x[0].numpy() == xs).all()
    assert (index_y[1] >= 0).all() and (index_y[1] < 7).all() and (index_x[1] < 5).all()
    assert (index_y[2] == 6).all() and (index_x[2] == 4).all()
    assert check_edt(masks) == 0


@pytest.mark.parametrize("cv2_threads", (1, 2))
def test_numpy_distance_large_images_and_the_scipy_fallback(monkeypatch, cv2_threads) -> None:
    """OpenCV's float32 distances give the exact integer squared distances back below
    EXACT_DISTANCE (single-threaded OpenCV rounds its square roots differently: checked too);
    farther pixels make the scipy transform take over, also when forced."""
    cv2 = pytest.importorskip("cv2")
    previous = cv2.getNumThreads()
    cv2.setNumThreads(cv2_threads)
    try:
        rng = np.random.default_rng(9)
        corner = np.zeros((362, 362), bool)
        corner[0, 0] = True  # farthest pixel at 510.5: all below EXACT_DISTANCE
        far = np.zeros((1100, 1200), bool)
        far[0, 0] = True  # up to 1628: the fallback
        masks = [corner, far] + [MASKS[n](rng, *s) for n in MASKS for s in ((700, 900), (320, 320))]
        for mask in masks:
            if not mask.any():
                continue
            want = ndimage.distance_transform_edt(~mask)
            np.testing.assert_array_equal(foreground_distance(mask), want)
            monkeypatch.setattr(weighted_f, "EXACT_DISTANCE", 1)
            np.testing.assert_array_equal(foreground_distance(mask), want)
            monkeypatch.undo()
    finally:
        cv2.setNumThreads(previous)


def test_batch_of_one_equals_batch_of_sixteen() -> None:
    preds, gts = dataset(5, 37, 53, 2)
    preds, gts = preds[:16], gts[:16]
    single = our_scores(preds, gts, batch=1)
    batched = our_scores(preds, gts, batch=16)
    np.testing.assert_array_equal(single, batched)


def test_split_state_sum_equals_single_accumulator() -> None:
    preds, gts = dataset(6, 32, 40, 2)
    single = accumulate(preds, gts, batch=4)
    first, second = accumulate(preds[:5], gts[:5], batch=5), accumulate(preds[5:], gts[5:], 3)
    for mine, other in zip(first.state_arrays(), second.state_arrays(), strict=True):
        assert mine.dtype == np.float64
        mine += other  # what an all-reduce (sum) does in place
    assert first.num_images == single.num_images == len(preds)
    assert first.compute()["wF"] == pytest.approx(single.compute()["wF"], abs=1e-14, rel=0)


def test_edge_cases() -> None:
    h, w = 24, 31
    empty, full = np.zeros((h, w), np.uint8), np.full((h, w), 255, np.uint8)
    one = empty.copy()
    one[h - 1, w - 1] = 255
    cases = [
        (np.full((h, w), 128, np.uint8), empty),  # empty GT: 0
        (empty, empty),
        (full, full),  # all foreground, perfect
        (empty, full),  # all foreground, all wrong
        (np.full((h, w), 200, np.uint8), full),  # constant prediction on a full mask
        (one, one),  # one pixel in the last row and column
        (empty, one),
        (full, one),
    ]
    preds, gts = [p for p, _ in cases], [g for _, g in cases]
    want, _ = reference_scores(preds, gts)
    got = our_scores(preds, gts, batch=len(cases))
    assert got[0] == 0.0 and got[1] == 0.0
    assert np.isfinite(got).all()
    assert np.abs(got - want).max() <= TIGHT


def test_accumulator_api() -> None:
    acc = WeightedFAccumulator()
    assert WeightedFAccumulator.HIGHER_IS_BETTER == {"wF": True}
    with pytest.raises(RuntimeError):
        acc.compute()
    preds, gts = dataset(7, 16, 16, 1)
    acc.update(prepare_batch(torch.from_numpy(np.stack(preds)), torch.from_numpy(np.stack(gts))))
    assert acc.num_images == len(preds)
    assert [t.dtype for t in acc.state_arrays()] == [np.float64, np.float64]
    acc.reset()
    assert acc.num_images == 0


def test_gaussian_kernel_and_filter() -> None:
    kernel = gaussian_kernel()
    reference = py_sod_metrics.WeightedFmeasure().matlab_style_gauss2D((7, 7), sigma=5)
    np.testing.assert_array_equal(kernel.numpy(), reference)
    image = torch.rand(3, 37, 53, dtype=torch.float64)
    filtered = gaussian_filter(image, kernel).numpy()
    scipy_conv = np.stack(
        [ndimage.convolve(im, reference, mode="constant") for im in image.numpy()]
    )
    np.testing.assert_allclose(filtered, scipy_conv, rtol=0, atol=1e-15)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu() -> None:
    preds, gts = dataset(8, 37, 53, 2)
    cpu = our_scores(preds, gts, batch=16)
    prepared = prepare_batch(
        torch.from_numpy(np.stack(preds)).cuda(), torch.from_numpy(np.stack(gts)).cuda()
    )
    cuda = prepared.weighted_f()
    assert np.abs(cuda - cpu).max() <= TIGHT
    for got, want in zip(
        foreground_edt(prepared.gt), foreground_edt(prepared.gt.cpu()), strict=True
    ):
        assert torch.equal(got.cpu(), want)
