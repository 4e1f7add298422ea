"""Image/mask size mismatches: the pre-flight check at build and the ``pair_mismatch`` policy."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import train
from base.base_dataset import BaseDataSet, fit_mask
from dataloaders import DUTS
from dataloaders.duts import DUTSDataset
from tests.helpers import tiny_config
from utils.config import accepted_args

SIZE = (40, 40)  # width, height of the images: a base_size of 40 keeps them as they are


def mask_dir(root: Path, split: str) -> Path:
    tag = {"train": "TR", "test": "TE"}[split]
    return root / f"DUTS-{tag}" / f"DUTS-{tag}-Mask"


def binary_mask(width: int, height: int) -> np.ndarray:
    """A 0/255 mask with a rectangle, of ``width`` x ``height``."""
    mask = np.zeros((height, width), np.uint8)
    mask[height // 4 : height // 2 + 1, width // 3 : width - 2] = 255
    return mask


def soft_mask(width: int, height: int) -> np.ndarray:
    """A mask with grey levels (a horizontal ramp), of ``width`` x ``height``."""
    return np.tile(np.linspace(0, 255, width).astype(np.uint8), (height, 1))


def mismatch(root: Path, split: str, name: str, mask: np.ndarray) -> None:
    assert cv2.imwrite(str(mask_dir(root, split) / f"{name}.png"), mask)


def warnings_of(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if text in r.getMessage()]


def test_mismatched_pairs_of_both_splits_are_listed_at_build(
    make_duts: Callable[..., Path], caplog: pytest.LogCaptureFixture
) -> None:
    root = make_duts(num_train=8, size=SIZE)
    train_names = [f"train_{i:03d}" for i in (0, 2, 3, 4, 5, 7)]
    for name in train_names:
        mismatch(root, "train", name, binary_mask(30, 20))
    mismatch(root, "test", "test_001", binary_mask(41, 40))
    with caplog.at_level(logging.WARNING, logger="u2seg"):
        train_set = DUTSDataset(str(root), "train")
        test_set = DUTSDataset(str(root), "test")

    assert [Path(mask).stem for _, mask in train_set.mismatched_pairs] == train_names
    assert [Path(image).name for image, _ in test_set.mismatched_pairs] == ["test_001.jpg"]
    assert len(train_set) == 8 and len(test_set) == 3  # resize_mask keeps every pair
    (train_line,) = warnings_of(caplog, "split='train'")
    assert "6 of 8 image/mask pairs differ in size" in train_line
    named = [f"{name}.jpg 40x40 vs {name}.png 30x20" for name in train_names[:5]]
    assert ", ".join(named) + ", ...;" in train_line  # the first 5, in one line
    assert "train_007" not in train_line
    assert 'pair_mismatch="resize_mask"' in train_line
    (test_line,) = warnings_of(caplog, "split='test'")
    assert "1 of 3 image/mask pairs" in test_line
    assert "test_001.jpg 40x40 vs test_001.png 41x40;" in test_line


def test_resize_mask_gives_masks_at_the_image_size(
    make_duts: Callable[..., Path], caplog: pytest.LogCaptureFixture
) -> None:
    root = make_duts(size=SIZE)
    small = binary_mask(20, 20)
    soft = soft_mask(25, 30)
    mismatch(root, "train", "train_001", small)
    mismatch(root, "train", "train_002", soft)
    with caplog.at_level(logging.WARNING, logger="u2seg"):
        dataset = DUTSDataset(str(root), "train", base_size=40)
        _, nearest = dataset[1]
        _, bilinear = dataset[2]
    assert len(warnings_of(caplog, "differ in size")) == 1  # at build only, not per load

    assert nearest.shape == bilinear.shape == (1, 40, 40)
    # nearest: a 0/255 mask stays exactly 0/255 (each pixel doubled)
    assert torch.equal(nearest[0], torch.from_numpy(small.repeat(2, 0).repeat(2, 1) / 255).float())
    # bilinear: a soft mask is interpolated
    expected = cv2.resize(soft, SIZE, interpolation=cv2.INTER_LINEAR)
    assert len(np.unique(expected)) > 2
    assert torch.equal(bilinear[0], torch.from_numpy(expected * np.float32(1 / 255)))
    assert np.array_equal(fit_mask(soft, (40, 40)), expected)


def test_resize_mask_training_run_does_not_stop(
    tmp_path: Path, make_duts: Callable[..., Path]
) -> None:
    root = make_duts(num_train=8, num_test=4)
    mismatch(root, "train", "train_003", binary_mask(30, 20))
    mismatch(root, "train", "train_006", soft_mask(60, 50))
    mismatch(root, "test", "test_002", binary_mask(24, 20))
    path = tiny_config(tmp_path / "run", epochs=1)
    config = json.loads(path.read_text())
    for section in ("train_loader", "val_loader"):
        args = config[section]["args"]
        config[section]["type"] = "DUTS"
        args.pop("num_train"), args.pop("num_test")
        args["data_dir"] = str(root)
    path.write_text(json.dumps(config))
    run_dir = train.main(["-c", str(path), "-d", "cpu"])
    assert (run_dir / "checkpoint-epoch1.pth").is_file()


def test_error_lists_every_pair(make_duts: Callable[..., Path]) -> None:
    root = make_duts(num_train=8, size=SIZE)
    names = [f"train_{i:03d}" for i in range(7)]
    for name in names:
        mismatch(root, "train", name, binary_mask(30, 20))
    with pytest.raises(ValueError, match="7 of 8 image/mask pairs differ in size") as info:
        DUTSDataset(str(root), "train", pair_mismatch="error")
    for name in names:
        assert f"{name}.jpg 40x40 vs {name}.png 30x20" in str(info.value)
    assert "train_007" not in str(info.value)
    assert "pair_mismatch" in str(info.value)


def test_skip_drops_the_pairs(
    make_duts: Callable[..., Path], caplog: pytest.LogCaptureFixture
) -> None:
    root = make_duts(size=SIZE)
    mismatch(root, "train", "train_001", binary_mask(30, 20))
    mismatch(root, "train", "train_004", soft_mask(20, 30))
    with caplog.at_level(logging.WARNING, logger="u2seg"):
        dataset = DUTSDataset(str(root), "train", pair_mismatch="skip")
    kept = [Path(image).stem for image, _ in dataset.files]
    assert kept == ["train_000", "train_002", "train_003", "train_005"]  # order kept
    assert len(dataset) == 4 and dataset[3][1].shape == (1, 320, 320)
    (line,) = warnings_of(caplog, "differ in size")
    assert "2 of 6" in line and 'dropped (pair_mismatch="skip"), 4 samples remain' in line


def test_unknown_policy_is_refused_naming_the_key(duts_dir: Path) -> None:
    assert "pair_mismatch" in accepted_args(DUTS)
    with pytest.raises(ValueError, match=r"pair_mismatch must be one of .*'crop'"):
        DUTSDataset(str(duts_dir), "train", pair_mismatch="crop")


def test_matching_pairs_draw_nothing_and_keep_the_order(
    duts_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    np.random.seed(5)
    torch.manual_seed(5)
    numpy_state, torch_state = np.random.get_state()[1].copy(), torch.get_rng_state()
    with caplog.at_level(logging.WARNING, logger="u2seg"):
        dataset = DUTSDataset(str(duts_dir), "train")
    assert np.array_equal(np.random.get_state()[1], numpy_state)
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert [Path(i).stem for i, _ in dataset.files] == [f"train_{i:03d}" for i in range(6)]
    assert dataset.mismatched_pairs == [] and not warnings_of(caplog, "differ in size")


class _Unchecked(BaseDataSet):
    """In-memory pairs: no ``_pair_paths``, so nothing is checked at build."""

    def __init__(self, mask: np.ndarray, **kwargs: object) -> None:
        self.mask = mask
        super().__init__("memory", "train", **kwargs)

    def _set_files(self) -> None:
        self.files = [0]

    def _load_data(self, index: int) -> tuple[np.ndarray, np.ndarray, str]:
        return np.zeros((40, 40, 3), np.uint8), self.mask, "only"


def test_unchecked_dataset_resizes_at_load_or_stops(caplog: pytest.LogCaptureFixture) -> None:
    mask = binary_mask(20, 20)
    with caplog.at_level(logging.WARNING, logger="u2seg"):
        dataset = _Unchecked(mask, base_size=40)
        assert dataset.mismatched_pairs == []
        dataset[0], dataset[0]
    (line,) = warnings_of(caplog, "differ in size")  # once per sample
    assert "image 40x40, mask 20x20" in line
    with pytest.raises(ValueError, match=r"differ in size.*pair_mismatch='error'"):
        _Unchecked(mask, pair_mismatch="error")[0]
