"""FmeasureV2 family (every handler; dynamic, adaptive, binary variants) against PySODMetrics,
and the metric selection: new names selectable, the default set unchanged."""

import numpy as np
import pytest
import torch

from tests.metrics.cases import adaptive_tie_pair, all_cases
from utils.metrics import (
    ALL_METRIC_NAMES,
    DEFAULT_METRICS,
    HIGHER_IS_BETTER,
    FmeasureV2Accumulator,
    SODMetrics,
    prepare_batch,
    with_defaults,
)
from utils.metrics.fmeasure_v2 import CURVE_HANDLERS, HANDLERS

psm = pytest.importorskip("py_sod_metrics", reason="pysodmetrics is the reference")

# our handler name -> PySODMetrics handler class (its aliases map to the same names)
REFERENCE = {
    "IoU": psm.IOUHandler,
    "Dice": psm.DICEHandler,
    "BER": psm.BERHandler,
    "Kappa": psm.KappaHandler,
    "OA": psm.OverallAccuracyHandler,
    "Precision": psm.PrecisionHandler,
    "Recall": psm.RecallHandler,
    "Specificity": psm.SpecificityHandler,
    "FPR": psm.FPRHandler,
    "F": psm.FmeasureHandler,
}

TODAY = (
    *("MAE", "maxF", "meanF", "adpF", "wF", "Sm", "maxE", "meanE", "adpE"),
    *("IoU", "F1", "precision", "recall", "accuracy"),
    *("IoU_img", "F1_img", "precision_img", "recall_img", "accuracy_img"),
)


def reference_results(preds: list[np.ndarray], gts: list[np.ndarray]) -> dict[str, float]:
    """Every FmeasureV2 metric of PySODMetrics under our names."""
    handlers = {}
    for name, handler in REFERENCE.items():
        handlers[name] = handler(with_dynamic=True, with_adaptive=True)
        handlers[f"bin{name}"] = handler(False, False, with_binary=True)
        handlers[f"pooled{name}"] = handler(False, False, with_binary=True, sample_based=False)
    ref = psm.FmeasureV2(handlers)
    for pred, gt in zip(preds, gts, strict=True):
        ref.step(pred, gt)
    r = ref.get_results()
    want = {}
    for name in REFERENCE:
        prefix = "" if name in CURVE_HANDLERS else "ref_"  # F: maxF, meanF, adpF
        want[f"{prefix}max{name}"] = r[name]["dynamic"].max()
        want[f"{prefix}mean{name}"] = r[name]["dynamic"].mean()
        want[f"{prefix}adp{name}"] = r[name]["adaptive"]
        want[f"bin{name}"] = r[f"bin{name}"]["binary"]
        want[f"bin{name}_pooled"] = r[f"pooled{name}"]["binary"]
    return want


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::RuntimeWarning")
def test_every_handler_matches_pysodmetrics_on_varied_maps():
    """~240 varied pairs (empty / full GT, constant maps, one-pixel objects, odd sizes)."""
    checked = 0
    for (h, w), (preds, gts) in all_cases().items():
        want = reference_results(preds, gts)
        names = [name for name in want if not name.startswith("ref_")]
        metrics = SODMetrics(metrics=[*names, "maxF", "meanF", "adpF"])
        metrics.update(np.stack(preds), np.stack(gts))
        got = metrics.compute()
        for name in names:
            assert got[name] == pytest.approx(want[name], abs=1e-10, rel=0), (name, h, w)
        # the F handler's dynamic and adaptive variants are our existing maxF, meanF, adpF
        for ours, theirs in (("maxF", "ref_maxF"), ("meanF", "ref_meanF"), ("adpF", "ref_adpF")):
            assert got[ours] == pytest.approx(want[theirs], abs=1e-10, rel=0), (ours, h, w)
        checked += len(preds)
    assert checked >= 200


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::RuntimeWarning")
def test_adaptive_tie_uses_numpy_rounding_of_the_mean():
    pred, gt = adaptive_tie_pair()
    want = reference_results([pred], [gt])
    metrics = SODMetrics(metrics=[f"adp{name}" for name in CURVE_HANDLERS])
    metrics.update(pred, gt)
    for name, value in metrics.compute().items():
        assert value == pytest.approx(want[name], abs=1e-12, rel=0), name


def test_hand_computed_confusion_scores():
    # 2x4 map: prediction (after stretch) [[1, 1, 0, 0], [1, 0, 0, 0]] > 0.5, gt [[1, 0, 0, 0],
    # [1, 1, 0, 0]]: TP = 2, FP = 1, FN = 1, TN = 4, N = 8.
    pred = np.array([[255, 255, 0, 0], [255, 0, 0, 0]], np.uint8)
    gt = np.array([[255, 0, 0, 0], [255, 255, 0, 0]], np.uint8)
    metrics = SODMetrics(metrics=[f"bin{name}" for name in HANDLERS])
    metrics.update(pred, gt)
    got = metrics.compute()
    oa = 6 / 8
    chance = (3 * 3 + 5 * 6) / 64  # PySODMetrics' (TP+FP)(TP+FN) + (TN+FN)(TN+TP), over N^2
    expected = {
        "binIoU": 2 / 4,
        "binDice": 4 / 6,
        "binPrecision": 2 / 3,
        "binRecall": 2 / 3,
        "binSpecificity": 4 / 5,
        "binFPR": 1 / 5,
        "binOA": oa,
        "binBER": 1 - 0.5 * (2 / 3 + 4 / 5),
        "binKappa": (oa - chance) / (1 - chance),
        "binF": 2 / 3,  # P == R
    }
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, abs=1e-15), name


def test_zero_denominators_give_zero_as_pysodmetrics():
    # empty ground truth, empty prediction: TP = FP = FN = 0, TN = N
    metrics = SODMetrics(metrics=["binIoU", "binRecall", "binSpecificity", "binBER", "binKappa"])
    metrics.update(np.zeros((3, 5), np.uint8), np.zeros((3, 5), np.uint8))
    got = metrics.compute()
    assert got["binIoU"] == 0.0 and got["binRecall"] == 0.0  # 0 / 0 -> 0
    assert got["binSpecificity"] == 1.0
    assert got["binBER"] == 0.5  # 1 - (0 + 1) / 2
    assert got["binKappa"] == 0.0  # chance agreement 1: 0 / 0 -> 0


def test_curves_are_dataset_means_in_threshold_order():
    preds, gts = all_cases()[(32, 32)]
    acc = FmeasureV2Accumulator()
    acc.update(prepare_batch(torch.from_numpy(np.stack(preds)), torch.from_numpy(np.stack(gts))))
    curves = acc.curves()
    assert set(curves) == set(CURVE_HANDLERS)
    results = acc.compute()
    assert results["maxIoU"] == pytest.approx(curves["IoU"].max(), abs=1e-15)
    assert curves["Recall"][-1] == pytest.approx(np.mean([(g > 128).any() for g in gts]))
    assert curves["FPR"][-1] == pytest.approx(np.mean([not (g > 128).all() for g in gts]))


def test_default_set_is_unchanged_and_new_names_are_selectable():
    assert DEFAULT_METRICS == TODAY
    metrics = SODMetrics()
    assert metrics.names == TODAY
    assert {type(acc).__name__ for acc in metrics._accumulators} == {
        "MAEAccumulator",
        "FmeasureAccumulator",
        "WeightedFAccumulator",
        "SmeasureAccumulator",
        "EmeasureAccumulator",
        "BinaryAccumulator",
    }
    assert len(ALL_METRIC_NAMES) == len(set(ALL_METRIC_NAMES)) == len(HIGHER_IS_BETTER)
    for name in ("maxIoU", "binDice_pooled", "relaxFb", "si_MAE", "maxMSIoU", "HCE"):
        assert name in ALL_METRIC_NAMES
    assert not HIGHER_IS_BETTER["binBER"] and not HIGHER_IS_BETTER["maxFPR"]
    assert not HIGHER_IS_BETTER["HCE"] and not HIGHER_IS_BETTER["si_MAE"]
    assert with_defaults("maxIoU", None) == (*TODAY, "maxIoU")
    assert with_defaults("MAE") == TODAY
    with pytest.raises(ValueError, match="unknown metric 'nope'"):
        with_defaults("nope")
    # selected metrics come back in ALL_METRIC_NAMES order
    metrics = SODMetrics(metrics=["binIoU", "MAE", "maxIoU"])
    metrics.update(*all_cases()[(17, 23)])
    assert list(metrics.compute()) == ["MAE", "maxIoU", "binIoU"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_every_optional_metric_on_cuda_equals_cpu():
    pytest.importorskip("skimage", reason="HCE needs scikit-image")
    names = [name for name in ALL_METRIC_NAMES if name not in DEFAULT_METRICS]
    preds, gts = all_cases()[(31, 45)]
    on_cpu, on_cuda = SODMetrics(metrics=names), SODMetrics("cuda", metrics=names)
    on_cpu.update(np.stack(preds), np.stack(gts))
    on_cuda.update(torch.from_numpy(np.stack(preds)).cuda(), torch.from_numpy(np.stack(gts)).cuda())
    want, got = on_cpu.compute(), on_cuda.compute()
    for name in names:
        assert got[name] == pytest.approx(want[name], abs=1e-12, rel=0), name
