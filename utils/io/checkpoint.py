"""Checkpoints: atomic saving, weights-only loading, the check that a state dict fits a model."""

from __future__ import annotations

import argparse
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from utils.io.atomic import atomic_write
from utils.io.file_kinds import not_torch_reason
from utils.io.run_dir import newest_checkpoint

CHECKPOINT_VERSION = 1
SHOWN_KEYS = 5
"""Keys listed per kind in an error message."""


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Write ``state`` atomically: a temporary file in the same folder, flushed, then renamed.

    A crash or Ctrl-C during the write leaves any previous file at ``path`` untouched.
    """
    with atomic_write(path) as f:
        torch.save(state, f)


def load_weights_only(
    path: str | Path,
    what: str = "weights file",
    expected: str = "a PyTorch weights file (a torch.save output)",
) -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)``.

    Besides tensors and plain containers, ``argparse.Namespace`` is allowed (the ``args`` that
    training scripts store beside the weights). Raises ``FileNotFoundError`` for a missing file
    and ``ValueError`` naming ``path`` for a file that is not a readable PyTorch file, saying what
    it is when its first bytes tell (ONNX, a zip or torch archive cut short, a web page, an image,
    text, an empty file: see :func:`utils.io.file_kinds.not_torch_reason`), or for one that would
    need arbitrary unpickling (which can run any code, so it is refused). ``expected`` names
    what the file should have been, in those messages (``path is not <expected>: ...``).
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{what} {path} is a folder, not a file")
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    not_torch = f"{path} is not {expected}"
    reason = not_torch_reason(path)
    if reason is not None:
        raise ValueError(f"{not_torch}: {reason}")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL (\S+)", str(err))
        if found is None:
            unsupported = re.search(r"Unsupported [^\n.]*", str(err))
            raise ValueError(
                not_torch + (f": {unsupported.group(0)}" if unsupported else "")
            ) from err
        raise ValueError(
            f"{path} is refused: it is not a weights-only file (it stores {found.group(1)}), and "
            "loading it would need arbitrary unpickling, which can run any code. If you trust its "
            "source, load it once with torch.load(..., weights_only=False) and torch.save only "
            "its state dict."
        ) from err
    except (EOFError, RuntimeError) as err:  # a legacy (pickle) file cut short
        if isinstance(err, EOFError) or "unexpected EOF" in str(err):
            raise ValueError(
                f"{path} is a PyTorch file cut short (it ends too early): an interrupted "
                "download or copy? fetch the file again"
            ) from err
        raise ValueError(f"{path} is not a readable PyTorch file: {err!r}") from err
    except Exception as err:  # torch.load raises many kinds for files that are not its own
        raise ValueError(f"{path} is not a readable PyTorch file: {err!r}") from err


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint dict loaded on the CPU with :func:`load_weights_only`; errors name the file."""
    state = load_weights_only(path, "checkpoint")
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, expected a checkpoint dict")
    return state


TRAINING_KEYS = ("arch", "epoch", "state_dict", "optimizer", "monitor_best", "config", "rng")
"""The keys a training checkpoint needs to be resumed from (``train.py -r``)."""

MODEL_KEYS = (
    "arch", "epoch", "state_dict", "monitor_best", "best_epoch", "config", "execution", "version"
)  # fmt: skip
"""The keys of a model checkpoint (``best_model.pth``): what inference, export and fine-tuning
(``arch.args.pretrained``) read (the weights, and the config with the architecture and the
input normalisation), and the epoch and score; not the state that only a resume needs."""


def model_checkpoint(state: Mapping[str, Any]) -> dict[str, Any]:
    """The :data:`MODEL_KEYS` of a training checkpoint ``state`` (those it has): a file about a
    third of the size, without the optimizer, scheduler, scaler and random states."""
    return {key: state[key] for key in MODEL_KEYS if key in state}


def load_training_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint that a run can resume from, loaded with :func:`load_checkpoint`.

    Raises ``ValueError`` with one line naming ``path`` and what it holds instead (a bare state
    dict, another program's dict, a list, ...; for a model checkpoint such as ``best_model.pth``,
    the newest checkpoint of its folder to resume from), as well as the errors of
    :func:`load_weights_only` (a text, empty or damaged file).
    """
    state = load_weights_only(path, "checkpoint")
    if isinstance(state, dict) and all(k in state for k in TRAINING_KEYS):
        return state
    if isinstance(state, dict) and all(k in state for k in ("arch", "state_dict", "config")):
        raise ValueError(_not_resumable(Path(path), state))
    raise ValueError(
        f"{path} {_what_it_holds(state)}, not a U2Seg training checkpoint (the "
        "checkpoint-epochN.pth or checkpoint-last.pth of a run): to start from these weights use "
        "arch.args.pretrained"
    )


def _not_resumable(path: Path, state: dict[str, Any]) -> str:
    """The one-line message for ``-r`` of a model checkpoint (``best_model.pth``): which file of
    its run folder to resume from instead."""
    what = (
        f"{path} is a model checkpoint (the weights and config of epoch {state.get('epoch')}, "
        "without the optimizer, scheduler and random states), which a run cannot resume from"
    )
    newest = newest_checkpoint([path.parent])
    if newest is None:
        where = f"its folder {path.parent} holds no checkpoint-epochN.pth to resume from"
    else:
        where = f"resume from {newest}, the newest checkpoint of its run folder"
    return f"{what}: {where}; to start a new run from these weights use arch.args.pretrained"


def _what_it_holds(state: Any) -> str:
    """For a message: ``is a bare state dict (weights only, 12 tensors)`` and the like."""
    if not isinstance(state, dict):
        return f"holds a {type(state).__name__}"
    if state and all(isinstance(v, torch.Tensor) for v in state.values()):
        return f"is a bare state dict (weights only, {len(state)} tensors)"
    missing = [k for k in TRAINING_KEYS if k not in state]
    return f"is a dict without {', '.join(missing)} (keys: {first_keys([str(k) for k in state])})"


def first_keys(keys: list[str]) -> str:
    """The first :data:`SHOWN_KEYS` of ``keys`` for a message (``none`` when empty)."""
    if not keys:
        return "none"
    more = f" ... ({len(keys)} in all)" if len(keys) > SHOWN_KEYS else ""
    return ", ".join(keys[:SHOWN_KEYS]) + more


def check_state_dict(
    expected: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor], what: str
) -> None:
    """Raise ValueError unless ``state`` has exactly the keys and shapes of ``expected``.

    ``expected`` is a model's ``state_dict()`` (a model on the meta device will do); ``what``
    begins the message, e.g. ``"checkpoint run/best_model.pth does not fit U2Net('lite')"``. The
    message lists the first unexpected and missing keys, or the first tensors of another shape.
    """
    unexpected = [k for k in state if k not in expected]
    missing = [k for k in expected if k not in state]
    if unexpected or missing:
        raise ValueError(
            f"{what}: first unexpected keys: {first_keys(unexpected)}; "
            f"first missing keys: {first_keys(missing)}"
        )
    wrong = [
        f"{k} {tuple(state[k].shape)} (expected {tuple(v.shape)})"
        for k, v in expected.items()
        if state[k].shape != v.shape
    ]
    if wrong:
        raise ValueError(
            f"{what}: {len(wrong)} tensors of another shape, first: {', '.join(wrong[:SHOWN_KEYS])}"
        )
