"""relaxFb (relaxed boundary F-measure, BASNet / U^2-Net) on hand-computed cases."""

import numpy as np
import pytest
import torch

from tests.metrics.cases import multi_object_pairs
from utils.metrics import SODMetrics
from utils.metrics.relaxed_boundary import boundary, near, relaxed_boundary_f


def rect(h: int, w: int, rows: tuple[int, int], cols: tuple[int, int]) -> np.ndarray:
    """uint8 0/255 map with the inclusive rectangle ``rows`` x ``cols`` at 255."""
    out = np.zeros((h, w), np.uint8)
    out[rows[0] : rows[1] + 1, cols[0] : cols[1] + 1] = 255
    return out


def relax_fb(pred: np.ndarray, gt: np.ndarray) -> float:
    metrics = SODMetrics(metrics=["relaxFb"])
    metrics.update(pred, gt)
    return metrics.compute()["relaxFb"]


def test_boundary_is_mask_xor_its_3x3_erosion_and_the_frame_is_not_a_boundary():
    # 5x3 rectangle: boundary = all but the 3 interior pixels (rows 2..4, column 2)
    mask = torch.from_numpy(rect(7, 12, (1, 5), (1, 3)) > 0)[None]
    edge = boundary(mask)[0]
    assert int(edge.sum()) == 12
    assert not edge[2:5, 2].any() and edge[1, 1:4].all() and edge[2:5, 3].all()
    # a mask touching the left frame has no boundary along it
    half = torch.zeros(1, 6, 8, dtype=torch.bool)
    half[:, :, :4] = True
    assert boundary(half)[0].nonzero()[:, 1].unique().tolist() == [3]
    assert not boundary(torch.ones(1, 4, 4, dtype=torch.bool)).any()


def test_near_is_euclidean_within_rho():
    point = torch.zeros(1, 9, 9, dtype=torch.bool)
    point[0, 4, 4] = True
    within = near(point, 3)[0]
    assert within[4, 1] and within[4, 7] and within[1, 4]  # distance 3
    assert within[2, 2]  # sqrt(8) <= 3
    assert not within[1, 3] and not within[1, 1]  # sqrt(10), sqrt(18) > 3: not a 7x7 square
    # lattice points with dy^2 + dx^2 <= 9: 7 (dy = 0) + 2 * 5 (|dy| = 1) + 2 * 5 (|dy| = 2)
    # + 2 (|dy| = 3)
    assert int(within.sum()) == 29


def test_partial_overlap_hand_computed():
    # 7x12 image. GT: rows 1..5 x cols 1..3, boundary 12 pixels (15 minus the 3 interior ones).
    # Prediction: rows 1..5 x cols 1..9, boundary 45 - 21 = 24 pixels: rows 1 and 5 (cols 1..9,
    # 9 each), column 1 (rows 2..4) and column 9 (rows 2..4).
    # Recall: every GT boundary pixel lies on a predicted one (rows 1 and 5, column 1) or, for
    # column 3 rows 2..4, within 2 of (1, 3) or (5, 3): 12 / 12 = 1.
    # Precision: on rows 1 and 5, (r, c) is within 3 of the GT boundary for c <= 6 ((1, 6) to
    # (1, 3) is exactly 3; (1, 7) is 4 from (1, 3) and sqrt(17) from (2, 3)): 6 + 6; column 1:
    # 3; column 9: none (6 away). 15 / 24 = 0.625.
    # F = 1.3 * 0.625 * 1 / (0.3 * 0.625 + 1) = 0.8125 / 1.1875 = 13 / 19.
    gt = rect(7, 12, (1, 5), (1, 3))
    pred = rect(7, 12, (1, 5), (1, 9))
    assert relax_fb(pred, gt) == pytest.approx(13 / 19, abs=1e-15)
    # swapping the roles swaps precision and recall: F = 1.3 * 0.625 / (0.3 + 0.625) = 13 / 14.8
    assert relax_fb(gt, pred) == pytest.approx(1.3 * 0.625 / 0.925, abs=1e-15)


def test_far_apart_objects_score_zero_and_a_one_pixel_shift_scores_one():
    # two 3x3 squares 11 columns apart: every boundary pixel is > 3 away from the other's
    gt = rect(5, 20, (1, 3), (1, 3))
    assert relax_fb(rect(5, 20, (1, 3), (12, 14)), gt) == 0.0
    # shifted by one pixel, every boundary pixel is within 1 of the other boundary
    assert relax_fb(rect(5, 20, (1, 3), (2, 4)), gt) == 1.0


def test_empty_boundaries():
    empty, full = np.zeros((6, 8), np.uint8), np.full((6, 8), 255, np.uint8)
    half = rect(6, 8, (0, 5), (0, 3))  # touches the frame: boundary is column 3 only
    assert relax_fb(empty, empty) == 1.0  # nothing to find, nothing found
    assert relax_fb(full, full) == 1.0  # the frame is no boundary
    assert relax_fb(empty, half) == 0.0 and relax_fb(full, half) == 0.0
    assert relax_fb(half, empty) == 0.0
    assert relax_fb(rect(6, 8, (0, 5), (0, 4)), half) == 1.0


def test_binarised_at_half_of_the_stretched_map():
    # levels 100 and 200 stretch to 0 and 1: the 200 region is the prediction
    gt = rect(7, 12, (1, 5), (1, 3))
    pred = np.where(rect(7, 12, (1, 5), (1, 9)) > 0, 200, 100).astype(np.uint8)
    assert relax_fb(pred, gt) == pytest.approx(13 / 19, abs=1e-15)


def test_batched_equals_image_by_image():
    pairs = multi_object_pairs(6, seed=3)
    batched = SODMetrics(metrics=["relaxFb"])
    batched.update([p for p, _ in pairs], [g for _, g in pairs])
    singles = []
    for pred, gt in pairs:
        mask = torch.from_numpy(gt > 128)[None]
        p = torch.from_numpy(pred.astype(np.float64))
        stretched = (p - p.min()) / (p.max() - p.min())
        singles.append(relaxed_boundary_f(stretched[None] > 0.5, mask).item())
    assert batched.compute()["relaxFb"] == pytest.approx(np.mean(singles), abs=1e-15)
    assert 0.0 < np.mean(singles) < 1.0
