"""Config validation, defaults, dotted overrides and building from registries."""

import json
import re

import pytest

from tests.helpers import ROOT
from train import registries
from utils import config as cfg

BASE = {
    "arch": {"type": "U2Net", "args": {"variant": "lite"}},
    "train_loader": {"type": "DUTS", "args": {"data_dir": "x", "batch_size": 2}},
    "loss": {"type": "DeepSupervisionLoss"},
    "optimizer": {"type": "AdamW", "args": {"lr": 0.001}},
}

REGISTRIES = registries()


def test_defaults_are_filled_and_input_untouched():
    full = cfg.validate_config(BASE, REGISTRIES)
    assert full["trainer"]["epochs"] == cfg.DEFAULTS["trainer"]["epochs"]
    assert full["val_loader"] is None and full["lr_scheduler"] is None
    assert "trainer" not in BASE


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({**BASE, "bogus": 1}, "unknown config key 'bogus'"),
        ({**BASE, "trainer": {"epochz": 3}}, "unknown config key 'trainer.epochz'"),
        ({**BASE, "arch": {"type": "U3Net"}}, "available: U2Net"),
        (
            {**BASE, "arch": {"type": "U2Net", "args": {"variantt": "lite"}}},
            "unknown config key 'arch.args.variantt'",
        ),
        (
            {**BASE, "train_loader": {"type": "DUTS", "args": {"data_dir": "x", "bach_size": 2}}},
            "train_loader.args.bach_size",
        ),
        ({**BASE, "optimizer": {"type": "AdamW", "args": {"params": []}}}, "optimizer.args.params"),
        ({**BASE, "trainer": {"epochs": "5"}}, "'trainer.epochs' must be an integer"),
        ({**BASE, "trainer": {"val": 1}}, "'trainer.val' must be true or false"),
        ({**BASE, "trainer": {"monitor": "maximum maxF"}}, "trainer.monitor"),
        ({**BASE, "trainer": {"epochs": 0}}, "'trainer.epochs' must be at least 1"),
        ({k: v for k, v in BASE.items() if k != "loss"}, "needs a 'loss' section"),
        ({**BASE, "loss": {"type": "DeepSupervisionLoss", "weight": [1]}}, "'loss.weight'"),
        *(
            (
                {**BASE, "train_loader": {"type": "DUTS", "args": {"val_split": bad}}},
                f"'train_loader.args.val_split' must be 0 (none), a fraction 0 < val_split < 1 of "
                f"the samples (e.g. 0.1) or a whole count of them (an integer, e.g. 50), got {bad}",
            )
            for bad in (1.0, 1.5, -0.2, -3)
        ),
    ],
)
def test_bad_configs_name_the_key(config, message):
    with pytest.raises(cfg.ConfigError, match=re.escape(message)):
        cfg.validate_config(config, REGISTRIES)


TOP_LEVEL = set(cfg.DEFAULTS) | set(cfg.BUILT_SECTIONS)


def test_every_mistake_of_a_config_is_named_at_once():
    config = {
        **BASE,
        "sed": 1,
        "trainer": {"epochz": 3, "val": 1},
        "optimizer": {"type": "AdamW", "args": {"lr": "fast"}},
    }
    with pytest.raises(cfg.ConfigError) as err:
        cfg.validate_config(config, REGISTRIES)
    lines = str(err.value).splitlines()
    assert lines[0] == "4 mistakes in the config:"
    assert [line.split(";")[0].split(",")[0] for line in lines[1:]] == [
        "  - unknown config key 'sed'",
        "  - unknown config key 'trainer.epochz'",
        "  - 'trainer.val' must be true or false",
        "  - 'optimizer.args.lr' must be a number",
    ]
    with pytest.raises(cfg.ConfigError) as err:  # an --opt is named in its own line only
        cfg.apply_overrides({**BASE, "sed": 1}, ["trainer.val=1"], REGISTRIES)
    assert str(err.value).splitlines()[1:] == [
        f"  - unknown config key 'sed'; valid top-level keys: {', '.join(sorted(TOP_LEVEL))}",
        "  - --opt trainer.val=1: 'trainer.val' must be true or false, got 1 (int)",
    ]
    values = {**BASE, "seed": -1, "threads": -2, "trainer": {"epochs": 0}}  # keys right, values not
    with pytest.raises(cfg.ConfigError, match=r"^3 mistakes in the config:\n  - 'seed' must be"):
        cfg.validate_config(values, REGISTRIES)


def test_loader_accepts_dataset_arguments():
    config = {
        **BASE,
        "train_loader": {
            "type": "DemoSOD",
            "args": {
                "batch_size": 2,
                "num_train": 4,
                "crop_size": 32,
                "augment": True,
                "val_split": 0.25,
            },
        },
    }
    cfg.validate_config(config, REGISTRIES)


def test_overrides_parse_json_and_strings():
    config = cfg.apply_overrides(
        BASE,
        [
            "trainer.epochs=5",
            "arch.args.variant=full",
            "trainer.monitor=min MAE",
            "trainer.tensorboard=false",
        ],
        REGISTRIES,
    )
    assert config["trainer"]["epochs"] == 5
    assert config["arch"]["args"]["variant"] == "full"
    assert config["trainer"]["monitor"] == "min MAE"
    assert config["trainer"]["tensorboard"] is False
    assert "trainer" not in BASE


@pytest.mark.parametrize("opt", ["bogus.key=3", "trainer.bogus=1", "arch.args.depth=3"])
def test_unknown_override_is_named(opt):
    with pytest.raises(cfg.ConfigError, match=f"--opt {opt.replace('.', '[.]')}"):
        cfg.apply_overrides(BASE, [opt], REGISTRIES)


@pytest.mark.parametrize("opt", ["novalue", "=3", "a..b=1"])
def test_malformed_override(opt):
    with pytest.raises(cfg.ConfigError, match=r"KEY\.PATH=VALUE"):
        cfg.apply_overrides(BASE, [opt], REGISTRIES)


def test_merge_is_deep():
    merged = cfg.merge({"a": {"b": 1, "c": 2}, "d": 3}, {"a": {"b": 5}})
    assert merged == {"a": {"b": 5, "c": 2}, "d": 3}


def test_load_config_errors(tmp_path):
    with pytest.raises(cfg.ConfigError, match="cannot read config file"):
        cfg.load_config(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(cfg.ConfigError, match=r"bad\.json is not valid JSON"):
        cfg.load_config(bad)
    (tmp_path / "list.json").write_text(json.dumps([1]))
    with pytest.raises(cfg.ConfigError, match="JSON object"):
        cfg.load_config(tmp_path / "list.json")


def test_build_objects():
    config = cfg.validate_config(BASE, REGISTRIES)
    model = cfg.build(config, "arch", REGISTRIES["arch"])
    assert model.variant == "lite"
    optimizer = cfg.build(config, "optimizer", REGISTRIES["optimizer"], model.parameters())
    assert optimizer.param_groups[0]["lr"] == 0.001


def test_shipped_configs_are_valid():

    root = ROOT
    paths = [root / "config.json", *sorted((root / "configs").glob("*.json"))]
    assert len(paths) >= 3
    for path in paths:
        cfg.validate_config(cfg.load_config(path), REGISTRIES)
