"""How a run executes (CPU, one GPU, DataParallel, DDP) and the model wrapped to fit."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from utils.config import ConfigError
from utils.runtime.device import resolve_device
from utils.runtime.distributed import (
    LaunchError,
    get_rank,
    get_world_size,
    init_distributed,
    is_distributed,
    launched_world_size,
    launcher,
)
from utils.runtime.precision import memory_format


def unwrap(model: nn.Module) -> nn.Module:
    """The bare model inside DataParallel / DistributedDataParallel (saved keys carry no
    ``module.``)."""
    return (
        model.module
        if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel))
        else model
    )


@dataclass(frozen=True)
class Execution:
    """The device of this process, the DataParallel GPU ids (empty: no DataParallel), the DDP
    rank and world size (0 and 1 without DDP) and the launcher that started the process group
    (``"torchrun"``, ``"slurm"``; None without DDP)."""

    device: torch.device
    dp_ids: list[int] = field(default_factory=list)
    rank: int = 0
    world_size: int = 1
    launcher: str | None = None

    @property
    def distributed(self) -> bool:
        return self.world_size > 1 or is_distributed()

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def record(self) -> dict[str, Any]:
        """How this run executes, as a plain dict for a checkpoint (a record only: a resumed run
        executes as its own launcher and config say): ``mode`` (``"ddp"``, ``"dp"``,
        ``"none"``), ``launcher``, ``world_size``, ``device`` (this process's, e.g. ``"cpu"``,
        ``"cuda:0"``) and ``dp_ids``."""
        mode = "ddp" if self.distributed else "dp" if self.dp_ids else "none"
        return {
            "mode": mode,
            "launcher": self.launcher,
            "world_size": self.world_size,
            "device": str(self.device),
            "dp_ids": list(self.dp_ids),
        }


def resolve_mode(mode: str) -> str:
    """The mode this process runs in: ``auto`` is ``ddp`` when torchrun or SLURM started it as
    one of a group (see :func:`~utils.runtime.distributed.launcher`), else ``none``; the other
    modes are kept. Raises :class:`LaunchError` for ``none`` or ``dp`` in one of several
    launched processes (each would train alone)."""
    if mode == "auto":
        return "ddp" if launcher() else "none"
    processes = launched_world_size()
    if mode != "ddp" and processes > 1:
        raise LaunchError(
            f"distributed.mode is {mode!r} (one process), but {launcher()} started "
            f"{processes} processes: set distributed.mode to 'auto' or 'ddp' to train them "
            "together, or start one process without the launcher"
        )
    return mode


def setup_execution(
    config: dict[str, Any], device: str = "auto", argv: list[str] | None = None
) -> Execution:
    """Choose the devices from ``config`` (``n_gpu``, ``distributed``), the launcher and the
    ``-d`` option.

    - ``distributed.mode`` ``auto`` (default): ``ddp`` when torchrun or SLURM started the
      process, else ``none``.
    - ``ddp``: join the torchrun / SLURM process group (one process per GPU, or CPU processes
      with gloo; collectives time out after ``distributed.timeout_min``); ``n_gpu`` and ``-d``
      are not used.
    - ``dp``: DataParallel over the GPUs given by ``-d`` (e.g. ``0,1``) or the first ``n_gpu``;
      without GPUs the run falls back to the CPU with a warning.
    - ``none``: one device: ``-d`` (``auto``: the first GPU if ``n_gpu`` >= 1 and there is one,
      else the CPU).

    Raises :class:`LaunchError` for ``ddp`` without a launcher (showing the torchrun command)
    or ``none`` / ``dp`` under a launcher of several processes, and :class:`ConfigError` for
    ``n_gpu`` > 1 on one device.
    """
    dist_cfg = config["distributed"]
    mode = resolve_mode(dist_cfg["mode"])
    if mode == "ddp":
        # read before joining, which sets RANK from SLURM's variables; None here: a 1-task srun
        started_by = launcher() or "slurm"
        own = init_distributed(dist_cfg["backend"], argv, dist_cfg["timeout_min"])
        return Execution(own, [], get_rank(), get_world_size(), started_by)
    if device != "auto":
        own, ids = resolve_device(device)
        return Execution(own, ids)
    if mode == "none":
        return _one_device(config["n_gpu"], dist_cfg["mode"])
    return _data_parallel(config["n_gpu"])


def _one_device(n_gpu: int, configured: str) -> Execution:
    """The first GPU if ``n_gpu`` >= 1 and there is one, else the CPU (``configured``: the
    ``distributed.mode`` of the config, for the message)."""
    if n_gpu > 1:
        how = "'none'" if configured == "none" else "'none' here ('auto' without torchrun or SLURM)"
        raise ConfigError(
            f"n_gpu is {n_gpu} but distributed.mode is {how}: one device. Set "
            "distributed.mode to 'dp' (DataParallel), start the run with torchrun (DDP), or set "
            "n_gpu to 1"
        )
    use_gpu = n_gpu >= 1 and torch.cuda.device_count() > 0
    return Execution(torch.device("cuda", 0) if use_gpu else torch.device("cpu"))


def _data_parallel(n_gpu: int) -> Execution:
    """DataParallel over the first ``n_gpu`` GPUs (as many as there are; the CPU without)."""
    available = torch.cuda.device_count()
    if available == 0:
        warnings.warn(
            "distributed.mode is 'dp' (DataParallel) but no GPU is available: training on the CPU",
            stacklevel=3,
        )
        return Execution(torch.device("cpu"))
    if n_gpu > available:
        warnings.warn(
            f"n_gpu is {n_gpu} but only {available} GPU(s) are available: using {available}",
            stacklevel=3,
        )
    ids = list(range(min(max(n_gpu, 1), available)))
    return Execution(torch.device("cuda", 0), ids if len(ids) > 1 else [])


def prepare_model(model: nn.Module, execution: Execution, config: dict[str, Any]) -> nn.Module:
    """Move ``model`` to the device (channels-last if configured) and wrap it: SyncBatchNorm and
    DistributedDataParallel under DDP, DataParallel for several GPUs, else bare."""
    device = execution.device
    model = model.to(device, memory_format=memory_format(config["channels_last"]))
    if execution.distributed:
        if config["distributed"]["sync_bn"]:
            if device.type == "cuda":
                model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
            else:
                warnings.warn(
                    "distributed.sync_bn is true but SyncBatchNorm needs CUDA: each CPU process "
                    "keeps its own BatchNorm statistics",
                    stacklevel=2,
                )
        ids = [device.index] if device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids)
    if execution.dp_ids:
        return nn.DataParallel(model, device_ids=execution.dp_ids)
    return model
