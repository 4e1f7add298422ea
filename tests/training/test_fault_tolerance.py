"""Nothing lost at any moment: a crash or kill at each step of the epoch-end save sequence leaves
best_model.pth holding the recorded best epoch after a resume; SIGTERM and SIGHUP end a run like
Ctrl-C; a full disk is one line in the console and train.log; a resumed run's TensorBoard has one
point per epoch; a file that is no training checkpoint is refused with one line."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import base.base_trainer
import train
from tests.helpers import ROOT, tiny_config
from utils.io.atomic import TEMPORARY_PATTERN
from utils.io.checkpoint import load_checkpoint, save_checkpoint

DRIVER = '''
"""train.py with a hook on the temporary file of the $HOOK_AT-th save of $HOOK_FILE: $HOOK
"kill" writes part of it and SIGKILLs the process, "slow" touches $MARKER and waits 3 s first,
"full" fails with ENOSPC."""
import errno, os, runpy, sys, time
import torch

real_save = torch.save
seen = []

def save(obj, f, *args, **kwargs):
    name = os.path.basename(os.readlink(f"/proc/self/fd/{f.fileno()}"))
    if name.startswith("." + os.environ["HOOK_FILE"] + "."):
        seen.append(name)
    if len(seen) == int(os.environ["HOOK_AT"]) and name == seen[-1]:
        hook = os.environ["HOOK"]
        if hook == "kill":
            f.write(b"PK\\x03\\x04partial")
            f.flush()
            os.kill(os.getpid(), 9)
        if hook == "slow":
            open(os.environ["MARKER"], "w").close()
            time.sleep(3)
        if hook == "full":
            f.write(b"PK\\x03\\x04partial")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return real_save(obj, f, *args, **kwargs)

torch.save = save
sys.argv = ["train.py", *sys.argv[1:]]
runpy.run_path("train.py", run_name="__main__")
'''


def start_driver(
    tmp_path: Path, hook: str, hook_file: str, *args: str, at: int = 1
) -> subprocess.Popen:
    """Start train.py (with ``args``) under :data:`DRIVER` in its own process, hooking the
    ``at``-th save of ``hook_file``."""
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    env = {**os.environ, "HOOK": hook, "HOOK_FILE": hook_file, "HOOK_AT": str(at)}
    env["MARKER"] = str(tmp_path / "mark")
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.Popen(
        [sys.executable, str(driver), *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def the_run(tmp_path: Path) -> Path:
    (run,) = (tmp_path / "saved" / "runs" / "tiny").iterdir()
    return run


def best_epoch_in_metrics(run: Path) -> int:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return max(records, key=lambda r: r["maxF"])["epoch"]


def assert_best_model_is_the_recorded_best(run: Path) -> None:
    """best_model.pth holds the weights of the best epoch of metrics.jsonl (the periodic
    checkpoint of that epoch has them too: tiny_config keeps 5)."""
    epoch = best_epoch_in_metrics(run)
    best = load_checkpoint(run / "best_model.pth")
    assert best["epoch"] == epoch
    same = load_checkpoint(run / f"checkpoint-epoch{epoch}.pth")["state_dict"]
    for key, value in best["state_dict"].items():
        assert torch.equal(value, same[key]), key


def assert_intact(run: Path) -> None:
    """No temporary file, no lock file, and every checkpoint loads."""
    assert not [p.name for p in run.iterdir() if TEMPORARY_PATTERN.match(p.name)]
    assert not (run / "run.lock").exists()
    for path in run.glob("*.pth"):
        assert load_checkpoint(path)["epoch"] >= 1


class Crash(BaseException):
    """An in-process stand-in for a kill (nothing catches it)."""


@pytest.mark.parametrize(
    ("name", "when", "restores"),
    [
        ("best_model.pth", "before", False),  # metrics.jsonl has epoch 2, no file of epoch 2
        ("best_model.pth", "after", True),  # best_model.pth of epoch 2, no checkpoint-epoch2.pth
        ("checkpoint-epoch2.pth", "after", False),  # both saved
        ("checkpoint-epoch2.pth", "older version", True),  # saved in older versions' order
    ],
)
def test_a_crash_in_the_save_sequence_keeps_best_model_the_recorded_best(
    tmp_path, monkeypatch, name, when, restores
):
    saves: list[tuple[int, str]] = []
    real_save = base.base_trainer.save_checkpoint

    def crashing_save(state, path):
        saves.append((state["epoch"], Path(path).name))
        target = state["epoch"] == 2 and Path(path).name == name
        if target and when == "before":
            raise Crash
        real_save(state, path)
        if target:
            raise Crash

    monkeypatch.setattr(base.base_trainer, "save_checkpoint", crashing_save)
    with pytest.raises(Crash):
        train.main(["-c", str(tiny_config(tmp_path)), "-d", "cpu"])
    monkeypatch.undo()
    assert saves[:2] == [(1, "best_model.pth"), (1, "checkpoint-epoch1.pth")]  # best first
    assert (2, name) in saves  # epoch 2 improved (else the crash point was never reached)
    run = the_run(tmp_path)
    if when == "older version":  # killed between checkpoint-epoch2.pth and best_model.pth
        shutil.copy(run / "checkpoint-epoch1.pth", run / "best_model.pth")
        state = load_checkpoint(run / "checkpoint-epoch2.pth")
        del state["best_epoch"]  # not stored by older versions: found in metrics.jsonl
        save_checkpoint(state, run / "checkpoint-epoch2.pth")
    newest = max(run.glob("checkpoint-epoch*.pth"))
    train.main(["-r", str(newest), "-d", "cpu"])
    assert_best_model_is_the_recorded_best(run)
    assert_intact(run)
    restored = f"restored best_model.pth from {run / 'checkpoint-epoch'}"
    assert (restored in (run / "train.log").read_text()) == restores


def test_sigkill_while_best_model_is_written_then_resume(tmp_path):
    """The issue's reproduction: SIGKILL when the temporary file of epoch 2's best model is
    being written, then ``-r`` of the newest checkpoint."""
    config = tiny_config(tmp_path)
    driver = start_driver(tmp_path, "kill", "best_model.pth", "-c", str(config), "-d", "cpu", at=2)
    driver.communicate(timeout=300)
    assert driver.returncode == -signal.SIGKILL
    run = the_run(tmp_path)
    assert (run / "run.lock").exists() and not (run / "checkpoint-epoch2.pth").exists()
    assert list(run.glob(".best_model.pth.*.tmp"))  # left by the kill

    train.main(["-r", str(run / "checkpoint-epoch1.pth"), "-d", "cpu"])
    assert_best_model_is_the_recorded_best(run)
    assert_intact(run)
    log = (run / "train.log").read_text()
    assert "removed 1 temporary file(s) of interrupted saves: .best_model.pth." in log
    assert f"took over {run / 'run.lock'} of process {driver.pid}, which is gone" in log


def wait_for(tmp_path: Path, pattern: str, process: subprocess.Popen) -> Path:
    """Wait until a file matching ``pattern`` exists under ``tmp_path`` (the process must still
    be running); returns it."""
    while not (found := list(tmp_path.glob(pattern))):
        assert process.poll() is None, process.communicate()
        time.sleep(0.05)
    return found[0]


def test_sigterm_during_a_save_finishes_it_then_ends_the_run(tmp_path):
    config = tiny_config(tmp_path)
    args = ("-c", str(config), "-d", "cpu")
    driver = start_driver(tmp_path, "slow", "checkpoint-epoch1.pth", *args)
    wait_for(tmp_path, "mark", driver)  # the save of checkpoint-epoch1.pth has begun
    driver.send_signal(signal.SIGTERM)
    out, err = driver.communicate(timeout=300)
    assert driver.returncode == 128 + signal.SIGTERM
    run = the_run(tmp_path)
    message = f"terminated by SIGTERM; the checkpoints in {run} are intact"
    assert message in out and message in (run / "train.log").read_text()
    assert "Traceback" not in err
    assert load_checkpoint(run / "checkpoint-epoch1.pth")["epoch"] == 1  # finished, then stopped
    assert not (run / "checkpoint-epoch2.pth").exists()
    assert_intact(run)


def test_sighup_mid_epoch_ends_the_run_with_the_checkpoints_intact(tmp_path):
    config = tiny_config(tmp_path, epochs=3)
    args = ("-c", str(config), "-d", "cpu")
    driver = start_driver(tmp_path, "none", "-", *args)
    saved = wait_for(tmp_path, "saved/runs/tiny/*/checkpoint-epoch1.pth", driver)
    run = saved.parent  # epoch 1 is saved: epoch 2 is under way
    driver.send_signal(signal.SIGHUP)
    out, err = driver.communicate(timeout=300)
    assert driver.returncode == 128 + signal.SIGHUP
    assert (
        "terminated by SIGHUP" in out and "terminated by SIGHUP" in (run / "train.log").read_text()
    )
    assert "Traceback" not in err
    assert not (run / "checkpoint-epoch3.pth").exists()
    assert_intact(run)


def test_a_full_disk_during_a_checkpoint_save_is_one_line_in_the_console_and_train_log(tmp_path):
    config = tiny_config(tmp_path, epochs=1)
    driver = start_driver(tmp_path, "full", "checkpoint-epoch1.pth", "-c", str(config), "-d", "cpu")
    _, err = driver.communicate(timeout=300)
    assert driver.returncode == 2
    run = the_run(tmp_path)
    lines = err.strip().splitlines()
    assert lines[-1].startswith("error: no space left on the device of ")
    assert "checkpoint-epoch1.pth" in lines[-1] and "Traceback" not in err
    log = (run / "train.log").read_text()
    assert lines[-1] in log and "Traceback" not in log
    assert_intact(run)


def scalar_steps(run: Path, tag: str) -> list[int]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run), size_guidance={"scalars": 0})
    events.Reload()
    return [e.step for e in events.Scalars(tag)]


def test_a_resumed_run_has_one_tensorboard_point_per_epoch(tmp_path):
    run = train.main(["-c", str(tiny_config(tmp_path)), "-d", "cpu"])
    # resumed with another batch size (as in another mode: other iterations per epoch)
    batch = ["--opt", "train_loader.args.batch_size=2"]
    train.main(["-r", str(run / "checkpoint-epoch1.pth"), "-d", "cpu", *batch])
    assert len(list(run.glob("events.out.tfevents.*"))) == 2
    # the x-axis is training images seen: 8 per epoch
    assert scalar_steps(run, "epoch/train_loss") == [8, 16]
    assert scalar_steps(run, "val/maxF") == [8, 16]
    assert scalar_steps(run, "train/loss") == [4, 8, 10, 12, 14, 16]


def test_resume_from_a_file_that_is_no_training_checkpoint_is_one_line(tmp_path):
    weights = tmp_path / "weights.pth"
    save_checkpoint({"conv.weight": torch.ones(2, 2)}, weights)
    other = tmp_path / "other.pth"
    save_checkpoint({"model": {"w": torch.ones(1)}, "epoch": 3}, other)
    text = tmp_path / "notes.pth"
    text.write_text("hello\n")
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    expected = {
        weights: "is a bare state dict (weights only",
        other: "is a dict without arch, state_dict, optimizer",
        text: "it is a text file",
        empty: "it is empty (0 bytes)",
    }
    for path, what in expected.items():
        with pytest.raises(ValueError) as caught:
            train.main(["-r", str(path), "-d", "cpu"])
        message = train.error_message(caught.value)
        assert str(path) in message and what in message and "\n" not in message
    result = subprocess.run(
        [sys.executable, "train.py", "-r", str(weights)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "use arch.args.pretrained" in result.stderr


def test_sigterm_to_the_process_group_with_loader_workers_ends_the_run_cleanly(tmp_path):
    """A scheduler (SLURM, Kubernetes, torchrun, `timeout`) signals the whole process group:
    the DataLoader workers get SIGTERM too and must leave the ending to the main process."""
    options = [f"trainer.save_dir={tmp_path / 'saved'}", "trainer.epochs=3", "name=tiny"]
    for loader in ("train_loader", "val_loader"):  # the demo's loaders: one worker each
        options += [f"{loader}.args.data_dir={tmp_path / 'demo'}", f"{loader}.args.num_train=32"]
        options += [f"{loader}.args.num_test=8"]
    job = subprocess.Popen(
        [sys.executable, "train.py", "-c", "config.json", "-d", "cpu", "--opt", *options],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a batch job has
    )
    saved = wait_for(tmp_path, "saved/runs/tiny/*/checkpoint-epoch1.pth", job)
    os.killpg(job.pid, signal.SIGTERM)
    out, err = job.communicate(timeout=300)
    assert job.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "terminated by SIGTERM" in out and "Traceback" not in err
    assert_intact(saved.parent)


def test_a_resume_from_an_earlier_checkpoint_keeps_the_later_best_model(tmp_path):
    run = train.main(["-c", str(tiny_config(tmp_path, epochs=3)), "-d", "cpu"])
    save_checkpoint(load_checkpoint(run / "checkpoint-epoch3.pth"), run / "best_model.pth")
    train.main(["-r", str(run / "checkpoint-epoch1.pth"), "-d", "cpu", "--opt", "trainer.epochs=1"])
    kept = load_checkpoint(run / "best_model-epoch3.pth")
    assert kept["epoch"] == 3  # the epoch-3 model is not lost
    assert load_checkpoint(run / "best_model.pth")["epoch"] == 1  # the recorded best of epoch 1
    assert "kept as best_model-epoch3.pth" in (run / "train.log").read_text()


EXIT_WITH_LIVE_WORKERS = """
import sys, torch
from torch.utils.data import DataLoader
from base.base_dataloader import _worker_init
loader = DataLoader(list(range(100)), batch_size=1, num_workers=1, worker_init_fn=_worker_init)
batches = iter(loader)
next(batches)
raise SystemExit(3)  # an error ends the run while the worker is alive
"""


def test_a_run_ending_with_live_loader_workers_exits_at_once(tmp_path):
    """At exit the worker is stopped with SIGTERM: it must not ignore it (the process would
    wait for it forever)."""
    done = subprocess.run(
        [sys.executable, "-c", EXIT_WITH_LIVE_WORKERS],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 3, done.stderr
