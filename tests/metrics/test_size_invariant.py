"""Size-invariant MAE and FmeasureV2 against PySODMetrics' SizeInvarianceMAE and
SizeInvarianceFmeasureV2, and the documented deviations (full ground truth)."""

import numpy as np
import pytest

from tests.metrics.cases import adaptive_tie_pair, all_cases, multi_object_pairs
from tests.metrics.test_fmeasure_v2 import REFERENCE
from utils.metrics import SODMetrics
from utils.metrics.fmeasure_v2 import HANDLERS
from utils.metrics.size_invariant import MIN_AREA, target_boxes

psm = pytest.importorskip("py_sod_metrics", reason="pysodmetrics is the reference")
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::RuntimeWarning")


def reference_fmeasure_v2(pairs: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
    """PySODMetrics' sample-based and whole-based si- variants, reduced as its own tests do."""
    handlers = {}
    for name, handler in REFERENCE.items():
        handlers[name] = handler(with_dynamic=True, with_adaptive=True)
        handlers[f"o{name}"] = handler(with_dynamic=True, with_adaptive=False, sample_based=False)
        handlers[f"b{name}"] = handler(False, False, with_binary=True)
        handlers[f"p{name}"] = handler(False, False, with_binary=True, sample_based=False)
    ref = psm.SizeInvarianceFmeasureV2(handlers)
    for pred, gt in pairs:
        ref.step(pred, gt)
    r = ref.get_results()
    want = {}
    for name in REFERENCE:
        per_sample = r[name]["dynamic"]  # one targets x 256 array per image
        want[f"si_max{name}"] = np.mean([s.max(axis=-1).mean() for s in per_sample])
        want[f"si_mean{name}"] = np.mean([s.mean(axis=-1).mean() for s in per_sample])
        want[f"si_adp{name}"] = r[name]["adaptive"]
        want[f"si_bin{name}"] = r[f"b{name}"]["binary"]
        want[f"si_max{name}_pooled"] = r[f"o{name}"]["dynamic"].max()
        want[f"si_mean{name}_pooled"] = r[f"o{name}"]["dynamic"].mean()
        want[f"si_bin{name}_pooled"] = r[f"p{name}"]["binary"]
    return want


def reference_mae(pred: np.ndarray, gt: np.ndarray) -> float:
    ref = psm.SizeInvarianceMAE()
    ref.step(pred, gt)
    return float(ref.get_results()["si_mae"])


def varied_pairs() -> list[list[tuple[np.ndarray, np.ndarray]]]:
    """The shared varied set by size, without full ground truths (the reference fails there),
    plus multi-object maps."""
    groups = [
        [(p, g) for p, g in zip(preds, gts, strict=True) if not (g > 128).all()]
        for preds, gts in all_cases().values()
    ]
    return [*groups, multi_object_pairs(12, seed=1)]


def test_size_invariant_fmeasure_v2_matches_pysodmetrics():
    names = [f"si_{v}{h}" for v in ("max", "mean", "adp", "bin") for h in HANDLERS]
    names += [f"si_{v}{h}_pooled" for v in ("max", "mean", "bin") for h in HANDLERS]
    checked = 0
    for pairs in varied_pairs():
        want = reference_fmeasure_v2(pairs)
        assert set(want) == set(names)
        metrics = SODMetrics(metrics=names)
        metrics.update([p for p, _ in pairs], [g for _, g in pairs])
        got = metrics.compute()
        for name in names:
            assert got[name] == pytest.approx(want[name], abs=1e-10, rel=0), name
        checked += len(pairs)
    assert checked >= 200


def test_size_invariant_mae_matches_pysodmetrics_per_image():
    compared = 0
    for pairs in varied_pairs():
        for pred, gt in pairs:
            want = reference_mae(pred, gt)
            if np.isnan(want):
                continue  # boxes covering the image: the documented deviation, tested below
            metrics = SODMetrics(metrics=["si_MAE"])
            metrics.update(pred, gt)
            assert metrics.compute()["si_MAE"] == pytest.approx(want, abs=1e-10, rel=0)
            compared += 1
    assert compared >= 200


def test_targets_are_large_components_or_the_largest_ones():
    gt = np.zeros((20, 30), bool)
    gt[1:3, 1:3] = True  # 4 pixels
    gt[10:12, 20:22] = True  # 4 pixels, ties the first
    gt[15, 5] = True  # 1 pixel
    assert target_boxes(gt) == [(slice(1, 3), slice(1, 3)), (slice(10, 12), slice(20, 22))]
    gt[5:15, 5:10] = True  # 50 pixels, joined by the pixel (15, 5) below them: 51
    boxes = target_boxes(gt)
    assert boxes == [(slice(5, 16), slice(5, 10))]  # 51 >= MIN_AREA: the only target
    assert MIN_AREA == 50
    assert target_boxes(np.zeros((4, 4), bool)) == []


def test_deviation_boxes_covering_the_image():
    """PySODMetrics fails on these (AssertionError for a full ground truth, NaN when the boxes
    cover the image); here the background term is 0: the mean of the per-target errors."""
    full = np.full((9, 11), 255, np.uint8)
    pred = np.zeros((9, 11), np.uint8)
    pred[:, :4] = 255  # prepared: 1 on 36 pixels, 0 on 63
    with pytest.raises(AssertionError):
        reference_mae(pred, full)
    metrics = SODMetrics(metrics=["si_MAE", "si_binRecall", "si_adpIoU"])
    metrics.update(pred, full)
    got = metrics.compute()
    assert got["si_MAE"] == pytest.approx(63 / 99, abs=1e-15)  # one target: the whole image
    assert got["si_binRecall"] == pytest.approx(36 / 99, abs=1e-15)
    # one L-shaped object whose box covers a 2x3 image without filling it: reference NaN
    # (0 * 0 / 0), here the target's error alone: 1 wrong pixel of 6
    gt = np.array([[255, 0, 0], [255, 255, 255]], np.uint8)
    pred = np.array([[255, 255, 0], [255, 255, 255]], np.uint8)
    assert np.isnan(reference_mae(pred, gt))
    metrics = SODMetrics(metrics=["si_MAE"])
    metrics.update(pred, gt)
    assert metrics.compute()["si_MAE"] == pytest.approx(1 / 6, abs=1e-15)


def test_background_term_hand_computed():
    # 2x3 image, targets (0, 0) and (1, 2) (1 pixel each, the largest components); the error is
    # 1 at (0, 1) only, outside both boxes: A_bg = 4, r = 4 / 2, score = r * 1 / A_bg / (T + r)
    gt = np.array([[255, 0, 0], [0, 0, 255]], np.uint8)
    pred = np.array([[255, 255, 0], [0, 0, 255]], np.uint8)
    expected = 2 * 1 / 4 / (2 + 2)
    assert reference_mae(pred, gt) == pytest.approx(expected, abs=1e-15)
    metrics = SODMetrics(metrics=["si_MAE"])
    metrics.update(pred, gt)
    assert metrics.compute()["si_MAE"] == pytest.approx(expected, abs=1e-15)


def test_adaptive_tie_uses_numpy_rounding_of_the_masked_mean():
    # the tie map of the shared set (2 * mean equals the level 119 / 255 in exact arithmetic;
    # np.mean's rounding decides) with a C-shaped object whose box is the whole image, so the
    # target's masked map is the map itself
    pred, _ = adaptive_tie_pair()
    gt = np.zeros_like(pred)
    gt[:, 0] = gt[0, :] = gt[-1, :] = 255
    want = reference_fmeasure_v2([(pred, gt)])
    names = [f"si_adp{name}" for name in HANDLERS]
    metrics = SODMetrics(metrics=names)
    metrics.update(pred, gt)
    for name, value in metrics.compute().items():
        assert value == pytest.approx(want[name], abs=1e-12, rel=0), name
