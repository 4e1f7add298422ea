"""Validation sanity: shared train/val images warned about, held-out counts in the log,
``val_split`` range and its clash with ``val_loader``, config type errors naming the key, the
monitor checked with the config, and ``--opt`` applied as a whole before validation."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

import train
from base.base_dataloader import warn_shared_images
from dataloaders import DUTS, VOCBinary
from tests.helpers import tiny_config
from utils import config as cfg
from utils.metrics import HIGHER_IS_BETTER

REGISTRIES = train.registries()
SHARED = "from the training images too"


def write_voc(root: Path, names: list[str], splits: dict[str, list[str]] | None = None) -> Path:
    """A VOC layout: ``JPEGImages/NAME.png`` and ``SegmentationClass/NAME.png`` (40x40, a
    building square), plus ``ImageSets/Segmentation/SPLIT.txt`` for each of ``splits``."""
    for i, name in enumerate(names):
        mask = np.zeros((40, 40), np.uint8)
        mask[5 + i : 20 + i, 8:24] = 1
        image = np.full((40, 40, 3), 90, np.uint8)
        image[mask > 0] = 230
        for folder, array in (("JPEGImages", image), ("SegmentationClass", mask)):
            (root / folder).mkdir(parents=True, exist_ok=True)
            assert cv2.imwrite(str(root / folder / f"{name}.png"), array)
    for split, listed in (splits or {}).items():
        sets = root / "ImageSets" / "Segmentation"
        sets.mkdir(parents=True, exist_ok=True)
        (sets / f"{split}.txt").write_text("".join(f"{name}\n" for name in listed))
    return root


def voc_loaders(root: Path) -> tuple[VOCBinary, VOCBinary]:
    """The training (augmented windows) and validation (grid) loaders of a VOC folder."""
    common = {"data_dir": str(root), "batch_size": 2, "crop_size": 32}
    return (
        VOCBinary(split="train", augment=True, shuffle=True, **common),
        VOCBinary(split="val", evaluation=True, **common),
    )


def duts_config(data_dir: Path, **train_args: object) -> dict:
    """A config on the DUTS folder ``data_dir`` (not built here)."""
    return {
        "arch": {"type": "U2Net", "args": {"variant": "lite"}},
        "train_loader": {
            "type": "DUTS",
            "args": {"data_dir": str(data_dir), "batch_size": 2, "base_size": 32, **train_args},
        },
        "loss": {"type": "DeepSupervisionLoss"},
        "optimizer": {"type": "AdamW", "args": {"lr": 0.001}},
    }


def test_voc_without_split_files_warns_that_validation_reads_training_images(tmp_path, caplog):
    train_loader, val_loader = voc_loaders(write_voc(tmp_path, ["a", "b", "c"]))
    with caplog.at_level(logging.WARNING, logger="u2seg"):
        assert warn_shared_images(train_loader, val_loader) == 3
    assert f"validation reads 3 of its 3 images {SHARED}" in caplog.text
    assert "ImageSets/Segmentation" in caplog.text


def test_voc_with_split_files_does_not_warn(tmp_path, caplog):
    root = write_voc(tmp_path, ["a", "b", "c"], {"train": ["a", "c"], "val": ["b"]})
    with caplog.at_level(logging.WARNING, logger="u2seg"):
        assert warn_shared_images(*voc_loaders(root)) == 0
    assert SHARED not in caplog.text


def test_a_val_loader_on_the_training_folder_warns_in_the_run_log(tmp_path):
    config = tiny_config(tmp_path, epochs=1)
    run = train.main(["-c", str(config), "-d", "cpu", "--opt", "val_loader.args.split=train"])
    log = (run / "train.log").read_text()
    assert f"validation reads 8 of its 8 images {SHARED}" in log


def test_val_split_counts_say_what_was_held_out(tmp_path):
    config = tiny_config(tmp_path, epochs=1)
    opts = ["val_loader=null", "train_loader.args.val_split=2", "lr_scheduler=null"]
    run = train.main(["-c", str(config), "-d", "cpu", "--opt", *opts])
    log = (run / "train.log").read_text()
    assert "images=6 of 8 (2 held out for validation by val_split=2)" in log
    assert "images=2 of 8 (held out from training by val_split)" in log
    assert "images=8," not in log and SHARED not in log


@pytest.mark.parametrize("val_split", [1.0, 1.5, -0.2, -3])
def test_a_val_split_that_is_neither_fraction_nor_count_stops_the_config_check(duts_dir, val_split):
    with pytest.raises(cfg.ConfigError, match=r"'train_loader\.args\.val_split' must be 0"):
        cfg.validate_config(duts_config(duts_dir, val_split=val_split), REGISTRIES)


@pytest.mark.parametrize(
    ("val_split", "problem"),
    [
        (6, "val_split=6 is out of range"),
        (0.01, "val_split=0.01 holds out 0 of the 6 samples"),
        (0.99, "val_split=0.99 holds out 6 of the 6 samples"),
    ],
)
def test_val_split_out_of_range_is_refused_with_the_key(duts_dir, val_split, problem):
    config = cfg.validate_config(duts_config(duts_dir, val_split=val_split), REGISTRIES)
    with pytest.raises(cfg.ConfigError) as raised:
        cfg.build(config, "train_loader", REGISTRIES["train_loader"])
    assert str(raised.value).startswith(f"train_loader (DUTS): {problem}: expected a fraction")
    assert "between 1 and 5 (an integer" in str(raised.value)


def test_val_split_fraction_and_count_are_accepted(duts_dir):
    for val_split, held_out in ((0.5, 3), (1, 1), (5, 5)):
        loader = DUTS(data_dir=str(duts_dir), batch_size=2, val_split=val_split)
        assert len(loader.val_indices) == held_out
        assert len(loader.sampler) == 6 - held_out


def test_val_split_with_a_val_loader_is_refused_naming_both_keys(duts_dir):
    config = duts_config(duts_dir, val_split=0.2)
    config["val_loader"] = {"type": "DUTS", "args": {"data_dir": str(duts_dir), "batch_size": 1}}
    with pytest.raises(
        cfg.ConfigError, match=r"'train_loader\.args\.val_split' \(0\.2\) and 'val_loader'"
    ):
        cfg.validate_config(config, REGISTRIES)
    config["val_loader"] = None  # the held-out images are the validation data
    cfg.validate_config(config, REGISTRIES)


@pytest.mark.parametrize(
    ("opt", "message"),
    [
        ("optimizer.args.lr=fast", """'optimizer.args.lr' must be a number, got "fast" (str)"""),
        (
            'train_loader.args.batch_size="4"',
            """'train_loader.args.batch_size' must be an integer, got "4" (str)""",
        ),
        (
            "train_loader.args.batch_size=4.0",
            "'train_loader.args.batch_size' must be an integer, got 4.0 (float)",
        ),
        (
            "train_loader.args.val_split=true",
            "'train_loader.args.val_split' must be a number, got true (bool)",
        ),
        (
            "train_loader.args.crop_size=big",
            """'train_loader.args.crop_size' must be an integer or null, got "big" (str)""",
        ),
        (
            "train_loader.args.augment=1",
            "'train_loader.args.augment' must be true or false, got 1 (int)",
        ),
        ("arch.args.variant=3", "'arch.args.variant' must be a string, got 3 (int)"),
        ("trainer.epochs=many", """'trainer.epochs' must be an integer, got "many" (str)"""),
    ],
)
def test_config_type_errors_name_the_key_and_the_expected_type(duts_dir, opt, message):
    with pytest.raises(cfg.ConfigError) as raised:
        cfg.apply_overrides(duts_config(duts_dir), [opt], REGISTRIES)
    assert str(raised.value) == f"--opt {opt}: {message}"


def test_config_types_accept_what_the_arguments_take(duts_dir):
    opts = [
        "optimizer.args.lr=1",  # an int where a float is annotated
        "train_loader.args.crop_size=null",  # int | None
        "train_loader.args.rotate=10",
        "train_loader.args.scale_range=[0.5, 1.5]",  # not a single kind: not checked
        "optimizer.args.betas=[0.9, 0.99]",
    ]
    config = cfg.apply_overrides(duts_config(duts_dir), opts, REGISTRIES)
    assert config["optimizer"]["args"]["lr"] == 1


def test_unknown_monitor_metric_is_refused_with_the_config(tmp_path):
    config = json.loads(tiny_config(tmp_path).read_text())
    config["trainer"]["monitor"] = "max maxFF"
    with pytest.raises(cfg.ConfigError, match=r"'trainer\.monitor': unknown metric 'maxFF'"):
        cfg.validate_config(config, REGISTRIES, HIGHER_IS_BETTER)
    config["trainer"]["monitor"] = "min MAE"
    assert cfg.validate_config(config, REGISTRIES, HIGHER_IS_BETTER)["trainer"]["monitor"]


def test_train_refuses_an_unknown_monitor_before_building_data(tmp_path):
    config = tiny_config(tmp_path)
    opts = ["trainer.monitor=max maxFF", "train_loader.args.data_dir=/nonexistent/data"]
    with pytest.raises(cfg.ConfigError) as raised:
        train.main(["-c", str(config), "-d", "cpu", "--opt", *opts])
    assert str(raised.value).startswith(
        "--opt trainer.monitor=max maxFF: 'trainer.monitor': unknown metric 'maxFF'"
    )
    assert not (tmp_path / "saved").exists()  # no run folder, no data read


def test_opt_applies_every_override_before_validating(tmp_path, duts_dir):
    config = json.loads(tiny_config(tmp_path).read_text())  # DemoSOD: num_train, num_test...
    args = json.dumps({"data_dir": str(duts_dir), "batch_size": 2, "split": "train"})
    full = cfg.apply_overrides(
        config, ["train_loader.type=DUTS", f"train_loader.args={args}"], REGISTRIES
    )
    assert full["train_loader"] == {"type": "DUTS", "args": json.loads(args)}
    with pytest.raises(cfg.ConfigError, match=r"train_loader\.args\.num_train"):
        cfg.apply_overrides(config, ["train_loader.type=DUTS"], REGISTRIES)  # the first alone


def test_override_errors_name_only_the_override_at_fault(tmp_path):
    config = json.loads(tiny_config(tmp_path).read_text())
    opts = ["trainer.epochs=3", "train_loader.type=DUTS"]  # DemoSOD's num_train stays
    with pytest.raises(cfg.ConfigError) as raised:
        cfg.apply_overrides(config, opts, REGISTRIES)
    assert str(raised.value).startswith(
        "--opt train_loader.type=DUTS: unknown config key 'train_loader.args.num_train' for DUTS"
    )
    config["trainer"]["epochs"] = 0  # a mistake of the config file, not of an override
    with pytest.raises(cfg.ConfigError) as raised:
        cfg.apply_overrides(config, ["optimizer.args.lr=0.01"], REGISTRIES)
    assert str(raised.value) == "'trainer.epochs' must be at least 1, got 0"
