"""The SODMetrics front end with every metric family: batching, selection, errors."""

import numpy as np
import pytest
import torch

from tests.metrics.cases import all_cases
from utils.metrics import DEFAULT_METRICS, HIGHER_IS_BETTER, SODMetrics


def random_pairs(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:45, 0:61]
    preds, gts = [], []
    for i in range(n):
        cy, cx, r = rng.uniform(5, 40), rng.uniform(5, 56), rng.uniform(3, 15)
        d2 = (yy - cy) ** 2 + (xx - cx) ** 2
        gts.append(np.where(d2 < r**2, 255, 0) if i % 7 else np.zeros_like(d2))
        preds.append(np.exp(-d2 / (2 * r**2)) * 255 + rng.normal(0, 30, d2.shape))
    return (np.clip(preds, 0, 255).astype(np.uint8), np.array(gts, dtype=np.uint8))


def test_every_documented_metric_is_computed():
    assert DEFAULT_METRICS[:9] == (
        "MAE",
        "maxF",
        "meanF",
        "adpF",
        "wF",
        "Sm",
        "maxE",
        "meanE",
        "adpE",
    )
    assert set(DEFAULT_METRICS[9:]) == {
        "IoU",
        "F1",
        "precision",
        "recall",
        "accuracy",
        "IoU_img",
        "F1_img",
        "precision_img",
        "recall_img",
        "accuracy_img",
    }
    assert HIGHER_IS_BETTER["MAE"] is False
    preds, gts = random_pairs(5)
    metrics = SODMetrics()
    metrics.update(preds, gts)
    results = metrics.compute()
    assert list(results) == list(DEFAULT_METRICS)
    assert all(np.isfinite(v) for v in results.values())


def test_batch_size_does_not_change_results():
    preds, gts = random_pairs(32)
    one, sixteen = SODMetrics(), SODMetrics()
    for p, g in zip(preds, gts, strict=True):
        one.update(p, g)
    for start in range(0, 32, 16):
        sixteen.update(preds[start : start + 16], gts[start : start + 16])
    a, b = one.compute(), sixteen.compute()
    for name in DEFAULT_METRICS:  # equal up to the summation order of float64 sums
        assert a[name] == pytest.approx(b[name], abs=1e-15, rel=0), name


def test_float_probabilities_equal_their_8bit_maps():
    _, gts = random_pairs(6, seed=1)
    probs = torch.rand(6, 1, 45, 61, dtype=torch.float64)
    from_float, from_uint8 = SODMetrics(), SODMetrics()
    from_float.update(probs, torch.from_numpy(gts).unsqueeze(1) / 255.0)
    from_uint8.update((probs * 255).round().to(torch.uint8), torch.from_numpy(gts))
    assert from_float.compute() == from_uint8.compute()


def test_metric_selection_and_errors():
    preds, gts = random_pairs(3)
    metrics = SODMetrics(metrics=["Sm", "MAE"])
    metrics.update(preds, gts)
    assert list(metrics.compute()) == ["MAE", "Sm"]
    with pytest.raises(ValueError, match="unknown metric 'bogus'"):
        SODMetrics(metrics=["bogus"])
    with pytest.raises(RuntimeError, match="no images"):
        SODMetrics().compute()


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::RuntimeWarning")  # the reference's
def test_every_sod_metric_matches_pysodmetrics_on_varied_maps():
    """All SOD metrics at once on ~200 varied pairs (random, blobs, thin lines, empty and full
    masks, constant maps, one-pixel objects, border objects) of several odd sizes."""
    psm = pytest.importorskip(
        "py_sod_metrics",
        reason="pysodmetrics (requirements-dev.txt) is the reference to compare with",
    )
    checked = 0
    for (h, w), (preds, gts) in all_cases().items():
        if min(h, w) < 3:
            continue  # 1- and 2-pixel-wide images: the reference's Sm is NaN there (see README)
        refs = [psm.MAE(), psm.Fmeasure(), psm.WeightedFmeasure(), psm.Smeasure(), psm.Emeasure()]
        for pred, gt in zip(preds, gts, strict=True):
            for ref in refs:
                ref.step(pred, gt)
        r = {k: v for ref in refs for k, v in ref.get_results().items()}
        want = {"MAE": r["mae"], "maxF": r["fm"]["curve"].max(), "meanF": r["fm"]["curve"].mean(),
                "adpF": r["fm"]["adp"], "wF": r["wfm"], "Sm": r["sm"],
                "maxE": r["em"]["curve"].max(), "meanE": r["em"]["curve"].mean(),
                "adpE": r["em"]["adp"]}  # fmt: skip
        metrics = SODMetrics(metrics=list(want))
        metrics.update(np.stack(preds), np.stack(gts))
        got = metrics.compute()
        for name, value in want.items():
            if name == "Sm" and np.isnan(value):
                continue  # a reference NaN (border object): tests/test_smeasure_emeasure.py
            tolerance = 1e-6 if name == "wF" else 1e-10  # wF: distance-transform tie-breaking
            assert got[name] == pytest.approx(value, abs=tolerance, rel=0), (name, h, w)
        checked += len(preds)
    assert checked >= 150
