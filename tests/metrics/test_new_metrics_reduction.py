"""The state of every optional metric family reduced across 2 real processes (gloo) equals the
single-process result (sums plus counts: FmeasureV2, relaxFb, size-invariant, MSIoU, HCE)."""

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tests.metrics.cases import multi_object_pairs
from tests.metrics.test_distributed_reduction import score_share
from utils.metrics import ALL_METRIC_NAMES, DEFAULT_METRICS, SODMetrics

pytest.importorskip("skimage", reason="HCE needs scikit-image")

NAMES = [name for name in ALL_METRIC_NAMES if name not in DEFAULT_METRICS]
NUM_IMAGES = 7  # not divisible by the world size; images of different sizes


def make_pairs() -> list[tuple[np.ndarray, np.ndarray]]:
    pairs = multi_object_pairs(NUM_IMAGES - 1, seed=7)
    pairs.append((pairs[0][0], np.zeros_like(pairs[0][1])))  # an empty ground truth
    return pairs


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_reduced_new_metrics_equal_single_process(tmp_path):
    out_file = tmp_path / "rank0.pt"
    pairs = make_pairs()
    args = (2, str(tmp_path / "init"), str(out_file), pairs, NAMES)
    mp.spawn(score_share, args=args, nprocs=2, join=True)
    reduced = torch.load(out_file, weights_only=True)
    single = SODMetrics(metrics=NAMES)
    single.update([p for p, _ in pairs], [g for _, g in pairs])
    expected = single.compute()
    assert reduced["count"] == NUM_IMAGES
    assert list(reduced["metrics"]) == list(expected) == NAMES
    for name, value in expected.items():
        assert reduced["metrics"][name] == pytest.approx(value, abs=1e-12, rel=0), name


def test_summed_states_of_split_accumulators_equal_one_pass():
    """The same without processes: the states of two halves, summed, give the one-pass result
    (a wrong reduction, e.g. a mean of means, would differ: the halves differ in size)."""
    pairs = make_pairs()
    first, second, whole = (SODMetrics(metrics=NAMES) for _ in range(3))
    for i, pair in enumerate(pairs):
        (first if i < 2 else second).update(*pair)
        whole.update(*pair)
    for mine, other in zip(first.state_arrays(), second.state_arrays(), strict=True):
        mine += other
    got, want = first.compute(), whole.compute()
    for name in NAMES:
        assert got[name] == pytest.approx(want[name], abs=1e-12, rel=0), name
    means = [SODMetrics(metrics=["si_maxIoU_pooled", "maxMSIoU"]) for _ in range(2)]
    for i, pair in enumerate(pairs):
        means[i >= 2].update(*pair)
    mean_of_means = np.mean([m.compute()["si_maxIoU_pooled"] for m in means])
    assert abs(mean_of_means - want["si_maxIoU_pooled"]) > 1e-6  # the check above can fail
