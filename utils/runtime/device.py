"""Device selection from a command-line string."""

from __future__ import annotations

import glob
import sys
import warnings
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

GPU_DEVICE_FILES = ("/dev/nvidia[0-9]*", "/dev/kfd")
"""Device files of NVIDIA GPUs and of AMD's ROCm driver: without any, torch sees no GPU."""


def cpu_without_torch(spec: str) -> bool:
    """Whether ``spec`` (as for :func:`resolve_device`) means the CPU, known without importing
    torch (a second of CPU time): ``cpu``, or ``auto`` on a machine without GPU device files
    (:data:`GPU_DEVICE_FILES`; Linux. Elsewhere ``auto`` is left to :func:`resolve_device`)."""
    spec = spec.strip().lower()
    if spec == "cpu":
        return True
    return (
        spec == "auto"
        and sys.platform.startswith("linux")
        and not any(glob.glob(pattern) for pattern in GPU_DEVICE_FILES)
    )


def resolve_device(spec: str) -> tuple[torch.device, list[int]]:
    """``auto``, ``cpu``, ``cuda`` or GPU ids (``0``, ``cuda:1``, ``0,1``) -> (device, DP ids).

    Several ids are the devices of DataParallel (the ids list is empty for a single device).

    Without CUDA every GPU request falls back to the CPU with a warning.
    """
    import torch

    spec = spec.strip().lower().removeprefix("cuda:")
    if spec == "cpu" or (spec == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu"), []
    if not torch.cuda.is_available():
        warnings.warn(
            f"device {spec!r} asked for, but CUDA is not available: using the CPU", stacklevel=2
        )
        return torch.device("cpu"), []
    if spec in ("auto", "cuda"):
        return torch.device("cuda", 0), []
    try:
        ids = [int(part) for part in spec.split(",")]
    except ValueError:
        raise ValueError(
            f"--device must be auto, cpu, cuda or GPU ids like 0 or 0,1; got {spec!r}"
        ) from None
    missing = [i for i in ids if i >= torch.cuda.device_count()]
    if missing:
        raise ValueError(
            f"--device {spec}: no GPU {missing[0]} ({torch.cuda.device_count()} visible)"
        )
    return torch.device("cuda", ids[0]), ids if len(ids) > 1 else []
