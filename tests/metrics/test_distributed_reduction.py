"""Metric state reduced across 2 real processes (gloo) equals the single-process result."""

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from utils.metrics import SODMetrics

NUM_IMAGES = 7  # not divisible by the world size


def make_pairs() -> tuple[list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:41, 0:53]
    preds, gts = [], []
    for i in range(NUM_IMAGES):
        cy, cx, r = rng.uniform(8, 33), rng.uniform(8, 45), rng.uniform(4, 14)
        dist2 = (yy - cy) ** 2 + (xx - cx) ** 2
        gt = (
            np.where(dist2 < r**2, 255, 0).astype(np.uint8)
            if i != 3
            else np.zeros((41, 53), np.uint8)
        )
        soft = np.exp(-dist2 / (2 * r**2)) + rng.normal(0, 0.15, dist2.shape)
        preds.append(np.clip(soft * 255, 0, 255).astype(np.uint8))
        gts.append(gt)
    return preds, gts


def score_share(
    rank: int,
    world: int,
    init_file: str,
    out_file: str,
    pairs: list[tuple[np.ndarray, np.ndarray]],
    names: list[str] | None = None,
) -> None:
    """Process ``rank`` of ``world``: score every world-th pair of ``pairs`` on the metrics
    ``names`` (None: the defaults), sum the state over the processes; rank 0 saves the metrics
    and the image count to ``out_file``."""
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        metrics = SODMetrics(metrics=names)
        for pred, gt in pairs[rank::world]:  # of 7 pairs, ranks score 4 and 3
            metrics.update(pred, gt)
        metrics.all_reduce()
        if rank == 0:
            torch.save({"metrics": metrics.compute(), "count": metrics.num_images}, out_file)
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_reduced_metrics_equal_single_process(tmp_path):
    out_file = tmp_path / "rank0.pt"
    pairs = list(zip(*make_pairs(), strict=True))
    args = (2, str(tmp_path / "init"), str(out_file), pairs)
    mp.spawn(score_share, args=args, nprocs=2, join=True)
    reduced = torch.load(out_file, weights_only=True)
    single = SODMetrics()
    single.update(*make_pairs())
    expected = single.compute()
    assert reduced["count"] == NUM_IMAGES
    assert reduced["metrics"].keys() == expected.keys()
    # 1e-9, not 1e-12: inside pytest, wF of this set was seen to move by ~5e-12 between runs
    # (in the single-process result as well, so not the reduction); cause not found yet. A
    # wrong reduction is off by far more.
    for name, value in expected.items():
        assert reduced["metrics"][name] == pytest.approx(value, abs=1e-9), name
