"""torch.distributed: joining a torchrun or SLURM launch (with a collective timeout); helpers
that are no-ops in one process."""

from __future__ import annotations

import functools
import os
import shlex
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, ParamSpec, TypeVar

import torch
import torch.distributed as dist

DEFAULT_PORT = "29500"


class LaunchError(RuntimeError):
    """DDP was asked for, but the process was not started by a launcher (or cannot join)."""


class StalledProcessError(LaunchError):
    """A collective operation (or joining the group) timed out after
    ``distributed.timeout_min``: another process stalled, was stopped or died."""


TIMEOUT_WORDS = ("timed out", "timeout")
"""Words of the timeout errors of gloo, NCCL's watchdog and the TCP store (lower case)."""
_P = ParamSpec("_P")
_R = TypeVar("_R")


@contextmanager
def collective_timeouts() -> Iterator[None]:
    """Turn a timeout of torch.distributed inside the block (gloo: ``RuntimeError: ... Timed out
    waiting 6000ms for recv operation``; a store or NCCL watchdog timeout) into a
    :class:`StalledProcessError` whose one-line message names ``distributed.timeout_min``."""
    try:
        yield
    except RuntimeError as err:
        lines = str(err).strip().splitlines()
        text = lines[-1] if lines else repr(err)
        if isinstance(err, LaunchError) or not any(w in text.lower() for w in TIMEOUT_WORDS):
            raise
        raise StalledProcessError(
            f"another DDP process did not answer within distributed.timeout_min ({text}): it "
            "stalled, was stopped or died, so this one stops too. The checkpoints written so far "
            "are intact: resume with -r from the newest one"
        ) from err


def _naming_timeouts(collective: Callable[_P, _R]) -> Callable[_P, _R]:
    """``collective`` run inside :func:`collective_timeouts`."""

    @functools.wraps(collective)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        with collective_timeouts():
            return collective(*args, **kwargs)

    return wrapper


def is_distributed() -> bool:
    """True inside an initialised process group."""
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    """Rank 0 (or the only process): the one that prints, logs and writes files."""
    return get_rank() == 0


@_naming_timeouts
def barrier() -> None:
    if is_distributed():
        dist.barrier()


@_naming_timeouts
def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every process."""
    if not is_distributed():
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


@_naming_timeouts
def broadcast_buffers_(module: torch.nn.Module) -> None:
    """Give every process rank 0's buffers (e.g. BatchNorm running statistics), in place.

    DDP copies them from rank 0 before each training forward, but each process then updates its
    own copy in that forward, so after the last step they differ between processes.
    """
    if is_distributed():
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)


@_naming_timeouts
def all_reduce_sum_(tensors: list[torch.Tensor]) -> None:
    """Sum each tensor over all processes, in place (one collective for all of them)."""
    if not is_distributed() or not tensors:
        return
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat)
    offset = 0
    for tensor in tensors:
        tensor.copy_(flat[offset : offset + tensor.numel()].view_as(tensor))
        offset += tensor.numel()


def _slurm_env() -> dict[str, str]:
    """torchrun's variables from SLURM's (``srun`` starts one task per process)."""
    env = {
        "RANK": os.environ["SLURM_PROCID"],
        "WORLD_SIZE": os.environ["SLURM_NTASKS"],
        "LOCAL_RANK": os.environ.get("SLURM_LOCALID", "0"),
        "MASTER_PORT": os.environ.get("MASTER_PORT", DEFAULT_PORT),
    }
    if "MASTER_ADDR" in os.environ:
        env["MASTER_ADDR"] = os.environ["MASTER_ADDR"]
    else:  # the first node of the job
        nodes = os.environ.get("SLURM_JOB_NODELIST") or os.environ.get("SLURM_NODELIST", "")
        try:
            hosts = subprocess.run(
                ["scontrol", "show", "hostnames", nodes], capture_output=True, text=True, check=True
            ).stdout.split()
        except (OSError, subprocess.CalledProcessError) as err:
            raise LaunchError(
                f"under SLURM, cannot find the first node of {nodes!r} with scontrol ({err}); "
                "export MASTER_ADDR (and MASTER_PORT) in the job script"
            ) from err
        env["MASTER_ADDR"] = hosts[0]
    return env


def launch_command(argv: list[str]) -> str:
    """The torchrun command that starts this script on 2 processes of one node."""
    return "torchrun --nproc_per_node=2 " + " ".join(shlex.quote(a) for a in argv)


def _slurm_tasks() -> int:
    """``SLURM_NTASKS`` (0 when unset or not a number)."""
    try:
        return int(os.environ.get("SLURM_NTASKS", "0"))
    except ValueError:
        return 0


def launcher() -> str | None:
    """The launcher that started this process as one of a group: ``"torchrun"`` (``RANK`` and
    ``WORLD_SIZE`` set: torchrun, or any launcher that sets its variables), ``"slurm"``
    (``SLURM_PROCID`` set and ``SLURM_NTASKS`` > 1: an ``srun`` task), else None."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return "torchrun"
    if "SLURM_PROCID" in os.environ and _slurm_tasks() > 1:
        return "slurm"
    return None


def launched_world_size() -> int:
    """The number of processes the launcher started (``WORLD_SIZE`` or ``SLURM_NTASKS``; 1
    without a launcher)."""
    kind = launcher()
    if kind == "torchrun":
        return int(os.environ["WORLD_SIZE"])
    return _slurm_tasks() if kind == "slurm" else 1


def _join_launch(argv: list[str] | None) -> None:
    """Set torchrun's variables from SLURM's if needed; raise :class:`LaunchError` with the
    torchrun command when no launcher started this process."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return
    if "SLURM_PROCID" in os.environ and "SLURM_NTASKS" in os.environ:
        os.environ.update(_slurm_env())
        return
    command = launch_command(argv if argv is not None else sys.argv)
    raise LaunchError(
        "distributed.mode is 'ddp', but this process was not started by torchrun or "
        "SLURM (RANK and WORLD_SIZE are not set). Start it with\n"
        f"  {command}\n(one process per GPU; several nodes: add --nnodes=N "
        "--rdzv_backend=c10d --rdzv_endpoint=HOST:PORT on every node), or set "
        "distributed.mode to 'auto' (one device without a launcher), 'none' or 'dp'"
    )


def init_distributed(
    backend: str = "auto", argv: list[str] | None = None, timeout_min: float = 10.0
) -> torch.device:
    """Join the process group of a torchrun or SLURM launch; returns this process's device.

    torchrun sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``;
    under SLURM (``srun``, one task per process) they are derived from ``SLURM_PROCID``,
    ``SLURM_NTASKS``, ``SLURM_LOCALID`` and the job's first node. ``backend`` ``auto`` is NCCL
    with CUDA and gloo without. Each process uses GPU ``LOCAL_RANK`` when CUDA is available,
    else the CPU. ``timeout_min`` (minutes) bounds joining the group and every collective (gloo:
    the blocked call raises; NCCL: its watchdog aborts the process), so a stalled or lost process
    ends the job instead of hanging it. Raises :class:`LaunchError` outside such a launch,
    showing the command.
    """
    _join_launch(argv)
    cuda = torch.cuda.is_available()
    if backend == "auto":
        backend = "nccl" if cuda else "gloo"
    if backend == "nccl" and not cuda:
        raise LaunchError("distributed.backend 'nccl' needs CUDA GPUs; use 'gloo' on the CPU")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    timeout = timedelta(minutes=timeout_min)
    store = _attempt_store(timeout)
    if store is None:
        dist.init_process_group(backend, init_method="env://", timeout=timeout)
    else:
        rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        dist.init_process_group(
            backend, store=store, rank=rank, world_size=world_size, timeout=timeout
        )
    return device


def _attempt_store(timeout: timedelta) -> dist.Store | None:
    """Under torchrun: the rendezvous store of this attempt of the worker group (keys prefixed
    with ``TORCHELASTIC_RESTART_COUNT``), else None (``env://``). When torchrun restarts a
    worker group it may keep the store of the last attempt, and without a prefix a restarted
    process can read the gloo address of a dead one ("connectFullMesh failed ... Connection
    refused"): seen in 2 of 4 restarts on a loaded machine."""
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT")
    if attempt is None:
        return None
    agent_store = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    store = dist.TCPStore(
        os.environ["MASTER_ADDR"],
        int(os.environ["MASTER_PORT"]),
        world_size,
        is_master=not agent_store and rank == 0,
        timeout=timeout,
        multi_tenant=not agent_store,
    )
    return dist.PrefixStore(f"u2seg/attempt_{attempt}", store)


def cleanup() -> None:
    """Leave the process group (at the end of a run)."""
    if is_distributed():
        dist.destroy_process_group()
