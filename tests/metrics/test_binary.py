"""Tests of utils.metrics.binary (foreground IoU / F1 / precision / recall / accuracy)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from utils.metrics import SODMetrics, prepare_batch, prob_to_uint8
from utils.metrics.binary import BinaryAccumulator

SCORES = ("IoU", "F1", "precision", "recall", "accuracy")
NAMES = (*SCORES, *(f"{name}_img" for name in SCORES))
ATOL = 1e-12


# --------------------------------------------------------------------------------------------
# Reference and helpers
# --------------------------------------------------------------------------------------------


def _div(num: float, den: float) -> float:
    return 1.0 if den == 0 else num / den


def reference_scores(tp: float, fp: float, fn: float, tn: float) -> dict[str, float]:
    return {
        "IoU": _div(tp, tp + fp + fn),
        "F1": _div(2 * tp, 2 * tp + fp + fn),
        "precision": _div(tp, tp + fp),
        "recall": _div(tp, tp + fn),
        "accuracy": _div(tp + tn, tp + fp + fn + tn),
    }


def reference(preds: list[np.ndarray], gts: list[np.ndarray]) -> dict[str, float]:
    """Straightforward numpy: per-pixel binarisation, per-image and pooled scores."""
    totals = np.zeros(4)
    per_image = []
    for pred, gt in zip(preds, gts, strict=True):
        p, g = pred >= 128, gt > 128
        counts = [np.sum(p & g), np.sum(p & ~g), np.sum(~p & g), np.sum(~p & ~g)]
        totals += counts
        per_image.append(reference_scores(*(float(c) for c in counts)))
    pooled = reference_scores(*totals)
    result = dict(pooled)
    for name in SCORES:
        result[f"{name}_img"] = float(np.mean([scores[name] for scores in per_image]))
    return result


def accumulate(preds, gts, batch: int | None = None) -> BinaryAccumulator:
    """A BinaryAccumulator fed stacked uint8 batches (images of one size)."""
    acc = BinaryAccumulator()
    preds, gts = np.stack(preds), np.stack(gts)
    step = batch or len(preds)
    for i in range(0, len(preds), step):
        acc.update(
            prepare_batch(
                torch.from_numpy(preds[i : i + step]), torch.from_numpy(gts[i : i + step])
            )
        )
    return acc


def random_pairs(seed: int, count: int, shape=(24, 32)) -> tuple[list, list]:
    """Blob-like uint8 maps and 0/255 masks, with some empty / full / grey-level edge cases."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    preds, gts = [], []
    for _ in range(count):
        cy, cx = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
        r = rng.uniform(2, 12)
        dist = np.hypot(yy - cy, xx - cx)
        gt = np.where(dist < r, 255, 0).astype(np.uint8)
        prob = 1 / (1 + np.exp(dist - r - rng.normal(0, 2)))
        pred = np.clip(prob * 255 + rng.normal(0, 30, shape), 0, 255).round().astype(np.uint8)
        preds.append(pred)
        gts.append(gt)
    # grey levels around both thresholds
    preds[0] = rng.choice(np.array([0, 127, 128, 129, 255], np.uint8), shape)
    gts[0] = rng.choice(np.array([0, 128, 129, 255], np.uint8), shape)
    return preds, gts


# --------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------


def test_names_and_directions():
    assert tuple(BinaryAccumulator.HIGHER_IS_BETTER) == NAMES
    assert all(BinaryAccumulator.HIGHER_IS_BETTER.values())
    preds, gts = random_pairs(0, 3)
    assert tuple(accumulate(preds, gts).compute()) == NAMES


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_numpy_reference(seed: int):
    preds, gts = random_pairs(seed, 20)
    ours = accumulate(preds, gts).compute()
    ref = reference(preds, gts)
    for name in NAMES:
        assert ours[name] == pytest.approx(ref[name], abs=ATOL), name


def test_several_image_sizes():
    preds_a, gts_a = random_pairs(3, 5, (20, 30))
    preds_b, gts_b = random_pairs(4, 7, (41, 17))
    acc = BinaryAccumulator()
    for preds, gts in ((preds_a, gts_a), (preds_b, gts_b)):
        acc.update(
            prepare_batch(torch.from_numpy(np.stack(preds)), torch.from_numpy(np.stack(gts)))
        )
    ours = acc.compute()
    ref = reference(preds_a + preds_b, gts_a + gts_b)
    for name in NAMES:
        assert ours[name] == pytest.approx(ref[name], abs=ATOL), name
    assert acc.num_images == 12


def test_batch_1_vs_16():
    preds, gts = random_pairs(5, 40)
    one = accumulate(preds, gts, batch=1).compute()
    sixteen = accumulate(preds, gts, batch=16).compute()
    for name in NAMES:
        assert one[name] == pytest.approx(sixteen[name], abs=1e-14), name


def test_summed_state_equals_single_accumulator():
    """Summing the state tensors of two accumulators (an all-reduce) gives the union."""
    preds, gts = random_pairs(6, 30)
    whole = accumulate(preds, gts, batch=8)
    parts = [accumulate(preds[:11], gts[:11]), accumulate(preds[11:], gts[11:], batch=4)]
    merged = BinaryAccumulator()
    for target, *sources in zip(
        merged.state_arrays(), *(part.state_arrays() for part in parts), strict=True
    ):
        assert target.dtype == np.float64
        for source in sources:
            target += source
    assert merged.num_images == 30
    a, b = merged.compute(), whole.compute()
    for name in NAMES:
        assert a[name] == pytest.approx(b[name], abs=1e-14), name


def test_binarisation_without_normalisation():
    """A dim map (all values < 128) has no foreground: no min-max stretch as in the SOD metrics."""
    gt = np.zeros((8, 8), np.uint8)
    gt[2:6, 2:6] = 255
    pred = np.where(gt > 0, 100, 10).astype(np.uint8)
    res = accumulate([pred], [gt]).compute()
    assert res["IoU"] == 0.0 and res["recall"] == 0.0
    assert res["precision"] == 1.0  # nothing predicted: 0 / 0
    assert res["accuracy"] == pytest.approx(48 / 64)


def test_thresholds():
    """Prediction: level >= 128, i.e. probability >= 0.5 after round(p * 255); GT: > 128."""
    prob = torch.tensor([[0.49, 0.4990, 0.5, 0.5001, 0.51, 1.0]], dtype=torch.float64)
    pred = prob_to_uint8(prob)
    assert pred.tolist() == [[125, 127, 128, 128, 130, 255]]
    gt = torch.tensor([[0, 0, 128, 129, 129, 255]], dtype=torch.uint8)
    confusion = BinaryAccumulator.confusion(prepare_batch(pred[None], gt[None]))
    # pixels: 0 TN, 1 TN, 2 FP (gt 128 is background), 3..5 TP
    assert confusion.tolist() == [[3, 1, 0, 2]]


@pytest.mark.parametrize(
    ("pred_on", "gt_on", "expected"),
    [
        # empty GT and empty prediction: every ratio is 0 / 0 -> 1
        (False, False, {"IoU": 1, "F1": 1, "precision": 1, "recall": 1, "accuracy": 1}),
        # empty GT, predicted foreground: recall 0 / 0 -> 1, the rest 0
        (True, False, {"IoU": 0, "F1": 0, "precision": 0, "recall": 1, "accuracy": 0.75}),
        # foreground missed entirely: precision 0 / 0 -> 1, the rest 0
        (False, True, {"IoU": 0, "F1": 0, "precision": 1, "recall": 0, "accuracy": 0.75}),
    ],
)
def test_zero_denominators_per_image_and_pooled(pred_on, gt_on, expected):
    pred = np.zeros((4, 4), np.uint8)
    gt = np.zeros((4, 4), np.uint8)
    pred[:2, :2] = 255 if pred_on else 0
    gt[:2, :2] = 255 if gt_on else 0
    res = accumulate([pred, pred], [gt, gt]).compute()
    for name, value in expected.items():
        assert res[name] == value, name
        assert res[f"{name}_img"] == value, name
    ref = reference([pred, pred], [gt, gt])
    for name in NAMES:
        assert res[name] == pytest.approx(ref[name], abs=ATOL), name


def test_empty_images_count_in_per_image_means():
    """Images with empty GT and empty prediction are not excluded: they score 1."""
    gt = np.zeros((4, 4), np.uint8)
    gt[:2] = 255
    pred = np.zeros((4, 4), np.uint8)
    pred[:1] = 255  # IoU 4 / 8
    empty = np.zeros((4, 4), np.uint8)
    res = accumulate([pred, empty], [gt, empty]).compute()
    assert res["IoU_img"] == pytest.approx((0.5 + 1.0) / 2)
    assert res["IoU"] == pytest.approx(0.5)  # pooled: the empty image adds no TP, FP or FN
    assert res["recall_img"] == pytest.approx(0.75)
    assert res["accuracy"] == pytest.approx(28 / 32)


def test_empty_and_reset():
    acc = BinaryAccumulator()
    with pytest.raises(RuntimeError, match="no images"):
        acc.compute()
    preds, gts = random_pairs(7, 4)
    acc = accumulate(preds, gts)
    acc.reset()
    assert acc.num_images == 0
    with pytest.raises(RuntimeError):
        acc.compute()


def test_through_sod_metrics_float_probabilities():
    rng = np.random.default_rng(8)
    prob = torch.from_numpy(rng.uniform(0, 1, (6, 1, 20, 24)))
    gt = torch.from_numpy(rng.uniform(0, 1, (6, 1, 20, 24)) > 0.6)
    metrics = SODMetrics(metrics=list(NAMES))
    metrics.update(prob, gt)
    ours = metrics.compute()
    pred_u8 = prob_to_uint8(prob)[:, 0].numpy()
    ref = reference(list(pred_u8), list(gt[:, 0].numpy().astype(np.uint8) * 255))
    for name in NAMES:
        assert ours[name] == pytest.approx(ref[name], abs=ATOL), name
