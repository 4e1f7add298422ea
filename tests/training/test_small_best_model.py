"""best_model.pth holds what inference and fine-tuning need (weights, config, epoch, score), not
the training state: a fraction of a periodic checkpoint's size; it loads in inference.py and as
arch.args.pretrained, and `-r best_model.pth` says which checkpoint to resume from."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import train
from tests.helpers import ROOT, random_image, tiny_config, write_png
from utils import config as cfg
from utils.io.checkpoint import MODEL_KEYS, TRAINING_KEYS, load_checkpoint


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder of a one-epoch tiny lite run (best_model.pth and checkpoint-epoch1.pth)."""
    config = tiny_config(tmp_path_factory.mktemp("small_best"), epochs=1)
    return train.main(["-c", str(config), "-d", "cpu", "--opt", "trainer.tensorboard=false"])


def test_best_model_is_the_weights_config_and_score_at_a_third_of_the_size(run):
    best, periodic = run / "best_model.pth", run / "checkpoint-epoch1.pth"
    assert best.stat().st_size < periodic.stat().st_size / 2
    state, full = load_checkpoint(best), load_checkpoint(periodic)
    assert set(state) == set(MODEL_KEYS)
    assert not {"optimizer", "lr_scheduler", "scaler", "rng"} & set(state)
    assert set(TRAINING_KEYS) <= set(full)  # the periodic checkpoint stays resumable
    assert state["epoch"] == state["best_epoch"] == 1
    assert state["monitor_best"] == full["monitor_best"]
    assert state["config"] == full["config"] and state["config"]["normalisation"] == "imagenet"
    for key, value in full["state_dict"].items():
        assert torch.equal(state["state_dict"][key], value), key


def test_best_model_loads_in_inference_py_like_the_periodic_checkpoint(run, tmp_path):
    image = write_png(tmp_path / "images" / "a.png", random_image(40, 48))
    maps = {}
    for name in ("best_model.pth", "checkpoint-epoch1.pth"):
        out = tmp_path / name
        command = [sys.executable, "inference.py", "-m", str(run / name), "-i", str(image)]
        command += ["-o", str(out), "--device", "cpu"]
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        maps[name] = (out / "maps" / "a.png").read_bytes()
    assert maps["best_model.pth"] == maps["checkpoint-epoch1.pth"]


def test_best_model_loads_as_arch_args_pretrained(run, tmp_path):
    config = cfg.load_config(tiny_config(tmp_path))
    config["arch"]["args"]["pretrained"] = str(run / "best_model.pth")
    config = cfg.validate_config(config, train.registries())
    model = cfg.build(config, "arch", train.registries()["arch"])
    best = load_checkpoint(run / "best_model.pth")["state_dict"]
    for key, value in model.state_dict().items():
        assert torch.equal(value, best[key]), key


def test_resume_from_best_model_names_the_checkpoint_to_resume_from(run):
    done = subprocess.run(
        [sys.executable, "train.py", "-r", str(run / "best_model.pth")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 2 and "Traceback" not in done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"error: {run / 'best_model.pth'} is a model checkpoint")
    assert f"resume from {run / 'checkpoint-epoch1.pth'}, the newest checkpoint" in line
    assert "arch.args.pretrained" in line


def test_resume_from_a_best_model_alone_says_its_folder_has_no_checkpoint(run, tmp_path):
    alone = tmp_path / "best_model.pth"
    shutil.copy(run / "best_model.pth", alone)
    with pytest.raises(ValueError, match=f"its folder {tmp_path} holds no checkpoint-epochN.pth"):
        train.main(["-r", str(alone), "-d", "cpu"])


def test_a_best_model_restored_on_resume_is_small_too(run, tmp_path):
    copy = shutil.copytree(run, tmp_path / "run")
    (copy / "best_model.pth").unlink()
    train.main(["-r", str(copy / "checkpoint-epoch1.pth"), "-d", "cpu"])  # complete: no training
    assert "restored best_model.pth from" in (copy / "train.log").read_text()
    restored = load_checkpoint(copy / "best_model.pth")
    assert set(restored) == set(MODEL_KEYS) and restored["epoch"] == 1
