"""The thread layout of training: the ``threads`` config key and ``train.py --threads``, the
loader workers counted against the cores, and the share of each DDP process of a node."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import pytest
import torch

from bench.threads import threads_option
from tests.helpers import ROOT, tiny_config
from train import registries
from utils import config as cfg
from utils.runtime.threads import (
    TrainingLayout,
    apply_training_threads,
    local_processes,
    training_layout,
    usable_cores,
)

BASE = {
    "arch": {"type": "U2Net", "args": {"variant": "lite"}},
    "train_loader": {"type": "DUTS", "args": {"data_dir": "x", "batch_size": 2}},
    "loss": {"type": "DeepSupervisionLoss"},
    "optimizer": {"type": "AdamW", "args": {"lr": 0.001}},
}


def test_threads_defaults_to_every_core_and_takes_a_count():
    known = registries()
    assert cfg.validate_config(BASE, known)["threads"] == 0
    assert cfg.validate_config({**BASE, "threads": 3}, known)["threads"] == 3


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("2", "'threads' must be an integer, got \"2\" (str)"),
        (1.5, "'threads' must be an integer, got 1.5 (float)"),
        (True, "'threads' must be an integer, got true (bool)"),
        (-1, "'threads' must be 0 (every usable core) or a number of cores, got -1"),
    ],
)
def test_a_bad_threads_value_names_the_key(value, message):
    with pytest.raises(cfg.ConfigError) as err:
        cfg.validate_config({**BASE, "threads": value}, registries())
    assert str(err.value) == message


@pytest.mark.parametrize(
    "command",
    [
        ["train.py", "-c", "config.json"],
        ["inference.py", "-m", "x.pth", "-i", "in", "-o", "out"],
        ["evaluate.py", "--pred", "maps", "--gt", "masks"],
        ["tools/export_onnx.py", "-m", "x.pth", "-o", "x.onnx"],
    ],
)
def test_a_negative_threads_option_is_named_as_the_option(command):
    done = subprocess.run(
        [sys.executable, *command, "--threads", "-1"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().endswith(
        "error: --threads must be 0 (every usable core) or a number of cores, got -1"
    )


def test_opt_threads_is_validated_as_the_key():
    with pytest.raises(cfg.ConfigError, match=r"^--opt threads=-2: 'threads' must be 0"):
        cfg.apply_overrides(BASE, ["threads=-2"], registries())


def test_loader_workers_take_cores_from_three_cores_on_and_at_most_half():
    # 2 cores: the demo's worker sleeps most of the time, 2 compute threads stay (bench/threads.py)
    assert training_layout(0, 1, cores=2) == TrainingLayout(2, 2, 2, 1)
    assert training_layout(0, 4, cores=2).compute == 2
    assert training_layout(0, 1, cores=3).compute == 2
    assert training_layout(0, 1, cores=4).compute == 3
    assert training_layout(0, 4, cores=8).compute == 4
    assert training_layout(0, 16, cores=8).compute == 4
    assert training_layout(0, 0, cores=8).compute == 8
    assert training_layout(1, 4, cores=8) == TrainingLayout(8, 1, 1, 4)
    # more threads than cores only wait for each other: capped at the cores (4, then 2 workers)
    assert training_layout(6, 2, cores=4) == TrainingLayout(4, 4, 2, 2)
    assert training_layout(64, 1, cores=2) == TrainingLayout(2, 2, 2, 1)


def test_each_ddp_process_of_a_node_gets_its_share():
    assert training_layout(0, 0, processes=2, cores=2) == TrainingLayout(2, 1, 1, 0)
    assert training_layout(0, 0, processes=3, cores=2).compute == 1  # at least one
    assert training_layout(0, 2, processes=2, cores=16) == TrainingLayout(16, 8, 6, 2)
    assert training_layout(8, 2, processes=2, cores=16) == TrainingLayout(16, 4, 2, 2)
    for bad in ({"threads": -1}, {"loader_workers": -1}, {"processes": 0}):
        with pytest.raises(ValueError, match="must be 0 or more and processes at least 1"):
            training_layout(**bad)


def test_local_processes_come_from_torchrun(monkeypatch):
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert local_processes() == 1
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert local_processes() == 4
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "four")
    assert local_processes() == 1


def test_apply_training_threads_sets_the_share_of_this_process(monkeypatch, restore_threads):
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(usable_cores()))
    layout = apply_training_threads(0, 1)
    assert layout.share == layout.compute == torch.get_num_threads() == 1
    assert cv2.getNumThreads() == 1
    assert layout.describe() == f"threads: 1 compute, 1 loader worker (1 of {usable_cores()} cores)"
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    assert apply_training_threads(0, 0).compute == torch.get_num_threads() == usable_cores()


def test_the_bench_finds_the_threads_option_of_each_layout():
    for compute, workers in [(1, 0), (2, 1), (3, 1), (4, 4), (6, 2)]:
        threads = threads_option(compute, workers, cores=8)
        assert training_layout(threads, workers, cores=8).compute == compute
    with pytest.raises(ValueError, match="no --threads gives 8 compute threads"):
        threads_option(8, 2, cores=8)  # workers take 2 of the 8 cores


def test_train_threads_option_reaches_the_layout_and_the_stored_config(tmp_path: Path):
    config = tiny_config(tmp_path, epochs=1)
    done = subprocess.run(
        [sys.executable, "train.py", "-c", str(config), "-d", "cpu", "--threads", "1",
         "--opt", "trainer.tensorboard=false", "train_loader.args.num_workers=1"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    expected = f"threads: 1 compute, 1 loader worker (1 of {usable_cores()} cores)"
    logged = [line for line in done.stdout.splitlines() if "threads: " in line]
    assert len(logged) == 1 and logged[0].endswith(expected), done.stdout  # once, at start
    (run_dir,) = (tmp_path / "saved" / "runs" / "tiny").iterdir()
    assert expected in (run_dir / "train.log").read_text()
    assert json.loads((run_dir / "config.json").read_text())["threads"] == 1
