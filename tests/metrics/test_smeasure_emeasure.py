"""Tests of the S-measure and E-measure accumulators against PySODMetrics 1.6.2."""

from __future__ import annotations

import warnings
from functools import cache

import numpy as np
import pytest
import torch

from tests.metrics.cases import SIZES, adaptive_tie_pair, all_cases
from utils.metrics.emeasure import EmeasureAccumulator
from utils.metrics.prepare import prepare_batch
from utils.metrics.smeasure import SmeasureAccumulator

py_sod_metrics = pytest.importorskip(
    "py_sod_metrics", reason="pysodmetrics (requirements-dev.txt) is the reference to compare with"
)

ATOL = 1e-10


# --------------------------------------------------------------------------------------------
# Reference
# --------------------------------------------------------------------------------------------


class EmptyQuadrantSmeasure(py_sod_metrics.Smeasure):
    """PySODMetrics' Smeasure where an empty quadrant scores 0 instead of NaN (our rule)."""

    def ssim(self, pred: np.ndarray, gt: np.ndarray) -> float:
        return 0.0 if pred.size == 0 else super().ssim(pred, gt)


def reference(preds: list[np.ndarray], gts: list[np.ndarray]) -> dict:
    """PySODMetrics fed uint8 images one by one: per-image values and dataset results."""
    sm, sm_defined, em = (
        py_sod_metrics.Smeasure(),
        EmptyQuadrantSmeasure(),
        py_sod_metrics.Emeasure(),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # mean of an empty slice (the NaN cases)
        for pred, gt in zip(preds, gts, strict=True):
            sm.step(pred, gt)
            sm_defined.step(pred, gt)
            em.step(pred, gt)
    curve = em.get_results()["em"]["curve"]
    return {
        "sm": np.array(sm.sms, dtype=np.float64),
        "sm_defined": np.array(sm_defined.sms, dtype=np.float64),
        "adp": np.array(em.adaptive_ems, dtype=np.float64),
        "curves": np.array(em.changeable_ems, dtype=np.float64),
        "Sm": float(sm_defined.get_results()["sm"]),
        "maxE": float(curve.max()),
        "meanE": float(curve.mean()),
        "adpE": float(em.get_results()["em"]["adp"]),
        "emeasure": curve,
    }


def accumulate(preds, gts, batch: int | None = None):
    sm, em = SmeasureAccumulator(), EmeasureAccumulator()
    preds_t, gts_t = torch.from_numpy(np.stack(preds)), torch.from_numpy(np.stack(gts))
    step = batch or len(preds)
    for i in range(0, len(preds), step):
        prepared = prepare_batch(preds_t[i : i + step], gts_t[i : i + step])
        sm.update(prepared)
        em.update(prepared)
    return sm, em


def per_image(preds, gts, device: str = "cpu"):
    prepared = prepare_batch(
        torch.from_numpy(np.stack(preds)).to(device), torch.from_numpy(np.stack(gts)).to(device)
    )
    adaptive, curves = EmeasureAccumulator().scores(prepared)
    sm = SmeasureAccumulator().scores(prepared)
    return sm, adaptive, curves["emeasure"]


def assert_dataset_matches(sm: SmeasureAccumulator, em: EmeasureAccumulator, ref: dict) -> None:
    got = {**sm.compute(), **em.compute()}
    assert list(got) == ["Sm", "maxE", "meanE", "adpE"]
    for name, value in got.items():
        assert value == pytest.approx(ref[name], abs=ATOL, rel=0), name
    curve = em.curves()["emeasure"]
    assert curve.shape == (256,)
    np.testing.assert_allclose(curve, ref["emeasure"], atol=ATOL, rtol=0)


# --------------------------------------------------------------------------------------------
# Test images
# --------------------------------------------------------------------------------------------


@cache
def group_reference(size: tuple[int, int]) -> dict:
    return reference(*all_cases()[size])


# --------------------------------------------------------------------------------------------
# Comparison with PySODMetrics
# --------------------------------------------------------------------------------------------


def test_enough_varied_cases() -> None:
    groups = all_cases()
    assert sum(len(preds) for preds, _ in groups.values()) >= 200
    nan_cases = sum(int(np.isnan(group_reference(size)["sm"]).sum()) for size in groups)
    assert nan_cases > 0  # the PySODMetrics NaN cases are covered


@pytest.mark.parametrize("size", SIZES, ids=[f"{h}x{w}" for h, w in SIZES])
def test_per_image_matches_reference(size: tuple[int, int]) -> None:
    preds, gts = all_cases()[size]
    ref = group_reference(size)
    sm, adaptive, curves = per_image(preds, gts)
    # Where PySODMetrics' S-measure is defined we match it; elsewhere (NaN) we match it with
    # empty quadrants scoring 0.
    defined = ~np.isnan(ref["sm"])
    np.testing.assert_array_equal(ref["sm"][defined], ref["sm_defined"][defined])
    assert np.isfinite(sm).all()
    np.testing.assert_allclose(sm, ref["sm_defined"], atol=ATOL, rtol=0)
    np.testing.assert_allclose(adaptive, ref["adp"], atol=ATOL, rtol=0)
    np.testing.assert_allclose(curves, ref["curves"], atol=ATOL, rtol=0)


@pytest.mark.parametrize("size", SIZES, ids=[f"{h}x{w}" for h, w in SIZES])
def test_dataset_matches_reference(size: tuple[int, int]) -> None:
    preds, gts = all_cases()[size]
    assert_dataset_matches(*accumulate(preds, gts, batch=16), group_reference(size))


def test_one_pixel_image() -> None:
    # N - 1 + eps == eps: PySODMetrics' E-measure is ~4.5e15 times the count, reproduced exactly.
    preds = [np.array([[v]], np.uint8) for v in (0, 200, 255, 0, 200, 255)]
    gts = [np.array([[v]], np.uint8) for v in (0, 0, 0, 255, 255, 255)]
    ref = reference(preds, gts)
    sm, adaptive, curves = per_image(preds, gts)
    np.testing.assert_array_equal(sm, ref["sm"])
    np.testing.assert_array_equal(adaptive, ref["adp"])
    np.testing.assert_array_equal(curves, ref["curves"])


def test_reference_nan_case_is_finite_here() -> None:
    # One foreground pixel on the last row: the centroid splits at row h, the bottom quadrants
    # are empty and PySODMetrics' S-measure is NaN.
    rng = np.random.default_rng(5)
    pred = rng.integers(0, 256, (20, 24), np.uint8)
    gt = np.zeros((20, 24), np.uint8)
    gt[19, 5] = 255
    ref = reference([pred], [gt])
    assert np.isnan(ref["sm"][0])
    sm = SmeasureAccumulator()
    sm.update(prepare_batch(torch.from_numpy(pred)[None], torch.from_numpy(gt)[None]))
    assert np.isfinite(sm.compute()["Sm"])
    assert sm.compute()["Sm"] == pytest.approx(ref["sm_defined"][0], abs=ATOL, rel=0)


def test_constant_quadrant_follows_numpy_mean(monkeypatch: pytest.MonkeyPatch) -> None:
    # Constant prediction 128/255: a quadrant with a uniform ground truth scores 1 only when
    # np.mean of its 2 x 17 values is exactly 128/255, which it is not.
    pred = np.full((20, 24), 128, np.uint8)
    gt = np.zeros((20, 24), np.uint8)
    gt[1, 16] = 255  # split at (2, 17)
    ref = reference([pred], [gt])
    got = per_image([pred], [gt])[0]
    assert got[0] == pytest.approx(ref["sm"][0], abs=ATOL, rel=0)
    # Without the numpy check the quadrant would score 0 instead of 1 (or the reverse).
    monkeypatch.setattr(SmeasureAccumulator, "_numpy_mean_check", staticmethod(lambda *a: None))
    assert abs(per_image([pred], [gt])[0][0] - ref["sm"][0]) > 0.01


def test_adaptive_threshold_tie_follows_numpy_rounding() -> None:
    # 2 * mean == 119 / 255 in exact arithmetic; np.mean's rounding decides (see test_metrics).
    pred, gt = adaptive_tie_pair()
    assert_dataset_matches(*accumulate([pred], [gt]), reference([pred], [gt]))


# --------------------------------------------------------------------------------------------
# Accumulation
# --------------------------------------------------------------------------------------------


def test_batch_size_does_not_change_results() -> None:
    preds, gts = all_cases()[(32, 32)]
    assert len(preds) > 16
    one, sixteen = per_image(preds[:1], gts[:1]), per_image(preds[:16], gts[:16])
    for a, b in zip(one, sixteen, strict=True):
        np.testing.assert_array_equal(a[0], b[0])  # per-image values: bit-identical
    by_one, by_sixteen = accumulate(preds, gts, batch=1), accumulate(preds, gts, batch=16)
    for acc_one, acc_sixteen in zip(by_one, by_sixteen, strict=True):
        for name, value in acc_one.compute().items():  # sums: only the order differs
            assert value == pytest.approx(acc_sixteen.compute()[name], abs=1e-14, rel=0)


def test_split_state_sum_equals_single_accumulator() -> None:
    preds, gts = all_cases()[(31, 45)]
    single = accumulate(preds, gts)
    first, second = accumulate(preds[:10], gts[:10]), accumulate(preds[10:], gts[10:], batch=7)
    for whole, part_a, part_b in zip(single, first, second, strict=True):
        for ta, tb in zip(part_a.state_arrays(), part_b.state_arrays(), strict=True):
            ta += tb  # what an all-reduce does
        assert part_a.num_images == len(preds)
        for name, value in part_a.compute().items():
            assert value == pytest.approx(whole.compute()[name], abs=1e-14, rel=0)
    np.testing.assert_allclose(
        first[1].curves()["emeasure"], single[1].curves()["emeasure"], atol=1e-14
    )


def test_api_reset_and_curve_order() -> None:
    assert SmeasureAccumulator.HIGHER_IS_BETTER == {"Sm": True}
    assert EmeasureAccumulator.HIGHER_IS_BETTER == {"maxE": True, "meanE": True, "adpE": True}
    for acc in (SmeasureAccumulator(), EmeasureAccumulator()):
        assert acc.state_arrays()[-1].dtype == np.float64
        with pytest.raises(RuntimeError):
            acc.compute()
    with pytest.raises(RuntimeError):
        EmeasureAccumulator().curves()
    # A binary prediction equal to the gt: perfect at threshold 255 (index 0), and at
    # threshold 0 (index 255) every pixel is positive.
    gt = np.zeros((10, 12), np.uint8)
    gt[2:6, 3:8] = 255
    sm, em = accumulate([gt], [gt])
    curve = em.curves()["emeasure"]
    assert curve[0] == pytest.approx(1.0, abs=0.02) and curve[0] > curve[255]
    assert sm.compute()["Sm"] == pytest.approx(1.0, abs=1e-9)
    for acc in (sm, em):
        acc.reset()
        assert acc.num_images == 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_reference() -> None:
    for size in ((31, 45), (64, 57), (1, 9)):
        preds, gts = all_cases()[size]
        ref = group_reference(size)
        sm, adaptive, curves = per_image(preds, gts, device="cuda")
        np.testing.assert_allclose(sm, ref["sm_defined"], atol=ATOL, rtol=0)
        np.testing.assert_allclose(adaptive, ref["adp"], atol=ATOL, rtol=0)
        np.testing.assert_allclose(curves, ref["curves"], atol=ATOL, rtol=0)
