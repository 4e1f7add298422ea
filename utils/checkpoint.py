"""Checkpoints: atomic writes, weights-only loading, and the RNG states for exact resume."""

from __future__ import annotations

import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from utils.atomic import atomic_write

CHECKPOINT_VERSION = 1


def unwrap(model: nn.Module) -> nn.Module:
    """The bare model inside DataParallel / DistributedDataParallel (saved keys carry no
    ``module.``)."""
    return (
        model.module
        if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel))
        else model
    )


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Write ``state`` atomically: a temporary file in the same folder, flushed, then renamed.

    A crash or Ctrl-C during the write leaves any previous file at ``path`` untouched.
    """
    with atomic_write(path) as f:
        torch.save(state, f)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint on the CPU with ``weights_only=True``; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(
            f"{path} is not a weights-only checkpoint (it needs arbitrary unpickling, which is "
            f"refused for safety): {str(err).splitlines()[0]}"
        ) from err
    except (RuntimeError, EOFError) as err:
        raise ValueError(f"{path} is not a readable PyTorch checkpoint: {err}") from err
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, expected a checkpoint dict")
    return state


def rng_state() -> dict[str, Any]:
    """Every global RNG state as plain tensors and lists (loadable with weights_only)."""
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what ``rng_state`` captured (CUDA states only where the device count matches)."""
    torch.set_rng_state(state["torch"])
    if (
        state["cuda"]
        and torch.cuda.is_available()
        and len(state["cuda"]) == torch.cuda.device_count()
    ):
        torch.cuda.set_rng_state_all(state["cuda"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
