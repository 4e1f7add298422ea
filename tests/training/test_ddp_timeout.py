"""The DDP collective timeout (``distributed.timeout_min``): a stalled process ends the job with a
message instead of hanging it for torch's default 30 minutes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import torch.distributed as dist

import train
from tests.helpers import ROOT, tiny_config
from tests.training.test_distributed_training import clean_env
from utils import config as cfg
from utils.io.checkpoint import load_checkpoint
from utils.runtime.distributed import StalledProcessError, barrier, collective_timeouts
from utils.runtime.execution import setup_execution

GLOO_TIMEOUT = (
    "[/pytorch/third_party/gloo/gloo/transport/tcp/unbound_buffer.cc:78] Timed out waiting "
    "6000ms for recv operation to complete"
)


def worker_with_rank(parent: int, rank: int) -> int:
    """The PID of the child process of ``parent`` whose environment has ``RANK=rank``."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
            environ = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError):
            continue  # ended meanwhile
        if ppid == parent and f"RANK={rank}".encode() in environ:
            return int(entry.name)
    raise AssertionError(f"no worker of rank {rank} under torchrun (PID {parent})")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc, uses SIGSTOP")
def test_a_stopped_rank_ends_the_job_with_the_timeout_in_the_message(tmp_path):
    config = tiny_config(tmp_path, epochs=50)  # far longer than the test lets it run
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "train.py", "-c", str(config), "--opt", "distributed.timeout_min=0.1"]  # fmt: skip
    job = subprocess.Popen(
        command, cwd=ROOT, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True,
    )  # fmt: skip
    output, stopped = [], None
    try:
        for line in job.stdout:
            output.append(line)
            if stopped is None and "epoch 1/50" in line:  # rank 0 ends epoch 1: stop rank 1
                stopped = worker_with_rank(job.pid, 1)
                os.kill(stopped, signal.SIGSTOP)
        # 6 s timeout, then torchrun's 30 s grace before it SIGKILLs the stopped worker; without
        # distributed.timeout_min the job would hang for torch's default 30 minutes
        code = job.wait(timeout=150)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
            job.wait()
    text = "".join(output)
    assert stopped is not None, text[-3000:]
    assert code != 0, text[-3000:]
    assert "Timed out waiting 6000ms" in text, text[-3000:]  # gloo honours the 0.1 min
    assert "epoch 3/50" not in text  # it stopped at the stall, not at the end
    (run,) = (tmp_path / "saved" / "runs" / "tiny").iterdir()
    assert load_checkpoint(run / "checkpoint-epoch1.pth")["epoch"] == 1  # intact


def test_a_collective_timeout_becomes_a_message_naming_the_key():
    timeout = r"within distributed\.timeout_min \(.*6000ms"
    with pytest.raises(StalledProcessError, match=timeout), collective_timeouts():
        raise RuntimeError(GLOO_TIMEOUT)
    peer = r"^Connection closed by peer$"
    with pytest.raises(RuntimeError, match=peer) as caught, collective_timeouts():
        raise RuntimeError("Connection closed by peer")
    assert not isinstance(caught.value, StalledProcessError)


def test_project_collectives_name_the_timeout(monkeypatch):
    def stalled(*args, **kwargs):
        raise RuntimeError(GLOO_TIMEOUT)

    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "barrier", stalled)
    with pytest.raises(StalledProcessError, match="resume with -r"):
        barrier()


def test_the_configured_timeout_reaches_the_process_group(monkeypatch, tmp_path):
    for name, value in {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0"}.items():
        monkeypatch.setenv(name, value)
    seen = {}
    monkeypatch.setattr(dist, "init_process_group", lambda *a, **kw: seen.update(kw))
    config = cfg.load_config(tiny_config(tmp_path))
    config = cfg.apply_overrides(config, ["distributed.timeout_min=0.1"], train.registries())
    execution = setup_execution(cfg.validate_config(config, train.registries()))
    assert seen["timeout"] == timedelta(seconds=6)
    assert execution.device.type == "cpu"
    default = cfg.validate_config(cfg.load_config(tiny_config(tmp_path)), train.registries())
    setup_execution(default)
    assert seen["timeout"] == timedelta(minutes=10)


def test_timeout_must_be_positive(tmp_path):
    with pytest.raises(cfg.ConfigError, match=r"'distributed\.timeout_min' must be a positive"):
        train.main(["-c", str(tiny_config(tmp_path)), "--opt", "distributed.timeout_min=0"])
