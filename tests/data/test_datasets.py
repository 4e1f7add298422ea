"""Tests of image reading, BaseDataSet transforms, DUTS/demo datasets and seeded loading."""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from base.base_dataset import BaseDataSet, ImageTransform
from dataloaders import DUTS, DemoSOD
from dataloaders import demo as demo_module
from dataloaders.demo import DemoSODDataset, ensure_demo_data
from dataloaders.duts import DUTSDataset
from tests.helpers import ROOT, write_png, write_raw_png
from train import registries
from utils import config as cfg
from utils.config import accepted_args
from utils.io.images import ImageNameClash, find_images, read_grey, read_image, read_mask
from utils.preprocessing import IMAGENET_MEAN, IMAGENET_STD

AUGMENT = {"base_size": 64, "crop_size": 56, "scale_range": [0.9, 1.3], "rotate": 25.0}


class ArrayDataset(BaseDataSet):
    """In-memory (image, mask) pairs."""

    def __init__(self, pairs: list[tuple[np.ndarray, np.ndarray]], **kwargs) -> None:
        self.pairs = pairs
        super().__init__("memory", "train", **kwargs)

    def _set_files(self) -> None:
        self.files = list(range(len(self.pairs)))

    def _load_data(self, index: int) -> tuple[np.ndarray, np.ndarray, str]:
        image, mask = self.pairs[index]
        return image, mask, f"sample{index}"


def red_on_blue(seed: int, size: tuple[int, int] = (90, 70)) -> tuple[np.ndarray, np.ndarray]:
    """RGB image whose red channel is the mask and blue channel its complement."""
    rng = np.random.default_rng(seed)
    w, h = size
    mask = np.zeros((h, w), np.uint8)
    cv2.fillPoly(mask, [rng.integers(0, (w, h), size=(6, 2)).astype(np.int32)], 255)
    cv2.circle(
        mask, (int(rng.integers(w)), int(rng.integers(h))), int(rng.integers(5, 20)), 255, -1
    )
    image = np.stack([mask, np.zeros_like(mask), 255 - mask], axis=2)
    return image, mask


def denormalise(image: torch.Tensor) -> np.ndarray:
    """3xHxW normalised tensor -> HxWx3 float RGB in 0..255."""
    mean, std = np.array(IMAGENET_MEAN), np.array(IMAGENET_STD)
    return (image.numpy().transpose(1, 2, 0) * std + mean) * 255


# ------------------------------------------------------------------------------- image reading


def test_read_image_and_mask_formats(tmp_path: Path) -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "rgb.png"), rgb[:, :, ::-1])
    assert np.array_equal(read_image(tmp_path / "rgb.png"), rgb)

    grey = rgb[:, :, 0]
    cv2.imwrite(str(tmp_path / "grey.png"), grey)
    assert np.array_equal(read_image(tmp_path / "grey.png"), np.repeat(grey[:, :, None], 3, 2))
    assert np.array_equal(read_mask(tmp_path / "grey.png"), grey)

    rgba = np.dstack([rgb, np.full((5, 7), 7, np.uint8)])
    cv2.imwrite(str(tmp_path / "rgba.png"), rgba[:, :, [2, 1, 0, 3]])
    assert np.array_equal(read_image(tmp_path / "rgba.png"), rgb)

    deep = np.array([[0, 128, 129, 257, 65535, 32896]], np.uint16)
    cv2.imwrite(str(tmp_path / "deep.png"), deep)
    assert read_mask(tmp_path / "deep.png").tolist() == [[0, 0, 1, 1, 255, 128]]
    assert read_image(tmp_path / "deep.png").shape == (1, 6, 3)

    write_raw_png(
        tmp_path / "palette.png", 2, 3, bytes([0, 1, 1, 0]), bytes([0, 0, 0, 200, 10, 50])
    )
    expected = np.array([[[0, 0, 0], [200, 10, 50]], [[200, 10, 50], [0, 0, 0]]], np.uint8)
    assert np.array_equal(read_image(tmp_path / "palette.png"), expected)
    grey_of_colour = round(0.299 * 200 + 0.587 * 10 + 0.114 * 50)
    assert np.array_equal(
        read_grey(tmp_path / "palette.png"), np.array([[0, grey_of_colour], [grey_of_colour, 0]])
    )
    assert read_mask(tmp_path / "palette.png").tolist() == [[0, 255], [255, 0]]  # a label map

    write_raw_png(tmp_path / "grey_alpha.png", 2, 4, bytes([10, 255, 250, 0]))
    assert read_mask(tmp_path / "grey_alpha.png").tolist() == [[10, 250]]
    assert read_image(tmp_path / "grey_alpha.png").tolist() == [[[10] * 3, [250] * 3]]


def test_read_errors_name_the_path(tmp_path: Path) -> None:
    (tmp_path / "corrupt.jpg").write_bytes(b"not an image")
    (tmp_path / "empty.png").write_bytes(b"")
    for name in ("missing.jpg", "corrupt.jpg", "empty.png"):
        path = tmp_path / name
        with pytest.raises(OSError, match=name) as info:
            read_image(path)
        assert "expected" in str(info.value) and str(path) in str(info.value)
        with pytest.raises(OSError, match="mask"):
            read_mask(path)


def test_find_images_flat_or_recursive(tmp_path: Path) -> None:
    for name in ("b.png", "a.JPG", ".hidden.png", "notes.txt", "sub/c.png", "sub/d/e.tif"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "folder.png").mkdir()  # a folder is not an image, whatever its name
    flat = find_images(tmp_path, recursive=False)
    assert flat == {"a": tmp_path / "a.JPG", "b": tmp_path / "b.png"}
    assert list(find_images(tmp_path)) == ["a", "b", "sub/c", "sub/d/e"]
    (tmp_path / "sub" / "c.jpg").write_bytes(b"")  # a clash below the flat listing
    assert find_images(tmp_path, recursive=False) == flat
    with pytest.raises(ImageNameClash, match=r"sub/c.jpg, sub/c.png"):
        find_images(tmp_path)
    (tmp_path / "b.jpeg").write_bytes(b"")
    with pytest.raises(ImageNameClash, match=rf"^{tmp_path}: 1 name.*: b.jpeg, b.png$"):
        find_images(tmp_path, recursive=False)
    with pytest.raises(FileNotFoundError, match=rf"^mask folder {tmp_path / 'nowhere'} does not"):
        find_images(tmp_path / "nowhere", what="mask")


# ------------------------------------------------------------------------------ transforms


@pytest.mark.parametrize("seed", range(6))
def test_augmentation_keeps_image_and_mask_aligned(seed: int) -> None:
    dataset = ArrayDataset([red_on_blue(seed)], augment=True, **AUGMENT)
    for epoch in range(4):
        image, mask = dataset[(0, seed, epoch)]
        assert image.shape == (3, 56, 56) and mask.shape == (1, 56, 56)
        assert image.dtype == mask.dtype == torch.float32
        pixels, mask = denormalise(image), mask[0].numpy() * 255
        assert 0 < mask.mean() < 255 and mask.min() >= 0 and mask.max() <= 255
        # bilinear resize/rotation, crop and flip act on both alike: red == mask everywhere
        assert np.abs(pixels[:, :, 0] - mask).max() < 1.01
        assert np.abs(pixels[:, :, 2] - (255 - mask)).max() < 1.01
        assert np.abs(pixels[:, :, 1]).max() < 0.01


def test_padding_uses_the_mean_colour_and_an_empty_mask() -> None:
    image, mask = red_on_blue(0)
    dataset = ArrayDataset(
        [(image, np.full_like(mask, 255))], base_size=32, crop_size=40, augment=True
    )
    image, mask = dataset[(0, 0, 0)]
    assert image.shape == (3, 40, 40)
    assert (
        (mask[0, :32, :32] == 1).all()
        and (mask[0, 32:] == 0).all()
        and (mask[0, :, 32:] == 0).all()
    )
    assert image[:, 32:].abs().max() < 0.01 and image[:, :, 32:].abs().max() < 0.01


def test_same_key_same_output_other_epoch_other_output() -> None:
    dataset = ArrayDataset([red_on_blue(0)], augment=True, blur=True, color_jitter=0.3, **AUGMENT)
    first, again = dataset[(0, 7, 1)], dataset[(0, 7, 1)]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    for other in (dataset[(0, 7, 2)], dataset[(0, 8, 1)]):
        assert not torch.equal(first[0], other[0])
    assert dataset[0][0].shape == (3, 56, 56)  # a plain index draws fresh randomness


def test_validation_transform_resizes_to_base_size() -> None:
    dataset = ArrayDataset([red_on_blue(0)], base_size=48, crop_size=40, scale_range=[0.5, 2])
    image, mask = dataset[(0, 0, 0)]
    assert image.shape == (3, 48, 48) and mask.shape == (1, 48, 48)
    assert torch.equal(image, dataset[(0, 1, 5)][0])
    expected = cv2.resize(red_on_blue(0)[1], (48, 48), interpolation=cv2.INTER_LINEAR) / 255
    assert np.allclose(mask[0].numpy(), expected)


def test_image_and_mask_of_different_size_are_rejected() -> None:
    image, mask = red_on_blue(0)
    with pytest.raises(ValueError, match=r"'sample0'.*image 90x70, mask 45x70"):
        ArrayDataset([(image, mask[:, :45])], pair_mismatch="error")[0]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"base_size": 0}, "base_size"),
        ({"crop_size": -3}, "crop_size"),
        ({"crop_size": 10, "scale_range": [1.2, 0.8]}, "scale_range"),
        ({"crop_size": 10, "scale_range": [0, 1]}, "scale_range"),
        ({"crop_size": 10, "scale_range": [1]}, "scale_range"),
        ({"scale_range": [0.8, 1.2]}, "needs crop_size"),
        ({"rotate": -1}, "rotate"),
        ({"color_jitter": 1.5}, "color_jitter"),
    ],
)
def test_invalid_arguments_are_named(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ArrayDataset([red_on_blue(0)], **kwargs)


def test_repr_names_split_size_and_settings() -> None:
    text = repr(ArrayDataset([red_on_blue(0)] * 3, augment=True, **AUGMENT))
    for part in ("ArrayDataset", "split='train'", "images=3", "crop_size=56", "rotate=25.0"):
        assert part in text


def test_the_transform_settings_are_config_keys_of_every_image_dataset() -> None:
    settings = {f.name for f in dataclasses.fields(ImageTransform)}
    assert settings == {
        "base_size", "crop_size", "scale_range", "flip", "rotate", "blur", "color_jitter"
    }  # fmt: skip
    dataset_args = {"data_dir", "split", "augment", "pair_mismatch"}
    assert accepted_args(DUTSDataset) == settings | dataset_args
    assert accepted_args(DemoSODDataset) == accepted_args(DUTSDataset) | {"num_train", "num_test"}
    assert accepted_args(ArrayDataset) >= settings | {"pairs", "augment"}  # a user's subclass
    dataset = ArrayDataset([red_on_blue(0)], augment=True, **AUGMENT)
    assert dataset.transform == ImageTransform(**AUGMENT)
    with pytest.raises(dataclasses.FrozenInstanceError):
        dataset.transform.rotate = 0.0
    with pytest.raises(TypeError, match="windows_per_epoch"):
        ArrayDataset([red_on_blue(0)], windows_per_epoch=3)


# ------------------------------------------------------------------------------------ DUTS


def test_duts_pairs_by_stem_with_mixed_extensions(duts_dir: Path) -> None:
    image_dir = duts_dir / "DUTS-TR" / "DUTS-TR-Image"
    os.rename(image_dir / "train_001.jpg", image_dir / "train_001.JPEG")
    cv2.imwrite(str(image_dir / "train_002.png"), cv2.imread(str(image_dir / "train_002.jpg")))
    os.remove(image_dir / "train_002.jpg")
    (image_dir / "notes.txt").write_text("ignored")
    dataset = DUTSDataset(str(duts_dir), "train", base_size=32)
    assert len(dataset) == 6
    assert [os.path.basename(m) for _, m in dataset.files] == [
        f"train_{i:03d}.png" for i in range(6)
    ]
    assert os.path.basename(dataset.files[1][0]) == "train_001.JPEG"
    image, mask = dataset[1]
    assert image.shape == (3, 32, 32) and set(np.unique(mask.numpy())) >= {0.0, 1.0}
    assert len(DUTSDataset(str(duts_dir), "test")) == 3


def test_duts_missing_folders_are_named(tmp_path: Path, duts_dir: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"DUTS-TR-Image.*DUTS-TR-Mask"):
        DUTSDataset(str(tmp_path / "nowhere"))
    (duts_dir / "DUTS-TE" / "DUTS-TE-Mask").rename(duts_dir / "masks")
    with pytest.raises(FileNotFoundError, match=r"missing: .*DUTS-TE-Mask"):
        DUTSDataset(str(duts_dir), "test")
    with pytest.raises(ValueError, match="split must be one of"):
        DUTSDataset(str(duts_dir), "val")


def test_duts_unpaired_files_are_listed(duts_dir: Path) -> None:
    masks = duts_dir / "DUTS-TR" / "DUTS-TR-Mask"
    os.remove(masks / "train_004.png")
    os.remove(masks / "train_002.png")
    with pytest.raises(
        ValueError,
        match=r"2 images in .*DUTS-TR-Image have no mask in .*: "
        r"train_002.jpg, train_004.jpg",
    ):
        DUTSDataset(str(duts_dir))
    images = duts_dir / "DUTS-TE" / "DUTS-TE-Image"
    os.remove(images / "test_001.jpg")
    with pytest.raises(ValueError, match=r"1 masks in .*DUTS-TE-Mask have no image .*test_001.png"):
        DUTSDataset(str(duts_dir), "test")
    for name in os.listdir(images):
        os.remove(images / name)
    with pytest.raises(FileNotFoundError, match=r"no images in .*DUTS-TE-Image"):
        DUTSDataset(str(duts_dir), "test")


def test_duts_names_that_differ_only_in_extension_are_refused(duts_dir: Path) -> None:
    masks = duts_dir / "DUTS-TR" / "DUTS-TR-Mask"
    (masks / "train_003.jpg").write_bytes((masks / "train_003.png").read_bytes())
    with pytest.raises(ValueError, match=r"DUTS-TR-Mask: 1 name.*: train_003.jpg, train_003.png"):
        DUTSDataset(str(duts_dir))


def test_duts_unreadable_image_names_the_path(duts_dir: Path) -> None:
    path = duts_dir / "DUTS-TR" / "DUTS-TR-Image" / "train_003.jpg"
    path.write_bytes(b"\xff\xd8 truncated")
    dataset = DUTSDataset(str(duts_dir))
    with pytest.raises(OSError, match=r"train_003.jpg"):
        dataset[3]


# ------------------------------------------------------------------------------------ demo


def test_demo_data_is_deterministic_and_loads(tmp_path: Path) -> None:
    ensure_demo_data(str(tmp_path / "a"), 5, 2)
    ensure_demo_data(str(tmp_path / "b"), 5, 2)
    files_a = sorted(
        p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file()
    )
    assert len(files_a) == 2 * (5 + 2) + 1
    for rel in files_a:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
    loader = DemoSOD(
        batch_size=2,
        data_dir=str(tmp_path / "a"),
        split="test",
        num_train=5,
        num_test=2,
        base_size=64,
    )
    assert isinstance(loader.dataset, DemoSODDataset) and len(loader.dataset) == 2
    images, masks = next(iter(loader))
    assert images.shape == (2, 3, 64, 64) and 0 < masks.mean() < 1
    assert sorted(os.listdir(tmp_path)) == ["a", "b"]  # no temporary folders left


def test_demo_data_is_regenerated_for_other_counts_but_foreign_folders_are_kept(
    tmp_path: Path,
) -> None:
    target = tmp_path / "demo"
    ensure_demo_data(str(target), 3, 2)
    ensure_demo_data(str(target), 4, 2)
    assert len(os.listdir(target / "DUTS-TR" / "DUTS-TR-Image")) == 4
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("precious")
    with pytest.raises(FileExistsError, match="not demo data"):
        ensure_demo_data(str(foreign), 3, 2)
    assert (foreign / "keep.txt").read_text() == "precious"
    assert sorted(os.listdir(tmp_path)) == ["demo", "mine"]


def test_demo_race_loser_uses_the_winners_folder(tmp_path: Path, monkeypatch) -> None:
    target, generate = str(tmp_path / "demo"), demo_module._generate

    def another_process_wins_meanwhile(root: str, num_train: int, num_test: int) -> None:
        monkeypatch.setattr(demo_module, "_generate", generate)
        ensure_demo_data(target, num_train, num_test)
        generate(root, num_train, num_test)

    monkeypatch.setattr(demo_module, "_generate", another_process_wins_meanwhile)
    ensure_demo_data(target, 3, 2)
    assert os.listdir(tmp_path) == ["demo"]
    assert len(DUTSDataset(target)) == 3


# ----------------------------------------------------------------------------- data loaders


def test_val_split_is_disjoint_and_not_augmented(duts_dir: Path) -> None:
    loader = DUTS(
        batch_size=2,
        shuffle=True,
        val_split=2,
        seed=3,
        data_dir=str(duts_dir),
        augment=True,
        base_size=32,
        crop_size=24,
        scale_range=[0.8, 1.2],
    )
    train, val = loader.sampler.indices, loader.val_indices
    assert len(val) == 2 and not set(train) & set(val) and sorted(train + val) == list(range(6))
    val_loader = loader.split_validation()
    assert loader.dataset.augment and not val_loader.dataset.augment
    images, masks = next(iter(val_loader))
    assert images.shape == (2, 3, 32, 32) and masks.shape == (2, 1, 32, 32)
    assert next(iter(loader))[0].shape == (2, 3, 24, 24)


def test_batches_do_not_depend_on_the_worker_count(make_duts) -> None:
    data_dir = str(make_duts(num_train=8))
    settings = {
        "batch_size": 3,
        "shuffle": True,
        "seed": 11,
        "data_dir": data_dir,
        "augment": True,
        "base_size": 32,
        "crop_size": 28,
        "scale_range": [0.8, 1.25],
        "rotate": 15,
        "blur": True,
        "color_jitter": 0.2,
    }
    runs = []
    for workers in (0, 2):
        loader = DUTS(num_workers=workers, **settings)
        loader.sampler.set_epoch(2)
        runs.append([batch for batch in loader])
    assert len(runs[0]) == 2  # drop_last
    for (image0, mask0), (image2, mask2) in zip(*runs, strict=True):
        assert torch.equal(image0, image2) and torch.equal(mask0, mask2)


def readme_dataset_example() -> str:
    """The Python block of the README's "A dataset." paragraph (Extending)."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("**A dataset.**") :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_dataset_example_loads_and_is_selectable_from_a_config(tmp_path: Path) -> None:
    for split, count in (("train", 4), ("test", 2)):
        for i in range(count):
            image = np.full((30, 40, 3), 60 + 40 * i, np.uint8)
            mask = np.zeros((30, 40), np.uint8)
            mask[5:20, 10:30] = 255
            write_png(tmp_path / "data" / split / "images" / f"{i}.jpg", image)
            write_png(tmp_path / "data" / split / "masks" / f"{i}.png", mask)
    names: dict = {}
    exec(readme_dataset_example(), names)  # exactly the README's lines
    loader = names["MyData"](batch_size=2, data_dir=str(tmp_path / "data"), base_size=32)
    images, masks = next(iter(loader))
    assert images.shape == (2, 3, 32, 32) and masks.shape == (2, 1, 32, 32)
    assert len(names["MyDataset"](str(tmp_path / "data"), "test")) == 2

    known = registries()
    known = {**known, "train_loader": {**known["train_loader"], "MyData": names["MyData"]}}
    config = {
        "arch": {"type": "U2Net", "args": {"variant": "lite"}},
        "train_loader": {"type": "MyData", "args": {"data_dir": "data", "batch_size": 2}},
        "loss": {"type": "DeepSupervisionLoss"},
        "optimizer": {"type": "Adam"},
    }
    assert cfg.validate_config(config, known)["train_loader"]["type"] == "MyData"
    config["train_loader"]["args"]["crop"] = 3
    with pytest.raises(cfg.ConfigError, match=r"'train_loader\.args\.crop' for MyData"):
        cfg.validate_config(config, known)
