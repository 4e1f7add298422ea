"""How a run executes (CPU, one GPU, DataParallel, DDP) and the model wrapped to fit."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from utils.config import ConfigError
from utils.runtime.device import resolve_device
from utils.runtime.distributed import get_rank, get_world_size, init_distributed, is_distributed
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
    """The device of this process, the DataParallel GPU ids (empty: no DataParallel) and the
    DDP rank and world size (0 and 1 without DDP)."""

    device: torch.device
    dp_ids: list[int] = field(default_factory=list)
    rank: int = 0
    world_size: int = 1

    @property
    def distributed(self) -> bool:
        return self.world_size > 1 or is_distributed()

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_execution(
    config: dict[str, Any], device: str = "auto", argv: list[str] | None = None
) -> Execution:
    """Choose the devices from ``config`` (``n_gpu``, ``distributed``) and the ``-d`` option.

    - ``distributed.mode`` ``ddp``: join the torchrun / SLURM process group (one process per
      GPU, or CPU processes with gloo); ``n_gpu`` and ``-d`` are not used.
    - ``dp``: DataParallel over the GPUs given by ``-d`` (e.g. ``0,1``) or the first ``n_gpu``;
      without GPUs the run falls back to the CPU with a warning.
    - ``none``: one device: ``-d`` (``auto``: the first GPU if ``n_gpu`` >= 1 and there is one,
      else the CPU).
    """
    dist_cfg, n_gpu = config["distributed"], config["n_gpu"]
    if dist_cfg["mode"] == "ddp":
        own = init_distributed(dist_cfg["backend"], argv)
        return Execution(own, [], get_rank(), get_world_size())
    if device != "auto":
        own, ids = resolve_device(device)
        return Execution(own, ids)
    available = torch.cuda.device_count()
    if dist_cfg["mode"] == "none":
        if n_gpu > 1:
            raise ConfigError(
                f"n_gpu is {n_gpu} but distributed.mode is 'none' (one device): set "
                "distributed.mode to 'dp' (DataParallel) or 'ddp' (torchrun), or n_gpu to 1"
            )
        use_gpu = n_gpu >= 1 and available > 0
        return Execution(torch.device("cuda", 0) if use_gpu else torch.device("cpu"))
    if available == 0:
        warnings.warn(
            "distributed.mode is 'dp' (DataParallel) but no GPU is available: training on the CPU",
            stacklevel=2,
        )
        return Execution(torch.device("cpu"))
    if n_gpu > available:
        warnings.warn(
            f"n_gpu is {n_gpu} but only {available} GPU(s) are available: using {available}",
            stacklevel=2,
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
