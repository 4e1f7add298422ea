"""The ready configs: real-data recipes follow the published protocols, demo configs are apart."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from dataloaders.building_demo import ensure_building_demo
from dataloaders.buildings import InriaBuildingDataset
from tests.helpers import ROOT
from train import registries
from utils import config as cfg

CONFIGS = sorted((ROOT / "configs").glob("*.json"))


def load(name: str) -> dict:
    return json.loads((ROOT / "configs" / name).read_text())


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_recipe_validates_and_reads_one_data_dir(path: Path):
    config = cfg.validate_config(json.loads(path.read_text()), registries())
    folders = {config[s]["args"]["data_dir"] for s in ("train_loader", "val_loader")}
    assert len(folders) == 1  # the README's --opt lines set both loaders


def test_inria_recipe_validates_on_tiles_1_to_5_of_real_data():
    config = load("inria_u2net.json")
    for section, split in (("train_loader", "train"), ("val_loader", "val")):
        args = config[section]["args"]
        assert args["split"] == split and args["val_tiles"] == 5 and not args.get("demo", False)
    demo = load("inria_demo.json")
    assert demo["train_loader"]["args"]["demo"] and demo["val_loader"]["args"]["demo"]


@pytest.mark.parametrize("name", ["duts_u2net_full.json", "duts_u2net_lite.json"])
def test_duts_recipes_train_on_duts_tr_and_validate_on_duts_te(name):
    config = load(name)
    assert config["train_loader"]["args"]["split"] == "train"  # DUTS-TR
    assert config["val_loader"]["args"]["split"] == "test"  # DUTS-TE


def test_whu_recipe_uses_its_train_and_val_folders():
    config = load("whu_u2net.json")
    assert config["train_loader"]["args"]["split"] == "train"
    assert config["val_loader"]["args"]["split"] == "val"


def test_a_demo_config_pointed_at_real_data_says_to_turn_the_demo_off(tmp_path):
    (tmp_path / "AerialImageDataset").mkdir()
    with pytest.raises(FileExistsError, match=r"set demo to false"):
        InriaBuildingDataset(str(tmp_path), "train", demo=True)


def test_a_real_data_config_pointed_at_the_demo_says_so(tmp_path, caplog):
    ensure_building_demo(str(tmp_path), num_tiles=4, tile_size=64)
    with caplog.at_level(logging.WARNING, logger="u2seg"):
        InriaBuildingDataset(str(tmp_path), "train", val_tiles=1, crop_size=32)
    assert "holds the synthetic building demo, not the Inria dataset" in caplog.text
