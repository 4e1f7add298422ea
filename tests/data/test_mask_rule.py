"""Tests of the mask rule (utils.io.images.read_mask): 0/1-encoded masks are read as 0/255, soft
and 0/255 masks unchanged, RGB as grey, palette label maps by index; DUTS targets and notice."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from dataloaders.duts import DUTSDataset
from tests.helpers import write_png, write_raw_png
from utils.io.images import count_01_masks, read_grey, read_mask, read_mask_flagged

AUGMENT = {"base_size": 40, "crop_size": 32, "scale_range": [0.9, 1.2], "rotate": 15.0}
VOC_PALETTE = bytes([0, 0, 0, 128, 0, 0, 0, 128, 0])  # index 0 background, 1 and 2 classes


def test_binary_01_masks_are_read_as_0_255(tmp_path: Path) -> None:
    binary = np.array([[0, 1, 1], [0, 0, 1]], np.uint8)
    write_png(tmp_path / "01.png", binary)
    mask, flagged = read_mask_flagged(tmp_path / "01.png")
    assert mask.dtype == np.uint8 and mask.tolist() == (binary * 255).tolist() and flagged
    assert read_grey(tmp_path / "01.png").tolist() == binary.tolist()  # prediction maps: as stored

    cv2.imwrite(str(tmp_path / "01_16bit.png"), binary.astype(np.uint16))
    assert read_mask(tmp_path / "01_16bit.png").tolist() == (binary * 255).tolist()

    write_png(tmp_path / "empty.png", np.zeros((2, 3), np.uint8))
    mask, flagged = read_mask_flagged(tmp_path / "empty.png")
    assert not mask.any() and not flagged


def test_0_255_and_soft_masks_are_unchanged(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    soft = rng.integers(0, 256, (9, 11), dtype=np.uint8)
    soft[0, :3] = (0, 1, 255)
    low = np.array([[0, 1, 2]], np.uint8)  # maximum 2: soft, not 0/1
    hard = (soft > 128).astype(np.uint8) * 255
    for name, mask in (("soft", soft), ("low", low), ("hard", hard)):
        write_png(tmp_path / f"{name}.png", mask)
        read, flagged = read_mask_flagged(tmp_path / f"{name}.png")
        assert read.dtype == np.uint8 and np.array_equal(read, mask) and not flagged, name
        assert np.array_equal(read, read_grey(tmp_path / f"{name}.png")), name


def test_rgb_masks_are_converted_to_grey(tmp_path: Path) -> None:
    grey = np.array([[0, 255, 90]], np.uint8)
    write_png(tmp_path / "rgb.png", np.repeat(grey[:, :, None], 3, 2))
    assert read_mask(tmp_path / "rgb.png").tolist() == grey.tolist()
    write_png(tmp_path / "rgb01.png", np.repeat((grey > 0)[:, :, None], 3, 2).astype(np.uint8))
    assert read_mask_flagged(tmp_path / "rgb01.png")[0].tolist() == [[0, 255, 255]]
    red = np.zeros((1, 2, 3), np.uint8)
    red[0, 1] = (0, 0, 255)  # BGR red: grey 76, as COLOR_BGR2GRAY says
    write_png(tmp_path / "red.png", red)
    assert read_mask(tmp_path / "red.png").tolist() == [[0, 76]]


def test_palette_masks_use_the_index(tmp_path: Path) -> None:
    # VOC style: a coloured palette is a label map, foreground = any index but 0
    write_raw_png(tmp_path / "voc.png", 3, 3, bytes([0, 1, 2, 1, 0, 0]), VOC_PALETTE)
    assert read_grey(tmp_path / "voc.png").tolist() == [[0, 38, 75], [38, 0, 0]]  # luminance
    assert read_mask_flagged(tmp_path / "voc.png")[0].tolist() == [[0, 255, 255], [255, 0, 0]]
    # background colour not black: still index 0
    write_raw_png(tmp_path / "blue.png", 2, 3, bytes([0, 1]), bytes([0, 0, 255, 255, 255, 0]))
    assert read_mask(tmp_path / "blue.png").tolist() == [[0, 255]]
    # a palette of greys only (e.g. an optimised grey PNG, index 0 white) keeps its grey values
    greys = bytes([255, 255, 255, 0, 0, 0, 128, 128, 128])
    write_raw_png(tmp_path / "greys.png", 3, 3, bytes([0, 1, 2]), greys)
    assert read_mask(tmp_path / "greys.png").tolist() == [[255, 0, 128]]
    # a grey 0/1 palette is 0/1-encoded like a grey PNG
    write_raw_png(tmp_path / "grey01.png", 2, 3, bytes([1, 0]), bytes([0, 0, 0, 1, 1, 1]))
    assert read_mask_flagged(tmp_path / "grey01.png")[0].tolist() == [[255, 0]]


def _recode(mask_dir: Path, encoding: str) -> None:
    """Rewrite the 0/255 PNG masks of ``mask_dir`` in ``encoding``."""
    for path in sorted(mask_dir.glob("*.png")):
        mask = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        assert set(np.unique(mask)) == {0, 255}
        index = (mask // 255).astype(np.uint8)
        if encoding == "binary_01":
            write_png(path, index)
        elif encoding == "rgb":
            write_png(path, np.repeat(mask[:, :, None], 3, 2))
        else:  # "palette": VOC colours, index 1 for the object
            write_raw_png(path, mask.shape[1], 3, index.tobytes(), VOC_PALETTE)


@pytest.mark.parametrize("encoding", ["binary_01", "palette", "rgb"])
def test_duts_targets_do_not_depend_on_the_mask_encoding(
    make_duts: Callable[..., Path], encoding: str, caplog: pytest.LogCaptureFixture
) -> None:
    reference, recoded = make_duts("reference"), make_duts(encoding)
    for split in ("TR", "TE"):
        _recode(recoded / f"DUTS-{split}" / f"DUTS-{split}-Mask", encoding)
    with caplog.at_level(logging.WARNING, logger="u2seg"):
        datasets = [
            (
                DUTSDataset(str(root), "train", augment=True, **AUGMENT),
                DUTSDataset(str(root), "test"),
            )
            for root in (reference, recoded)
        ]
    (train_a, test_a), (train_b, test_b) = datasets
    for index in range(len(train_a)):
        for epoch in range(2):
            key = (index, 7, epoch)
            assert all(
                np.array_equal(a, b) for a, b in zip(train_a[key], train_b[key], strict=True)
            )
        assert train_b[index][1].max() == 1.0
    for index in range(len(test_a)):
        assert np.array_equal(test_a[index][1], test_b[index][1])

    # one notice per dataset with 0/1-encoded masks, with the counts
    notices = [r.getMessage() for r in caplog.records if "0/1-encoded" in r.getMessage()]
    if encoding == "binary_01":
        assert train_b.binary_01_masks == (6, 6) and test_b.binary_01_masks == (3, 3)
        assert notices == [
            "DUTSDataset(split='train'): 6 of 6 masks checked (evenly spaced over 6) are "
            "0/1-encoded (maximum 1); every such mask is read as 0/255",
            "DUTSDataset(split='test'): 3 of 3 masks checked (evenly spaced over 3) are "
            "0/1-encoded (maximum 1); every such mask is read as 0/255",
        ]
    else:
        assert notices == [] and train_b.binary_01_masks == (0, 6)
    assert train_a.binary_01_masks == (0, 6)


def test_count_01_masks_checks_an_evenly_spaced_sample(tmp_path: Path) -> None:
    paths = []
    for i in range(10):
        paths.append(
            write_png(tmp_path / f"{i}.png", np.full((2, 2), 1 if i % 2 else 255, np.uint8))
        )
    (tmp_path / "broken.png").write_bytes(b"not a png")
    assert count_01_masks(paths) == (5, 10)
    assert count_01_masks(paths, limit=5) == (0, 5)  # files 0, 2, 4, 6, 8
    assert count_01_masks([*paths[:3], tmp_path / "broken.png"]) == (1, 3)


def test_a_colour_jpeg_mask_is_read_as_the_reference_reads_it(tmp_path):
    """PySODEvalToolkit reads masks with ``cv2.IMREAD_GRAYSCALE``: for a JPEG, the luma."""
    colour = np.zeros((40, 48, 3), np.uint8)
    colour[::2, :, 2], colour[1::2, :, 0] = 255, 200  # saturated stripes: chroma at work
    colour[10:30, 12:36] = (30, 60, 255)
    path = tmp_path / "mask.jpg"
    cv2.imwrite(str(path), colour)
    luma = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    converted = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2GRAY)
    assert not np.array_equal(luma, converted)  # the two readings differ here
    assert np.array_equal(read_mask(path), luma)
