"""Multi-scale IoU against PySODMetrics' MSIoU, and its building blocks."""

import numpy as np
import pytest
import torch
from scipy import ndimage

from tests.metrics.cases import all_cases, multi_object_pairs
from utils.metrics import MSIoUAccumulator, SODMetrics, prepare_batch
from utils.metrics.msiou import (
    NUM_MSIOU_THRESHOLDS,
    WORD_BITS,
    bit_counts,
    cell_pyramid,
    edges,
)

psm = pytest.importorskip("py_sod_metrics", reason="pysodmetrics is the reference")
NAMES = ["maxMSIoU", "meanMSIoU", "adpMSIoU", "binMSIoU"]


def reference(pairs: list[tuple[np.ndarray, np.ndarray]]) -> tuple[dict[str, float], np.ndarray]:
    ref = psm.MSIoU(with_dynamic=True, with_adaptive=True, with_binary=True)
    for pred, gt in pairs:
        ref.step(pred, gt)
    r = ref.get_results()
    values = [r["dynamic"].max(), r["dynamic"].mean(), r["adaptive"], r["binary"]]
    return dict(zip(NAMES, values, strict=True)), r["dynamic"]


# the reference is slow (257 edge maps per image, in numpy): every third pair of the shared set
# (random, blobs, empty / full ground truth, constant maps, one-pixel objects) at the odd and
# degenerate sizes, and at 64x57, where the random ground truth has more than 2048 edge pixels
# (PySODMetrics' float16 count rounds there)
SIZES = ((17, 23), (64, 57), (2, 3), (1, 9), (9, 1))


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::RuntimeWarning")
def test_msiou_matches_pysodmetrics_on_varied_maps():
    checked = 0
    for size in SIZES:
        preds, gts = (images[::3] for images in all_cases()[size])
        want, curve = reference(list(zip(preds, gts, strict=True)))
        metrics = SODMetrics(metrics=NAMES)
        metrics.update(np.stack(preds), np.stack(gts))
        got = metrics.compute()
        for name in NAMES:
            assert got[name] == pytest.approx(want[name], abs=1e-10, rel=0), (name, size)
        acc = MSIoUAccumulator()
        acc.update(
            prepare_batch(torch.from_numpy(np.stack(preds)), torch.from_numpy(np.stack(gts)))
        )
        np.testing.assert_allclose(acc.curve(), curve, atol=1e-12, rtol=0)
        assert curve.shape == (NUM_MSIOU_THRESHOLDS,)
        checked += len(preds)
    pairs = multi_object_pairs(2, seed=2)  # two sizes: scored as a list of images
    want, _ = reference(pairs)
    metrics = SODMetrics(metrics=NAMES)
    metrics.update([p for p, _ in pairs], [g for _, g in pairs])
    for name, value in metrics.compute().items():
        assert value == pytest.approx(want[name], abs=1e-10, rel=0), name
    assert checked >= 45


def test_edges_are_the_nonzero_sobel_responses():
    rng = np.random.default_rng(0)
    masks = rng.random((5, 13, 17)) < 0.4
    got = edges(torch.from_numpy(masks).to(torch.int64)).numpy() & 1
    for mask, edge in zip(masks, got, strict=True):
        m = mask.astype(float)
        sobel = np.hypot(ndimage.sobel(m, 0, mode="constant"), ndimage.sobel(m, 1, mode="constant"))
        np.testing.assert_array_equal(edge, sobel > 0)


def test_packed_masks_are_scored_bit_by_bit():
    """62 masks packed in one word give the edges and counts of each mask alone."""
    rng = np.random.default_rng(1)
    masks = torch.from_numpy(rng.random((WORD_BITS, 11, 14)) < 0.5)
    weights = torch.tensor([1 << k for k in range(WORD_BITS)], dtype=torch.int64)
    packed = (masks.to(torch.int64) * weights[:, None, None]).sum(dim=0, keepdim=True)
    packed_edges = edges(packed)[0]
    counts = bit_counts(cell_pyramid(edges(packed))[1])[0]
    for k in range(WORD_BITS):
        alone = edges(masks[k : k + 1].to(torch.int64))
        assert torch.equal((packed_edges >> k) & 1, alone[0] & 1)
        assert counts[k] == int((cell_pyramid(alone)[1] & 1).sum())


def test_cell_pyramid_aligns_cells_at_the_bottom_right():
    edge = torch.zeros(1, 5, 7, dtype=torch.int64)
    edge[0, 0, 0] = 1  # top-left pixel: with cells of 2 the grid pads a row and a column
    levels = cell_pyramid(edge)
    assert [tuple(level.shape[1:]) for level in levels[:4]] == [(5, 7), (3, 4), (2, 2), (1, 1)]
    # level 1 (cells of 2, in the flipped layout): the pixel is alone in the last cell
    assert levels[1][0].flip(-1, -2)[0, 0] == 1 and int(levels[1].sum()) == 1


def test_perfect_prediction_scores_one():
    _, gt = multi_object_pairs(1, seed=5)[0]
    metrics = SODMetrics(metrics=NAMES)
    metrics.update(gt, gt)
    assert metrics.compute()["binMSIoU"] == pytest.approx(1.0, abs=1e-15)
