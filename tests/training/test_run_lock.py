"""A run folder is locked while a process trains in it: a second process is refused with the
holder's PID, a lock left by a dead process is taken over, the lock is released at the end."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import train
from tests.helpers import ROOT, tiny_config
from utils.io.run_lock import LOCK_NAME, RunLock, RunLockedError

HOLDER = """
import sys, time
from utils.io.run_lock import RunLock
RunLock(sys.argv[1]).acquire()
print("locked", flush=True)
time.sleep(300)
"""


PID_HOLDER = """
import os, sys, time
from utils.io.run_lock import RunLock
RunLock(sys.argv[1]).acquire()
if sys.argv[2] == "fork" and os.fork() == 0:  # a child, like a DataLoader worker, lingers on
    time.sleep(60)
    os._exit(0)
print(os.getpid(), flush=True)
sys.stdin.read()
"""


def hold_lock(folder: Path, fork: bool = False) -> tuple[subprocess.Popen, int]:
    """A process holding the lock of ``folder`` (with a forked child if ``fork``) and its PID."""
    holder = subprocess.Popen(
        [sys.executable, "-c", PID_HOLDER, str(folder), "fork" if fork else "-"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    return holder, int(holder.stdout.readline())


def test_a_second_lock_is_refused_with_the_holders_pid_and_released_at_the_end(tmp_path):
    holder, pid = hold_lock(tmp_path)
    with pytest.raises(RunLockedError, match=f"process {pid} is training in it"):
        RunLock(tmp_path).acquire()
    holder.communicate("")  # it ends: its lock ends with it
    lock = RunLock(tmp_path)
    assert lock.acquire() == pid  # the file still names it: a stale lock, taken over
    assert (tmp_path / LOCK_NAME).read_text() == f"{os.getpid()}\n"
    lock.release()
    assert not (tmp_path / LOCK_NAME).exists()
    again = RunLock(tmp_path)
    assert again.acquire() is None
    again.release()


def test_a_killed_holders_lock_is_free_at_once_though_its_children_live_on(tmp_path):
    holder, pid = hold_lock(tmp_path, fork=True)
    holder.kill()  # SIGKILL, like kill -9 of a trainer whose DataLoader workers live on
    holder.wait()
    lock = RunLock(tmp_path)
    assert lock.acquire() == pid
    lock.release()


def test_a_lock_left_by_a_dead_process_is_taken_over(tmp_path):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], check=True,
                          capture_output=True, text=True)  # fmt: skip
    pid = int(gone.stdout)
    (tmp_path / LOCK_NAME).write_text(f"{pid}\n")
    lock = RunLock(tmp_path)
    assert lock.acquire() == pid
    assert (tmp_path / LOCK_NAME).read_text() == f"{os.getpid()}\n"
    lock.release()


def test_resume_in_a_folder_in_use_is_refused_and_a_killed_holders_lock_taken_over(tmp_path):
    run = train.main(["-c", str(tiny_config(tmp_path, epochs=1)), "-d", "cpu"])
    assert not (run / LOCK_NAME).exists()
    log_before = (run / "train.log").read_text()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(run)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline() == "locked\n"
        checkpoint = str(run / "checkpoint-epoch1.pth")
        refused = subprocess.run(
            [sys.executable, "train.py", "-r", checkpoint, "--opt", "trainer.epochs=2"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert refused.returncode == 2 and "Traceback" not in refused.stderr
        assert f"process {holder.pid} is training in it" in refused.stderr
        assert (run / "train.log").read_text() == log_before  # it wrote nothing there
        assert not (run / "checkpoint-epoch2.pth").exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()

    more = tmp_path / "more.json"
    more.write_text(json.dumps({"trainer": {"epochs": 2}}))
    train.main(["-r", checkpoint, "-c", str(more), "-d", "cpu"])
    assert (run / "checkpoint-epoch2.pth").exists() and not (run / LOCK_NAME).exists()
    log = (run / "train.log").read_text()
    assert f"took over {run / LOCK_NAME} of process {holder.pid}, which is gone" in log
