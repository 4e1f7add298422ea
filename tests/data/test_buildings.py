"""Building datasets in their real layouts: counts, splits, binarisation, window/mask alignment,
tile reading (memory-mapped or decoded) and error messages."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
import torch

from dataloaders.buildings import (
    InriaBuildingDataset,
    MassachusettsBuildingDataset,
    VOCBinaryDataset,
    WHUBuildingDataset,
)
from dataloaders.tiles import TileReader
from tests.helpers import ROOT, write_raw_png
from utils.preprocessing import INV_STD_255, MEAN_255


def tile(h: int, w: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """An RGB image whose red channel encodes the mask (255 on buildings, < 128 elsewhere)."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((h, w), np.uint8)
    for _ in range(max(1, h * w // 2000)):
        y, x = rng.integers(0, h), rng.integers(0, w)
        mask[y : y + rng.integers(4, 12), x : x + rng.integers(4, 12)] = 1
    image = rng.integers(0, 120, (h, w, 3), dtype=np.uint8)
    image[..., 0] = np.where(mask > 0, 255, image[..., 0])
    return image, mask


def write_palette_png(path: Path, indices: np.ndarray, colours: list[tuple[int, int, int]]) -> None:
    """An 8-bit palette PNG (colour type 3), as VOC-style tools write masks."""
    palette = bytes(c for colour in colours for c in colour)
    write_raw_png(path, indices.shape[1], 3, indices.astype(np.uint8).tobytes(), palette)


def write(path: Path, array: np.ndarray, tiff_compression: int | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = cv2.cvtColor(array, cv2.COLOR_RGB2BGR) if array.ndim == 3 else array
    params = [cv2.IMWRITE_TIFF_COMPRESSION, tiff_compression] if tiff_compression else []
    assert cv2.imwrite(str(path), data, params)


def check_alignment(dataset, items) -> None:
    """The window's red channel (de-normalised) is 255 exactly where its mask is 1."""
    for item in items:
        image, mask = dataset[item]
        red = image[0] / float(INV_STD_255[0, 0, 0]) + float(MEAN_255[0, 0, 0])
        assert image.shape == (3, dataset.crop_size, dataset.crop_size)
        assert mask.shape == (1, dataset.crop_size, dataset.crop_size)
        assert set(torch.unique(mask).tolist()) <= {0.0, 1.0}
        assert torch.equal(red.round() == 255, mask[0] == 1)


def test_whu_layout_counts_and_windows(tmp_path):
    for split, count in (("train", 3), ("val", 2)):
        for i in range(count):
            image, mask = tile(64, 64, i)
            write(tmp_path / split / "image" / f"t{i}.tif", image)
            write(tmp_path / split / "label" / f"t{i}.tif", mask * 255)
    train = WHUBuildingDataset(str(tmp_path), "train", crop_size=32, augment=True)
    val = WHUBuildingDataset(str(tmp_path), "val", crop_size=32)
    assert len(train.files) == 3 and len(train) == 3 * 4  # one window per crop area
    assert len(val) == 2 * 4  # a 2x2 grid per tile
    check_alignment(train, [(i, 7, 1) for i in range(6)])
    check_alignment(val, range(len(val)))


def test_inria_split_by_tile_number_even_with_digits_in_the_root(tmp_path):
    root = tmp_path / "data2024" / "inria7"
    for city in ("austin", "vienna"):
        for n in range(1, 8):
            image, mask = tile(40, 48, n)
            write(root / "AerialImageDataset" / "train" / "images" / f"{city}{n}.tif", image)
            write(root / "AerialImageDataset" / "train" / "gt" / f"{city}{n}.tif", mask * 255)
    train = InriaBuildingDataset(str(root), "train", crop_size=32, augment=True)
    val = InriaBuildingDataset(str(root), "val", crop_size=32)
    train_names = sorted(Path(p).stem for p, _ in train.files)
    val_names = sorted(Path(p).stem for p, _ in val.files)
    assert train_names == ["austin6", "austin7", "vienna6", "vienna7"]
    assert val_names == [f"{c}{n}" for c in ("austin", "vienna") for n in range(1, 6)]
    check_alignment(train, [(i, 3, 2) for i in range(4)])
    check_alignment(val, range(len(val)))
    with pytest.raises(ValueError, match="test tiles have no ground truth"):
        InriaBuildingDataset(str(root), "test")


@pytest.mark.parametrize("compression", [1, 5], ids=["uncompressed", "lzw"])
def test_massachusetts_tiles_read_as_windows(tmp_path, compression):
    image, mask = tile(150, 170, 3)
    write(tmp_path / "train" / "a.tiff", image, compression)
    write(tmp_path / "train_labels" / "a.tif", mask * 255, compression)
    dataset = MassachusettsBuildingDataset(str(tmp_path), crop_size=64, augment=True)
    check_alignment(dataset, [(0, 1, e) for e in range(5)])
    reader = TileReader()
    window = reader.window(str(tmp_path / "train" / "a.tiff"), 10, 20, 30, 40)
    assert np.array_equal(window, image[10:40, 20:60])
    assert isinstance(reader.array(str(tmp_path / "train" / "a.tiff")), np.memmap) == (
        compression == 1
    )


@pytest.mark.parametrize("encoding", ["01", "0255", "palette"])
def test_voc_masks_are_binarised_whatever_their_encoding(tmp_path, encoding):
    image, mask = tile(50, 60, 5)
    write(tmp_path / "JPEGImages" / "x.png", image)
    path = tmp_path / "SegmentationClass" / "x.png"
    path.parent.mkdir(parents=True)
    if encoding == "palette":
        write_palette_png(path, mask, [(0, 0, 0), (128, 0, 0)])
    else:
        write(path, mask * (255 if encoding == "0255" else 1))
    dataset = VOCBinaryDataset(str(tmp_path), crop_size=32)
    check_alignment(dataset, range(len(dataset)))


def test_voc_image_sets_choose_the_split(tmp_path):
    for name in ("a", "b", "c"):
        image, mask = tile(40, 40, ord(name))
        write(tmp_path / "JPEGImages" / f"{name}.png", image)
        write(tmp_path / "SegmentationClass" / f"{name}.png", mask)
    sets = tmp_path / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True)
    (sets / "train.txt").write_text("a\nc\n")
    (sets / "val.txt").write_text("b\n")
    train = VOCBinaryDataset(str(tmp_path), "train", crop_size=32)
    val = VOCBinaryDataset(str(tmp_path), "val", crop_size=32)
    assert [Path(p).stem for p, _ in train.files] == ["a", "c"]
    assert [Path(p).stem for p, _ in val.files] == ["b"]


def test_a_tile_smaller_than_the_crop_is_padded_with_background(tmp_path):
    image, mask = tile(20, 30, 1)
    write(tmp_path / "train" / "image" / "s.png", image)
    write(tmp_path / "train" / "label" / "s.png", mask * 255)
    dataset = WHUBuildingDataset(str(tmp_path), crop_size=48, augment=False)
    assert len(dataset) == 1
    _, target = dataset[0]
    assert target.shape == (1, 48, 48) and float(target[0, 20:].sum()) == 0
    assert torch.equal(target[0, :20, :30], torch.from_numpy(mask).float())


def test_missing_mask_folder_and_unsupported_images_are_reported(tmp_path):
    image, _ = tile(20, 20, 1)
    write(tmp_path / "train" / "image" / "s.png", image)
    with pytest.raises(FileNotFoundError, match=r"mask folder .*train.label does not exist"):
        WHUBuildingDataset(str(tmp_path))
    (tmp_path / "train" / "label").mkdir()
    write(tmp_path / "train" / "label" / "s.png", image[..., 0])
    bands = np.zeros((20, 20, 5), np.uint8)  # 5-band imagery
    tifffile.imwrite(
        tmp_path / "train" / "image" / "s.tif",
        bands,
        photometric="minisblack",
        planarconfig="contig",
    )
    (tmp_path / "train" / "image" / "s.png").unlink()
    with pytest.raises(OSError, match=r"s\.tif has 5 bands; supported are"):
        WHUBuildingDataset(str(tmp_path), crop_size=16)


def test_names_that_differ_only_in_extension_and_bad_settings_are_refused(tmp_path):
    image, mask = tile(20, 20, 1)
    write(tmp_path / "train" / "image" / "s.png", image)
    write(tmp_path / "train" / "label" / "s.png", mask * 255)
    with pytest.raises(ValueError, match="crop_size must be a positive integer, got 0"):
        WHUBuildingDataset(str(tmp_path), crop_size=0)
    with pytest.raises(ValueError, match=r"building_bias must be in \[0, 1\]"):
        WHUBuildingDataset(str(tmp_path), building_bias=1.5)
    write(tmp_path / "train" / "image" / "s.jpg", image)
    with pytest.raises(ValueError, match=r"train.image: 1 name.*: s.jpg, s.png"):
        WHUBuildingDataset(str(tmp_path))


def test_windows_are_seeded_samples_not_resized_images(tmp_path):
    from base.base_dataset import BaseDataSet, SeededDataSet
    from utils.config import accepted_args

    image, mask = tile(40, 70, 2)
    write(tmp_path / "train" / "image" / "a.png", image)
    write(tmp_path / "train" / "label" / "a.png", mask * 255)
    dataset = WHUBuildingDataset(str(tmp_path), crop_size=32, augment=True)
    assert isinstance(dataset, SeededDataSet) and not isinstance(dataset, BaseDataSet)
    assert repr(dataset) == (
        f"WHUBuildingDataset(split='train', tiles=1, windows=3, crop_size=32, augment=True, "
        f"data_dir={str(tmp_path)!r})"
    )
    assert accepted_args(WHUBuildingDataset) == {
        "data_dir", "split", "image_dir", "mask_dir", "crop_size", "augment",
        "windows_per_epoch", "building_bias", "cache_tiles", "imagery",
    }  # fmt: skip
    first = dataset[(1, 4, 2)]
    assert all(torch.equal(a, b) for a, b in zip(first, dataset[(1, 4, 2)], strict=True))


def test_building_bias_centres_windows_on_buildings(tmp_path):
    mask = np.zeros((400, 400), np.uint8)
    mask[300:320, 40:60] = 255  # one building in a corner
    image = np.zeros((400, 400, 3), np.uint8)
    write(tmp_path / "train" / "image" / "t.png", image)
    write(tmp_path / "train" / "label" / "t.png", mask)
    hits = {}
    for bias in (0.0, 1.0):
        dataset = WHUBuildingDataset(
            str(tmp_path), crop_size=64, augment=True, building_bias=bias, windows_per_epoch=40
        )
        hits[bias] = sum(float(dataset[(i, 0, 1)][1].sum()) > 0 for i in range(40))
    assert hits[1.0] == 40 and hits[0.0] < 20


def test_building_loaders_refuse_val_split(tmp_path):
    from dataloaders.buildings import WHUBuilding

    image, mask = tile(32, 32, 2)
    write(tmp_path / "train" / "image" / "a.png", image)
    write(tmp_path / "train" / "label" / "a.png", mask)
    with pytest.raises(ValueError, match="val_split is not supported by WHUBuilding"):
        WHUBuilding(batch_size=2, val_split=0.2, data_dir=str(tmp_path), crop_size=16)
    loader = WHUBuilding(batch_size=2, data_dir=str(tmp_path), crop_size=16, augment=True)
    images, masks = next(iter(loader))
    assert images.shape == (2, 3, 16, 16) and masks.shape == (2, 1, 16, 16)


def test_inria_demo_recipe_trains_and_reports_building_metrics(tmp_path):
    import train

    data = str(tmp_path / "building_demo")
    opts = [
        f"train_loader.args.data_dir={data}",
        f"val_loader.args.data_dir={data}",
        "train_loader.args.crop_size=64",
        "train_loader.args.windows_per_epoch=8",
        "train_loader.args.num_workers=0",
        "val_loader.args.crop_size=500",
        "train_loader.args.val_tiles=1",
        "val_loader.args.val_tiles=1",  # 2 validation tiles: a fast test
        "val_loader.args.num_workers=0",
        "lr_scheduler.args.warmup_iters=0",
        "trainer.epochs=1",
        f"trainer.save_dir={tmp_path / 'saved'}",
    ]
    run = train.main(["-c", str(ROOT / "configs" / "inria_demo.json"),
                      "--opt", *opts])  # fmt: skip
    record = [line for line in (run / "metrics.jsonl").read_text().splitlines()][-1]
    for name in ("IoU", "F1", "precision", "recall", "accuracy", "maxF"):
        assert f'"{name}": ' in record
    assert (Path(data) / "AerialImageDataset" / "test" / "images").is_dir()


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("a.jpg", []),
        ("b.jpg", [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]),
        ("c.png", []),
        ("d.bmp", []),
    ],
)
def test_tile_sizes_come_from_the_headers(tmp_path, name, params):
    from utils.io.images import image_size

    image, _ = tile(37, 91, 4)
    assert cv2.imwrite(str(tmp_path / name), image, params)
    assert image_size(tmp_path / name) == (37, 91)
