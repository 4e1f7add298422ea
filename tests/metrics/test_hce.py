"""Human correction effort (HCE) against PySODMetrics' HumanCorrectionEffortMeasure."""

import numpy as np
import pytest

from tests.metrics.cases import all_cases, multi_object_pairs
from utils.metrics import SODMetrics
from utils.metrics.hce import human_correction_effort

psm = pytest.importorskip("py_sod_metrics", reason="pysodmetrics is the reference")
pytest.importorskip("skimage", reason="HCE needs scikit-image (the ground truth's skeleton)")


def reference(pred: np.ndarray, gt: np.ndarray) -> float:
    ref = psm.HumanCorrectionEffortMeasure()
    ref.step(pred, gt)
    return float(ref.get_results()["hce"])


def test_hce_matches_pysodmetrics_image_by_image():
    """The shared varied set plus larger multi-object maps (thin lines, noise, several blobs),
    where the contour segments, their joining and the independent regions all occur."""
    pairs = [pair for preds, gts in all_cases().values() for pair in zip(preds, gts, strict=True)]
    pairs += multi_object_pairs(40, seed=4)
    values = []
    for pred, gt in pairs:
        metrics = SODMetrics(metrics=["HCE"])
        metrics.update(pred, gt)
        got = metrics.compute()["HCE"]
        assert got == reference(pred, gt)
        values.append(got)
    assert len(values) >= 270
    assert len(set(values)) > 20  # the set exercises many different efforts


def test_dataset_value_is_the_mean_over_images():
    pairs = multi_object_pairs(5, seed=6)
    metrics = SODMetrics(metrics=["HCE"])
    metrics.update([p for p, _ in pairs], [g for _, g in pairs])
    want = np.mean([reference(p, g) for p, g in pairs])
    assert metrics.compute()["HCE"] == pytest.approx(want, abs=1e-12)


def test_hand_computed_cases():
    gt = np.zeros((40, 40), bool)
    gt[5:15, 5:15] = True
    assert human_correction_effort(gt.copy(), gt) == 0  # perfect: nothing to correct
    # a small false blob (2x2) is forgiven: 5 erosions of the union remove it
    pred = gt.copy()
    pred[0:2, 30:32] = True
    assert human_correction_effort(pred, gt) == 0
    # a 15x15 false blob far from the object survives the erosions; its contour touches no
    # correct region, so it needs no polygon point but one click as an independent region
    pred = gt.copy()
    pred[22:37, 22:37] = True
    assert human_correction_effort(pred, gt) == 1
    assert reference(np.where(pred, 255, 0).astype(np.uint8), np.where(gt, 255, 0)) == 1
