"""Tests of the torch-free metric path: MetricSet against SODMetrics and PySODMetrics, the choice
of metric set in scoring, and evaluate.py on the CPU running without importing torch."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from tests.helpers import ROOT, write_png
from tests.metrics.test_weighted_f import dataset
from utils.metrics import DEFAULT_METRICS, MetricSet, SODMetrics
from utils.metrics.scoring import metric_set

py_sod_metrics = pytest.importorskip(
    "py_sod_metrics", reason="pysodmetrics (requirements-dev.txt) is the reference to compare with"
)


def mixed_pairs() -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Blobs, lines, salt, single pixels, borders and symmetric masks in two sizes."""
    preds_a, gts_a = dataset(11, 37, 53, 2)
    preds_b, gts_b = dataset(12, 48, 40, 2)
    return preds_a + preds_b, gts_a + gts_b


def test_metric_set_equals_sod_metrics_bit_for_bit_and_the_reference() -> None:
    preds, gts = mixed_pairs()
    ours = MetricSet()
    ours.update(preds, gts)
    torch_front = SODMetrics("cpu")
    torch_front.update([torch.from_numpy(p) for p in preds], [torch.from_numpy(g) for g in gts])
    assert ours.compute() == torch_front.compute()
    for mine, other in zip(ours.state_arrays(), torch_front.state_arrays(), strict=True):
        np.testing.assert_array_equal(mine, other)
    np.testing.assert_array_equal(ours.curves()["fmeasure"], torch_front.curves()["fmeasure"])

    # (the S-measure is NaN in PySODMetrics for the masks on the last row: see SmeasureAccumulator)
    meters = {"MAE": py_sod_metrics.MAE(), "wF": py_sod_metrics.WeightedFmeasure()}
    for pred, gt in zip(preds, gts, strict=True):
        for meter in meters.values():
            meter.step(pred, gt)
    results = ours.compute()
    assert results["MAE"] == pytest.approx(meters["MAE"].get_results()["mae"], abs=1e-12)
    assert results["wF"] == pytest.approx(meters["wF"].get_results()["wfm"], abs=1e-12)


def test_metric_set_inputs_and_errors() -> None:
    preds, gts = mixed_pairs()
    one = MetricSet(["wF", "MAE"])
    assert one.names == ("MAE", "wF")  # in the families' order
    one.update(np.stack(preds[:4]), np.stack(gts[:4]) > 128)  # a batch, bool masks
    two = MetricSet(["MAE", "wF"])
    for pred, gt in zip(preds[:4], gts[:4], strict=True):
        two.update(pred, gt)  # one HxW image at a time
    assert one.compute() == pytest.approx(two.compute(), abs=1e-15)
    with pytest.raises(ValueError, match="unknown metric 'relaxFb'"):
        MetricSet(["relaxFb"])  # an optional metric: SODMetrics
    with pytest.raises(ValueError, match="batch size"):
        one.update(np.stack(preds[:2]), gts[0])
    with pytest.raises(TypeError, match="numpy"):
        one.update(torch.from_numpy(preds[0]), torch.from_numpy(gts[0]))
    with pytest.raises(TypeError, match="uint8"):
        one.update(preds[0].astype(np.float32), gts[0])
    with pytest.raises(RuntimeError, match="no images"):
        MetricSet().compute()


def test_scoring_chooses_the_torch_free_set_only_where_it_applies() -> None:
    assert type(metric_set(None)) is MetricSet
    assert type(metric_set(["maxF", "MAE"], "cpu")) is MetricSet
    assert type(metric_set(["relaxFb"])) is SODMetrics
    assert type(metric_set(None, torch.device("cuda", 0))) is SODMetrics
    assert metric_set(None).names == SODMetrics().names == DEFAULT_METRICS


def test_evaluate_on_the_cpu_does_not_import_torch(tmp_path) -> None:
    """The whole process of evaluate.py with the default metrics on the CPU stays torch-free
    (its import costs a second per process); a resized prediction or an optional metric brings
    torch in, with the same numbers."""
    preds, gts = mixed_pairs()
    for i, (pred, gt) in enumerate(zip(preds, gts, strict=True)):
        write_png(tmp_path / "pred" / f"{i}.png", pred)
        write_png(tmp_path / "gt" / f"{i}.png", gt)
    probe = (
        "import sys, evaluate; code = evaluate.main(sys.argv[1:]); "
        "print('TORCH' if 'torch' in sys.modules else 'NO TORCH', code)"
    )

    def run(*extra: str) -> tuple[str, dict]:
        out = tmp_path / f"scores{len(extra)}.json"
        args = ["--pred", tmp_path / "pred", "--gt", tmp_path / "gt", "--json", out, *extra]
        proc = subprocess.run(
            [sys.executable, "-c", probe, *map(str, args)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.splitlines()[-1], json.loads(out.read_text())

    line, result = run("--device", "cpu")
    assert line == "NO TORCH 0"
    reference = MetricSet()
    reference.update(preds, gts)
    assert {name: result[name] for name in DEFAULT_METRICS} == pytest.approx(
        reference.compute(), abs=1e-15
    )
    line, optional = run("--device", "cpu", "--metrics", "MAE", "relaxFb")
    assert line == "TORCH 0"
    assert optional["MAE"] == pytest.approx(result["MAE"], abs=1e-15)


def test_the_gpu_code_path_on_cpu_tensors_equals_the_numpy_path() -> None:
    """PreparedBatch computes its per-pixel statistics in torch when its tensors are not on the
    CPU (a GPU); run that code on CPU tensors (no NumpyBatch behind) and compare."""
    from utils.metrics.prepare import PreparedBatch

    preds, gts = mixed_pairs()
    numpy_path, torch_path = MetricSet(), MetricSet()
    for size in {p.shape for p in preds}:
        batch_preds = np.stack([p for p in preds if p.shape == size])
        batch_gts = np.stack([g for g in gts if g.shape == size]) > 128
        numpy_path.update(batch_preds, batch_gts)
        batch = PreparedBatch(torch.from_numpy(batch_preds), torch.from_numpy(batch_gts))
        batch._cpu = None  # as on a GPU: bincounts, split point and wF in torch
        torch_path.update_prepared(batch)
    got, want = torch_path.compute(), numpy_path.compute()
    assert got == pytest.approx(want, abs=1e-12, rel=0)


@pytest.mark.filterwarnings("ignore:This class will be removed:UserWarning")  # the reference's
def test_colour_jpeg_predictions_are_read_as_the_reference_reads_them(tmp_path) -> None:
    """PySODEvalToolkit reads maps with ``cv2.imread(path, cv2.IMREAD_GRAYSCALE)``: for a colour
    JPEG, the decoder's luma, which differs from converting the decoded colours."""
    import cv2

    import evaluate

    rng = np.random.default_rng(5)
    reference = {"mae": py_sod_metrics.MAE(), "fm": py_sod_metrics.Fmeasure()}
    converted = []
    for i in range(4):
        gt = np.zeros((48, 64), np.uint8)
        gt[10:30, 12 + i : 40 + i] = 255
        colour = np.zeros((48, 64, 3), np.uint8)
        colour[::2, :, 2], colour[1::2, :, 0] = 255, 200  # saturated stripes: chroma at work
        colour[gt > 0] = (30, 60, 255) if i % 2 else (255, 120, 0)
        colour = cv2.add(colour, rng.integers(0, 40, colour.shape, dtype=np.uint8))
        write_png(tmp_path / "gt" / f"{i}.png", gt)
        (tmp_path / "pred").mkdir(exist_ok=True)
        cv2.imwrite(str(tmp_path / "pred" / f"{i}.jpg"), colour)
        luma = cv2.imread(str(tmp_path / "pred" / f"{i}.jpg"), cv2.IMREAD_GRAYSCALE)
        decoded = cv2.imread(str(tmp_path / "pred" / f"{i}.jpg"), cv2.IMREAD_COLOR)
        converted.append(np.abs(cv2.cvtColor(decoded, cv2.COLOR_BGR2GRAY) - luma.astype(int)))
        for meter in reference.values():
            meter.step(luma, gt)
    assert max(c.max() for c in converted) > 4  # the two readings do differ here
    out = tmp_path / "scores.json"
    args = ["--pred", tmp_path / "pred", "--gt", tmp_path / "gt", "--json", out, "--threads", "1"]
    assert evaluate.main([str(a) for a in args]) == 0
    ours = json.loads(out.read_text())
    assert ours["MAE"] == pytest.approx(reference["mae"].get_results()["mae"], abs=1e-12)
    expected = reference["fm"].get_results()["fm"]
    assert ours["maxF"] == pytest.approx(expected["curve"].max(), abs=1e-12)
    assert ours["meanF"] == pytest.approx(expected["curve"].mean(), abs=1e-12)
