"""Automatic resume: ``-r auto`` picks the newest checkpoint, and under ``torchrun
--max-restarts`` a worker group restarted after a SIGKILL continues from it to the same weights
as an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import train
from tests.helpers import ROOT, tiny_config
from tests.training.test_distributed_training import clean_env, records, run_folders
from utils.io.checkpoint import load_checkpoint


def test_resume_auto_starts_a_new_run_then_continues_the_newest(tmp_path):
    config = str(tiny_config(tmp_path, epochs=1))
    first = train.main(["-c", config, "-r", "auto"])  # no run yet: a new one
    assert [r["epoch"] for r in records(first)] == [1]
    again = train.main(["-c", config, "-r", "auto", "--opt", "trainer.epochs=2"])
    assert again == first and [r["epoch"] for r in records(first)] == [1, 2]
    by_key = train.main(["-c", config, "--opt", "trainer.epochs=3", "trainer.resume=auto"])
    assert by_key == first and [r["epoch"] for r in records(first)] == [1, 2, 3]
    by_folder = train.main(["-r", "auto", "--run-dir", str(first), "--opt", "trainer.epochs=4"])
    assert by_folder == first and len(run_folders(tmp_path)) == 1


def test_resume_auto_without_config_or_run_dir_is_refused(capsys):
    with pytest.raises(SystemExit):
        train.main(["-r", "auto"])
    assert "-r auto needs -c CONFIG" in capsys.readouterr().err


def workers(tag: str) -> dict[int, int]:
    """{rank: pid} of the running training workers whose environment holds ``tag``."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        variables = dict(v.split(b"=", 1) for v in environ if b"=" in v)
        if variables.get(b"U2SEG_TEST_TAG") == tag.encode() and b"RANK" in variables:
            found[int(variables[b"RANK"])] = int(entry.name)
    return found


def elastic_run(config: Path, save_dir: Path, tag: str, kill_rank: int | None) -> str:
    """``torchrun --max-restarts=2`` of 2 workers with ``-r auto``; with ``kill_rank``, that
    worker is SIGKILLed once the first checkpoint exists (in epoch 2). Returns the output."""
    env = {**clean_env(), "U2SEG_TEST_TAG": tag}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    # two restarts: the kill takes one; gloo's connection of a restarted group can fail once on
    # a loaded machine ("connectFullMesh failed ... Connection refused"), as on clusters
    command += ["--nproc_per_node=2", "--max-restarts=2", "train.py", "-c", str(config)]
    command += ["-r", "auto", "--opt", f"trainer.save_dir={save_dir}"]
    job = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    if kill_rank is not None:
        deadline = time.monotonic() + 300
        while not list(save_dir.glob("runs/*/*/checkpoint-epoch1.pth")):
            assert job.poll() is None and time.monotonic() < deadline, "no first checkpoint"
            time.sleep(0.05)
        os.kill(workers(tag)[kill_rank], signal.SIGKILL)
    output = job.communicate(timeout=600)[0]
    assert job.returncode == 0, output[-4000:]
    return output


def test_a_killed_worker_restarts_and_ends_with_the_uninterrupted_weights(tmp_path):
    config = tiny_config(tmp_path, epochs=3)
    elastic_run(config, tmp_path / "plain", "plain", kill_rank=None)
    output = elastic_run(config, tmp_path / "killed", "killed", kill_rank=1)
    assert "resume auto: continuing from" in output  # the restarted group found the checkpoint
    (plain,) = (tmp_path / "plain" / "runs" / "tiny").iterdir()
    (killed,) = (tmp_path / "killed" / "runs" / "tiny").iterdir()
    assert [r["epoch"] for r in records(killed)][-1] == 3
    expected = load_checkpoint(plain / "checkpoint-epoch3.pth")["state_dict"]
    got = load_checkpoint(killed / "checkpoint-epoch3.pth")["state_dict"]
    assert all(torch.equal(expected[k], got[k]) for k in expected)
