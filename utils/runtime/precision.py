"""Numeric precision and memory layout, one vocabulary for training and inference.

``amp`` is ``"off"`` (float32), ``"fp16"`` (autocast float16; CUDA only) or ``"bf16"`` (autocast
bfloat16; CPU or GPU). ``channels_last`` puts a model and its inputs in channels-last memory
format.
"""

from __future__ import annotations

import contextlib

import torch

AMP_DTYPES = {"off": None, "fp16": torch.float16, "bf16": torch.bfloat16}


def check_amp(amp: str, device: torch.device) -> None:
    """Raise ValueError unless ``amp`` is one of :data:`AMP_DTYPES` and runs on ``device``."""
    if amp not in AMP_DTYPES:
        raise ValueError(f"amp must be one of {', '.join(AMP_DTYPES)}, got {amp!r}")
    if amp == "fp16" and device.type != "cuda":
        raise ValueError(
            "amp 'fp16' needs a CUDA GPU (float16 with a GradScaler); on the CPU use "
            "'bf16' or 'off'"
        )


def default_amp(device: torch.device) -> str:
    """The mixed precision of ``device``: ``fp16`` on CUDA, ``bf16`` elsewhere."""
    return "fp16" if device.type == "cuda" else "bf16"


def memory_format(channels_last: bool) -> torch.memory_format:
    """``torch.channels_last`` or ``torch.contiguous_format``."""
    return torch.channels_last if channels_last else torch.contiguous_format


def autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for ``amp`` (``off``, ``fp16``, ``bf16``) on ``device``'s type."""
    dtype = AMP_DTYPES[amp]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)
