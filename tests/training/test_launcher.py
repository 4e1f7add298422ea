"""The launcher decides how a run executes (``distributed.mode`` ``"auto"``), and a checkpoint
written in one mode resumes in another with no option."""

from __future__ import annotations

import json
import socket

import pytest
import torch

import train
from tests.helpers import tiny_config
from tests.training.test_distributed_training import (
    LAUNCH_VARS,
    records,
    run_folders,
    torchrun,
)
from utils.io.checkpoint import load_checkpoint
from utils.runtime.distributed import LaunchError, cleanup, launcher
from utils.runtime.execution import Execution, resolve_mode


@pytest.fixture
def no_launcher(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """A process environment without torchrun's or SLURM's variables."""
    for name in (*LAUNCH_VARS, "SLURM_NTASKS"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_torchrun_with_no_mode_trains_ddp_and_resumes_in_one_process_and_back(
    tmp_path, no_launcher
):
    config = tiny_config(tmp_path, epochs=2)
    done = torchrun("-c", config, "--opt", "trainer.epochs=2")  # no distributed.mode
    assert "DDP, 2 processes" in done.stdout
    (run,) = run_folders(tmp_path)
    stored = load_checkpoint(run / "checkpoint-epoch2.pth")["config"]
    assert stored["distributed"]["mode"] == "auto"  # the launcher, not the config, chose DDP

    train.main(["-r", str(run / "checkpoint-epoch2.pth"), "--opt", "trainer.epochs=3"])
    assert [r["epoch"] for r in records(run)] == [1, 2, 3]
    log = (run / "train.log").read_text()
    assert "execution: cpu;" in log.split("resumed from")[-2]  # the one-process part

    done = torchrun("-r", run / "checkpoint-epoch3.pth", "--opt", "trainer.epochs=4")
    assert "DDP, 2 processes" in done.stdout
    assert [r["epoch"] for r in records(run)] == [1, 2, 3, 4]
    assert load_checkpoint(run / "checkpoint-epoch4.pth")["epoch"] == 4


def test_auto_is_ddp_under_torchrun_or_a_multi_task_slurm_step(no_launcher):
    assert launcher() is None and resolve_mode("auto") == "none"
    no_launcher.setenv("SLURM_PROCID", "0")
    no_launcher.setenv("SLURM_NTASKS", "1")  # a one-task job (or its batch shell)
    assert launcher() is None and resolve_mode("auto") == "none"
    no_launcher.setenv("SLURM_NTASKS", "4")
    assert launcher() == "slurm" and resolve_mode("auto") == "ddp"
    no_launcher.setenv("RANK", "1")
    no_launcher.setenv("WORLD_SIZE", "2")
    assert launcher() == "torchrun" and resolve_mode("auto") == "ddp"
    assert resolve_mode("ddp") == "ddp"


@pytest.mark.parametrize("mode", ["none", "dp"])
def test_one_process_modes_under_a_launcher_of_several_are_refused(no_launcher, mode):
    no_launcher.setenv("RANK", "0")
    no_launcher.setenv("WORLD_SIZE", "2")
    with pytest.raises(LaunchError, match=f"distributed.mode is '{mode}' .* torchrun started 2"):
        resolve_mode(mode)
    no_launcher.setenv("WORLD_SIZE", "1")  # torchrun --nproc_per_node=1: nothing to share
    assert resolve_mode(mode) == mode


def test_the_execution_record_says_how_the_run_was_launched():
    cpu = torch.device("cpu")
    assert Execution(cpu).record() == {
        "mode": "none", "launcher": None, "world_size": 1, "device": "cpu", "dp_ids": [],
    }  # fmt: skip
    ddp = Execution(cpu, rank=1, world_size=2, launcher="torchrun").record()
    assert (ddp["mode"], ddp["launcher"], ddp["world_size"]) == ("ddp", "torchrun", 2)
    assert json.loads(json.dumps(ddp)) == ddp  # plain values, as a checkpoint needs


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_an_explicit_ddp_checkpoint_resumes_in_one_process_with_no_option(tmp_path, no_launcher):
    config = tiny_config(tmp_path, epochs=1)
    env = {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1"}
    for name, value in {**env, "MASTER_PORT": str(free_port())}.items():
        no_launcher.setenv(name, value)
    try:  # a DDP group of one process, in this one
        run = train.main(["-c", str(config), "--opt", "distributed.mode=ddp"])
    finally:
        cleanup()
    for name in env:
        no_launcher.delenv(name)
    train.main(["-r", str(run / "checkpoint-epoch1.pth"), "--opt", "trainer.epochs=2"])
    assert [r["epoch"] for r in records(run)] == [1, 2]
