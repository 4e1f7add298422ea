"""A run folder is locked while a process trains in it: a second process is refused with the
holder's PID, a lock left by a dead process is taken over, the lock is released at the end."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

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


def test_a_second_lock_is_refused_with_the_holders_pid_and_released_at_the_end(tmp_path):
    lock = RunLock(tmp_path)
    assert lock.acquire() is None
    assert (tmp_path / LOCK_NAME).read_text() == f"{os.getpid()}\n"
    with pytest.raises(RunLockedError, match=f"process {os.getpid()} is training in it"):
        RunLock(tmp_path).acquire()
    lock.release()
    assert not (tmp_path / LOCK_NAME).exists()
    again = RunLock(tmp_path)
    assert again.acquire() is None
    again.release()


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
