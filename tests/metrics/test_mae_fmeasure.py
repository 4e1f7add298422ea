"""Tests of utils.metrics against PySODMetrics 1.6.2 (MAE and Fmeasure)."""

from __future__ import annotations

import warnings

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import utils.metrics.levels as levels_module
from tests.metrics.cases import adaptive_tie_pair, blob, to_u8
from utils.metrics import (
    ALL_METRIC_NAMES,
    HIGHER_IS_BETTER,
    FmeasureAccumulator,
    MAEAccumulator,
    MetricSet,
    SODMetrics,
    prepare_batch,
    prob_to_uint8,
)

py_sod_metrics = pytest.importorskip(
    "py_sod_metrics", reason="pysodmetrics (requirements-dev.txt) is the reference to compare with"
)

NAMES = ("MAE", "maxF", "meanF", "adpF")  # the families tested here

ATOL = 1e-12
CURVE_KEYS = ("precision", "recall", "fmeasure")


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def reference(preds: list[np.ndarray], gts: list[np.ndarray]) -> tuple[dict, dict]:
    """PySODMetrics MAE + Fmeasure fed uint8 images one by one."""
    mae = py_sod_metrics.MAE()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Fmeasure warns that it is deprecated
        fm = py_sod_metrics.Fmeasure()
    for pred, gt in zip(preds, gts, strict=True):
        mae.step(pred, gt)
        fm.step(pred, gt)
    res = fm.get_results()
    curve = res["fm"]["curve"]
    metrics = {
        "MAE": float(mae.get_results()["mae"]),
        "maxF": float(curve.max()),
        "meanF": float(curve.mean()),
        "adpF": float(res["fm"]["adp"]),
    }
    curves = {"precision": res["pr"]["p"], "recall": res["pr"]["r"], "fmeasure": curve}
    return metrics, curves


def ours(preds, gts, batch: int | None = None) -> SODMetrics:
    """SODMetrics fed stacked uint8 batches (all images the same size)."""
    metrics = SODMetrics(metrics=NAMES)
    preds, gts = np.stack(preds), np.stack(gts)
    step = batch or len(preds)
    for i in range(0, len(preds), step):
        metrics.update(preds[i : i + step], gts[i : i + step])
    return metrics


def assert_matches(metrics: SODMetrics, preds: list[np.ndarray], gts: list[np.ndarray]) -> None:
    ref_metrics, ref_curves = reference(preds, gts)
    got = metrics.compute()
    assert list(got) == list(NAMES)
    for name in NAMES:
        assert got[name] == pytest.approx(ref_metrics[name], abs=ATOL, rel=0), name
    got_curves = metrics.curves()
    for key in CURVE_KEYS:
        assert got_curves[key].shape == (256,)
        np.testing.assert_allclose(got_curves[key], ref_curves[key], atol=ATOL, rtol=0, err_msg=key)


def structured_images(rng: np.random.Generator, n: int, h: int, w: int):
    """Smooth blob predictions of disk-shaped objects, with noise and contrast changes."""
    preds, gts = [], []
    for i in range(n):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        radius = rng.uniform(2, min(h, w) / 2)
        gt = blob(h, w, cy, cx, radius) > np.exp(-0.5)
        pred = blob(
            h, w, cy + rng.normal(0, 3), cx + rng.normal(0, 3), radius * rng.uniform(0.7, 1.3)
        )
        kind = i % 4
        if kind == 1:  # noisy
            pred = pred + rng.normal(0, 0.15, size=pred.shape)
        elif kind == 2:  # low contrast: exercises the min-max stretch and the uint8 truncation
            pred = 0.3 + 0.1 * pred
        elif kind == 3:  # salt and pepper
            pred = np.where(rng.random(pred.shape) < 0.05, rng.random(pred.shape), pred)
        preds.append(to_u8(np.clip(pred, 0, 1)))
        gts.append((gt * 255).astype(np.uint8))
    return preds, gts


# --------------------------------------------------------------------------------------------
# Comparison with PySODMetrics
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("h", "w", "n", "batch"), [(32, 32, 5, 5), (47, 61, 7, 3), (96, 80, 4, 1)])
def test_random_maps_match_reference(h: int, w: int, n: int, batch: int) -> None:
    rng = np.random.default_rng(h * w + n)
    preds = [rng.integers(0, 256, size=(h, w), dtype=np.uint8) for _ in range(n)]
    # gt uint8 with arbitrary grey values: only > 128 counts as foreground
    gts = [rng.integers(0, 256, size=(h, w), dtype=np.uint8) for _ in range(n)]
    assert_matches(ours(preds, gts, batch), preds, gts)


@pytest.mark.parametrize(("h", "w"), [(64, 64), (50, 77)])
def test_structured_maps_match_reference(h: int, w: int) -> None:
    rng = np.random.default_rng(h + w)
    preds, gts = structured_images(rng, 12, h, w)
    assert_matches(ours(preds, gts, batch=5), preds, gts)


def edge_cases(h: int = 20, w: int = 24) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(7)
    noise = rng.integers(0, 256, size=(h, w), dtype=np.uint8)
    obj = np.zeros((h, w), np.uint8)
    obj[5:12, 6:15] = 255
    zeros, full = np.zeros((h, w), np.uint8), np.full((h, w), 255, np.uint8)
    one_pixel = np.zeros((h, w), np.uint8)
    one_pixel[h // 2, w // 3] = 255
    corner = np.zeros((h, w), np.uint8)
    corner[h - 6 :, w - 4 :] = 255  # touches the last row and the last column
    corner_pred = np.zeros((h, w), np.uint8)
    corner_pred[h - 7 :, w - 5 :] = 200
    half = np.zeros((h, w), np.uint8)
    half[:, : w // 2] = 255  # binary map, mean exactly 0.5: pixels tie with the adaptive threshold
    # values {0, 85, 255} with 2 * mean == 85/255 up to rounding: another adaptive-threshold tie
    tile = np.array([[255, 85, 85, 85, 0, 0], [0, 0, 0, 0, 0, 0]], np.uint8)
    tie = np.tile(tile, (h // 2, w // 6))
    return {
        "empty_gt": (noise, zeros),
        "empty_gt_zero_pred": (zeros, zeros),
        "full_gt": (noise, full),
        "full_gt_full_pred": (full, full),
        "const0": (zeros, obj),
        "const255": (full, obj),
        "const128": (np.full((h, w), 128, np.uint8), obj),
        "const1": (np.full((h, w), 1, np.uint8), obj),
        "one_pixel_object": (to_u8(blob(h, w, h // 2, w // 3, 1.0)), one_pixel),
        "one_pixel_object_exact": (one_pixel, one_pixel),
        "one_pixel_pred": (one_pixel, obj),
        "corner_object": (corner_pred, corner),
        "corner_object_blob": (to_u8(blob(h, w, h - 1, w - 1, 4.0)), corner),
        "two_values": (np.where(obj > 0, 3, 2).astype(np.uint8), obj),
        "binary_half": (half, obj),
        "adaptive_tie": (tie, obj),
    }


def test_adaptive_threshold_tie_follows_numpy_rounding(monkeypatch: pytest.MonkeyPatch) -> None:
    # 924 pixels: 7 at 255, 447 at 119, the rest 0. In exact arithmetic 2 * mean == 119 / 255, so
    # whether the 447 pixels pass ``pred >= 2 * mean`` depends on how np.mean rounds.
    pred, gt = adaptive_tie_pair()
    metrics = SODMetrics(metrics=NAMES)
    metrics.update(pred, gt)
    assert_matches(metrics, [pred], [gt])
    # Without the exact-numpy fallback the level-histogram mean rounds the other way.
    monkeypatch.setattr(levels_module, "TIE_TOLERANCE", -1.0)
    no_fallback = SODMetrics(metrics=NAMES)
    no_fallback.update(pred, gt)
    assert no_fallback.compute()["adpF"] != metrics.compute()["adpF"]


@pytest.mark.parametrize("name", list(edge_cases()))
def test_edge_case_matches_reference(name: str) -> None:
    pred, gt = edge_cases()[name]
    metrics = SODMetrics(metrics=NAMES)
    metrics.update(pred, gt)  # a single HxW image
    assert_matches(metrics, [pred], [gt])


def test_all_edge_cases_in_one_batch() -> None:
    cases = list(edge_cases().values())
    preds, gts = [p for p, _ in cases], [g for _, g in cases]
    assert_matches(ours(preds, gts), preds, gts)


def test_torch_uint8_input_bx1xhxw() -> None:
    rng = np.random.default_rng(3)
    preds, gts = structured_images(rng, 6, 40, 36)
    metrics = SODMetrics(metrics=NAMES)
    metrics.update(
        torch.from_numpy(np.stack(preds))[:, None], torch.from_numpy(np.stack(gts))[:, None]
    )
    assert_matches(metrics, preds, gts)


def test_list_of_different_sizes() -> None:
    rng = np.random.default_rng(4)
    preds, gts = [], []
    for h, w in [(30, 40), (25, 25), (30, 40), (17, 50)]:
        p, g = structured_images(rng, 2, h, w)
        preds += p
        gts += g
    metrics = SODMetrics(metrics=NAMES)
    metrics.update(preds, gts)
    assert metrics.num_images == len(preds)
    assert_matches(metrics, preds, gts)


# --------------------------------------------------------------------------------------------
# Float path, state merging, resizing, API
# --------------------------------------------------------------------------------------------


def test_float_path_equals_uint8_path_of_quantised_maps() -> None:
    gen = torch.Generator().manual_seed(0)
    b, h, w = 6, 36, 44
    logits = torch.randn(b, 1, h, w, generator=gen) * 3
    prob = torch.sigmoid(logits)  # float32 from the model
    prob[0] = 0.0  # constant maps
    prob[1] = 1.0
    prob[2, 0, :, :10] = 1.5  # out of range: clamped
    rng = np.random.default_rng(0)
    _, gts = structured_images(rng, b, h, w)
    gt_u8 = np.stack(gts)
    gt_float = torch.from_numpy(gt_u8).float().div(255.0)[:, None]  # dataset: mask_uint8 / 255

    metrics = SODMetrics(metrics=NAMES)
    metrics.update(prob, gt_float)

    # The documented rule, written independently with numpy.
    pred_u8 = np.clip(np.rint(prob.numpy()[:, 0].astype(np.float64) * 255), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(prob_to_uint8(prob)[:, 0].numpy(), pred_u8)
    assert_matches(metrics, list(pred_u8), list(gt_u8))

    uint8_path = SODMetrics(metrics=NAMES)
    uint8_path.update(pred_u8, gt_u8)
    assert metrics.compute() == uint8_path.compute()


def test_float_gt_bool_gt_and_uint8_gt_agree() -> None:
    rng = np.random.default_rng(5)
    preds, gts = structured_images(rng, 4, 24, 24)
    gt_u8 = np.stack(gts)
    results = []
    for gt in (gt_u8, torch.from_numpy(gt_u8 > 128), torch.from_numpy(gt_u8) / 255.0):
        metrics = SODMetrics(metrics=NAMES)
        metrics.update(np.stack(preds), gt)
        results.append(metrics.compute())
    assert results[0] == results[1] == results[2]


def test_split_state_sum_equals_single_accumulator() -> None:
    rng = np.random.default_rng(6)
    preds, gts = structured_images(rng, 10, 32, 40)
    single = ours(preds, gts, batch=4)
    first, second = ours(preds[:3], gts[:3]), ours(preds[3:], gts[3:], batch=2)
    for mine, other in zip(first.state_arrays(), second.state_arrays(), strict=True):
        assert mine.dtype == np.float64
        mine += other  # what an all-reduce (sum) does in place
    assert first.num_images == single.num_images == 10
    got, want = first.compute(), single.compute()
    for name in NAMES:
        assert got[name] == pytest.approx(want[name], abs=1e-14, rel=0)
    for key in CURVE_KEYS:
        np.testing.assert_allclose(first.curves()[key], single.curves()[key], atol=1e-14, rtol=0)
    assert_matches(first, preds, gts)


def test_prediction_is_resized_to_gt_size() -> None:
    rng = np.random.default_rng(8)
    preds, gts = structured_images(rng, 3, 48, 64)
    small = torch.from_numpy(np.stack(preds))[:, None].double()
    small = F.interpolate(small, size=(24, 32), mode="bilinear", align_corners=False)
    small_u8 = small.round().clamp(0, 255).to(torch.uint8)

    # uint8 map: PySODEvalToolkit's cv2.resize(pred, gt.shape[::-1], INTER_LINEAR) on uint8
    expected = [
        cv2.resize(image, (64, 48), interpolation=cv2.INTER_LINEAR)
        for image in small_u8[:, 0].numpy()
    ]
    metrics = SODMetrics(metrics=NAMES)
    metrics.update(small_u8, np.stack(gts))
    assert_matches(metrics, expected, gts)
    from_files = MetricSet(NAMES)  # the torch-free path of evaluate.py: the same rule
    from_files.update(list(small_u8[:, 0].numpy()), gts)
    assert from_files.compute() == metrics.compute()

    # float probability: bilinear on the probability, then quantised
    prob = small_u8.float() / 255.0
    expected = F.interpolate(prob.double(), size=(48, 64), mode="bilinear", align_corners=False)
    expected = prob_to_uint8(expected)[:, 0].numpy()
    metrics = SODMetrics(metrics=NAMES)
    metrics.update(prob, torch.from_numpy(np.stack(gts)).float() / 255)
    assert_matches(metrics, list(expected), gts)


def test_prepare_batch_is_bit_identical_to_reference() -> None:
    rng = np.random.default_rng(9)
    preds = np.stack(
        [
            rng.integers(lo, hi, size=(16, 16), dtype=np.uint8)
            for lo, hi in [(0, 256), (40, 60), (200, 202), (7, 8)]
        ]
    )
    gts = rng.integers(0, 256, size=preds.shape, dtype=np.uint8)
    batch = prepare_batch(torch.from_numpy(preds), torch.from_numpy(gts))
    pred, gt = batch.pred, batch.gt
    assert pred.dtype == torch.float64 and gt.dtype == torch.bool
    for i in range(len(preds)):
        ref_pred, ref_gt = py_sod_metrics.utils.prepare_data(preds[i], gts[i])
        np.testing.assert_array_equal(pred[i].numpy(), ref_pred)
        np.testing.assert_array_equal(gt[i].numpy(), ref_gt)
        np.testing.assert_array_equal(batch.pred_image(i).numpy(), ref_pred)
        counts = batch.level_counts[i].numpy()
        np.testing.assert_array_equal(counts[1], np.bincount(preds[i][ref_gt], minlength=256))
        np.testing.assert_array_equal(counts[0], np.bincount(preds[i][~ref_gt], minlength=256))


def test_threshold_counts_equal_pixel_counts() -> None:
    """``adaptive_counts`` and ``cumulative_counts`` count the pixels PySODMetrics binarises."""
    preds, gts = zip(*edge_cases().values(), strict=True)  # all 20x24
    batches = [(np.stack(preds), np.stack(gts)), tuple(x[None] for x in adaptive_tie_pair())]
    for pred_u8, gt_u8 in batches:
        batch = prepare_batch(torch.from_numpy(pred_u8), torch.from_numpy(gt_u8))
        for i in range(len(pred_u8)):
            ref_pred, ref_gt = py_sod_metrics.utils.prepare_data(pred_u8[i], gt_u8[i])
            selected = ref_pred >= min(2 * ref_pred.mean(), 1)
            levels = (ref_pred * 255).astype(np.uint8)
            for g, pixels in enumerate((~ref_gt, ref_gt)):
                assert int(batch.adaptive_counts[i, g]) == np.count_nonzero(selected[pixels])
                hist = np.bincount(levels[pixels], minlength=256)
                cumulative = np.cumsum(hist[::-1])  # [t]: pixels with level >= 255 - t
                np.testing.assert_array_equal(batch.cumulative_counts[i, g].numpy(), cumulative)


def test_batch_and_list_of_images_agree_exactly() -> None:
    preds, gts = (list(images) for images in zip(*edge_cases().values(), strict=True))
    as_batch, as_list = SODMetrics(metrics=NAMES), SODMetrics(metrics=NAMES)
    as_batch.update(np.stack(preds), np.stack(gts))
    as_list.update(preds, gts)  # equal sizes: scored as the same batch
    for got, want in zip(as_list.state_arrays(), as_batch.state_arrays(), strict=True):
        assert np.array_equal(got, want)
    as_batch.update(np.zeros((0, 4, 4), np.uint8), np.zeros((0, 4, 4), np.uint8))  # no-op
    assert as_batch.num_images == len(preds)
    with pytest.raises(ValueError, match="got 2 predictions and 1 ground truths"):
        as_batch.update(preds[:2], gts[:1])


def test_api_and_reset() -> None:
    metrics = SODMetrics(metrics=NAMES)
    assert set(NAMES) <= set(HIGHER_IS_BETTER) and set(HIGHER_IS_BETTER) == set(ALL_METRIC_NAMES)
    assert SODMetrics.HIGHER_IS_BETTER["MAE"] is False and SODMetrics.HIGHER_IS_BETTER["maxF"]
    with pytest.raises(RuntimeError, match="no images"):
        metrics.compute()
    with pytest.raises(RuntimeError, match="no images"):
        metrics.curves()
    pred, gt = edge_cases()["corner_object"]
    metrics.update(pred, gt)
    assert metrics.num_images == 1
    state = metrics.state_arrays()
    assert len(state) == 7
    metrics.reset()
    assert all(a is b for a, b in zip(state, metrics.state_arrays(), strict=True))
    assert metrics.num_images == 0
    assert all(float(np.abs(t).sum()) == 0 for t in metrics.state_arrays())
    with pytest.raises(RuntimeError):
        metrics.compute()
    with pytest.raises(ValueError, match="batch size"):
        metrics.update(np.zeros((2, 4, 4), np.uint8), np.zeros((3, 4, 4), np.uint8))
    with pytest.raises(TypeError):
        metrics.update(np.zeros((4, 4), np.int32), np.zeros((4, 4), np.uint8))


def test_accumulators_standalone() -> None:
    pred, gt = edge_cases()["one_pixel_object"]
    batch = prepare_batch(torch.from_numpy(pred)[None], torch.from_numpy(gt)[None])
    mae, fm = MAEAccumulator(), FmeasureAccumulator()
    mae.update(batch)
    fm.update(batch)
    ref, _ = reference([pred], [gt])
    assert mae.compute()["MAE"] == pytest.approx(ref["MAE"], abs=ATOL, rel=0)
    assert fm.compute()["adpF"] == pytest.approx(ref["adpF"], abs=ATOL, rel=0)
    with pytest.raises(RuntimeError):
        MAEAccumulator().compute()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_reference() -> None:
    rng = np.random.default_rng(10)
    preds, gts = structured_images(rng, 8, 64, 48)
    cases = list(edge_cases(64, 48).values())
    preds += [p for p, _ in cases]
    gts += [g for _, g in cases]
    metrics = SODMetrics(device="cuda", metrics=NAMES)
    metrics.update(torch.from_numpy(np.stack(preds)).cuda(), torch.from_numpy(np.stack(gts)).cuda())
    assert all(isinstance(t, np.ndarray) for t in metrics.state_arrays())  # on the CPU
    assert_matches(metrics, preds, gts)
    prob = torch.from_numpy(np.stack(preds)).cuda().double() / 255
    float_path = SODMetrics(device="cuda", metrics=NAMES)
    float_path.update(prob[:, None], torch.from_numpy(np.stack(gts)).cuda().float() / 255)
    assert float_path.compute() == metrics.compute()
