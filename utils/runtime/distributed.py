"""torch.distributed: joining a torchrun or SLURM launch; helpers that are no-ops in one process."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from typing import Any

import torch
import torch.distributed as dist

DEFAULT_PORT = "29500"


class LaunchError(RuntimeError):
    """DDP was asked for, but the process was not started by a launcher (or cannot join)."""


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


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every process."""
    if not is_distributed():
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def broadcast_buffers_(module: torch.nn.Module) -> None:
    """Give every process rank 0's buffers (e.g. BatchNorm running statistics), in place.

    DDP copies them from rank 0 before each training forward, but each process then updates its
    own copy in that forward, so after the last step they differ between processes.
    """
    if is_distributed():
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)


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


def init_distributed(backend: str = "auto", argv: list[str] | None = None) -> torch.device:
    """Join the process group of a torchrun or SLURM launch; returns this process's device.

    torchrun sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``;
    under SLURM (``srun``, one task per process) they are derived from ``SLURM_PROCID``,
    ``SLURM_NTASKS``, ``SLURM_LOCALID`` and the job's first node. ``backend`` ``auto`` is NCCL
    with CUDA and gloo without. Each process uses GPU ``LOCAL_RANK`` when CUDA is available,
    else the CPU. Raises :class:`LaunchError` outside such a launch, showing the command.
    """
    if not ("RANK" in os.environ and "WORLD_SIZE" in os.environ):
        if "SLURM_PROCID" in os.environ and "SLURM_NTASKS" in os.environ:
            os.environ.update(_slurm_env())
        else:
            command = launch_command(argv if argv is not None else sys.argv)
            raise LaunchError(
                "distributed.mode is 'ddp', but this process was not started by torchrun or "
                "SLURM (RANK and WORLD_SIZE are not set). Start it with\n"
                f"  {command}\n(one process per GPU; several nodes: add --nnodes=N "
                "--rdzv_backend=c10d --rdzv_endpoint=HOST:PORT on every node), or set "
                "distributed.mode to 'none' or 'dp'"
            )
    cuda = torch.cuda.is_available()
    if backend == "auto":
        backend = "nccl" if cuda else "gloo"
    if backend == "nccl" and not cuda:
        raise LaunchError("distributed.backend 'nccl' needs CUDA GPUs; use 'gloo' on the CPU")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    dist.init_process_group(backend, init_method="env://")
    return device


def cleanup() -> None:
    """Leave the process group (at the end of a run)."""
    if is_distributed():
        dist.destroy_process_group()
