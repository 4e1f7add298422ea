"""Iteration checkpoints (``trainer.save_every_iters``): a run stopped in the middle of an epoch
and resumed from ``checkpoint-last.pth`` ends with the weights of an uninterrupted run."""

from __future__ import annotations

import os
import signal

import pytest
import torch

import train
from tests.helpers import tiny_config
from tests.training.test_distributed_training import records
from utils.io.checkpoint import load_checkpoint
from utils.io.run_dir import newest_checkpoint
from utils.io.run_lock import Terminated
from utils.training.losses import DeepSupervisionLoss


class Crash(RuntimeError):
    """The simulated failure (a crash, a lost node) of the interrupted run."""


def crash_after(monkeypatch: pytest.MonkeyPatch, steps: int) -> None:
    """Make training step ``steps + 1`` fail before its update."""
    forward = DeepSupervisionLoss.forward
    calls = {"n": 0}

    def failing(self, outputs, target):
        calls["n"] += 1
        if calls["n"] > steps:
            raise Crash(f"crash in step {calls['n']}")
        return forward(self, outputs, target)

    monkeypatch.setattr(DeepSupervisionLoss, "forward", failing)


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_in_the_middle_of_an_epoch_gives_the_uninterrupted_weights(
    tmp_path, monkeypatch, workers
):
    # 16 images in batches of 4: 4 steps per epoch; checkpoint-last every 3 steps
    options = ["trainer.save_every_iters=3", "trainer.epochs=2", "trainer.keep_last=5"]
    for loader in ("train_loader", "val_loader"):
        options += [f"{loader}.args.num_train=16", f"{loader}.args.num_workers={workers}"]
    plain = train.main(["-c", str(tiny_config(tmp_path / "plain")), "--opt", *options])

    config = tiny_config(tmp_path / "stopped")
    with monkeypatch.context() as patch:
        crash_after(patch, 7)  # epoch 2 stops in its step 4; the last saved one is its step 2
        with pytest.raises(Crash):
            train.main(["-c", str(config), "--opt", *options])
    (run,) = (tmp_path / "stopped" / "saved" / "runs" / "tiny").iterdir()
    last = load_checkpoint(run / "checkpoint-last.pth")
    assert (last["epoch"], last["iteration"]) == (1, 2)  # epoch 1 done, epoch 2 after step 2
    assert newest_checkpoint([run]) == run / "checkpoint-last.pth"

    assert train.main(["-r", str(run / "checkpoint-last.pth")]) == run
    expected = load_checkpoint(plain / "checkpoint-epoch2.pth")["state_dict"]
    got = load_checkpoint(run / "checkpoint-epoch2.pth")["state_dict"]
    assert all(torch.equal(expected[k], got[k]) for k in expected)
    assert records(run) == records(plain)  # the same epoch lines, train_loss included


def test_sigterm_saves_the_position_first_then_the_resume_is_exact(tmp_path, monkeypatch):
    options = ["trainer.save_every_iters=1000", "trainer.epochs=2", "trainer.keep_last=5"]
    options += [f"{loader}.args.num_train=16" for loader in ("train_loader", "val_loader")]
    plain = train.main(["-c", str(tiny_config(tmp_path / "plain")), "--opt", *options])

    forward, calls = DeepSupervisionLoss.forward, {"n": 0}

    def terminated_in_step_6(self, outputs, target):  # SIGTERM arrives in epoch 2's step 2
        calls["n"] += 1
        if calls["n"] == 6:
            os.kill(os.getpid(), signal.SIGTERM)
        return forward(self, outputs, target)

    config = tiny_config(tmp_path / "stopped")
    with monkeypatch.context() as patch:
        patch.setattr(DeepSupervisionLoss, "forward", terminated_in_step_6)
        with pytest.raises(Terminated):
            train.main(["-c", str(config), "--opt", *options])
    (run,) = (tmp_path / "stopped" / "saved" / "runs" / "tiny").iterdir()
    last = load_checkpoint(run / "checkpoint-last.pth")
    assert (last["epoch"], last["iteration"]) == (1, 2)  # the step in progress was finished
    assert "saved checkpoint-last.pth after step 2 of epoch 2" in (run / "train.log").read_text()
    train.main(["-r", str(run / "checkpoint-last.pth")])
    expected = load_checkpoint(plain / "checkpoint-epoch2.pth")["state_dict"]
    got = load_checkpoint(run / "checkpoint-epoch2.pth")["state_dict"]
    assert all(torch.equal(expected[k], got[k]) for k in expected)
