"""The Python API in two calls: load a trained U2Net, predict probability maps.

    from u2seg import Predictor

    predictor = Predictor.from_checkpoint("saved/runs/U2Net/0101_120000/best_model.pth")
    probability = predictor.predict("photo.jpg")  # HxW float32 in [0, 1], the photo's size

``inference.py`` is the command line over the same calls.
"""

from __future__ import annotations

import os
from typing import Any

from torch import nn

import models
from models import U2Net, read_pretrained
from utils import config as cfg
from utils.inference.predictor import PredictOptions, default_batch_size
from utils.inference.predictor import Predictor as _Predictor
from utils.preprocessing import DEFAULT_INPUT_SIZE
from utils.runtime.device import resolve_device
from utils.runtime.precision import default_amp

__all__ = ["Predictor", "load_model"]


def input_size(config: dict[str, Any] | None) -> int:
    """The validation ``base_size`` of a training config (else the train loader's), or
    :data:`DEFAULT_INPUT_SIZE`."""
    for section in ("val_loader", "train_loader"):
        loader = (config or {}).get(section) or {}
        size = loader.get("args", {}).get("base_size")
        if isinstance(size, int):
            return size
    return DEFAULT_INPUT_SIZE


def load_model(
    weights: str | os.PathLike, config_path: str | os.PathLike | None = None
) -> tuple[nn.Module, int, str]:
    """``(model in eval mode on the CPU, its default input size, a description)``.

    ``weights``: a U2Seg checkpoint (its stored config gives the input size) or official /
    ported U2Net weights. With ``config_path``, the config's ``arch`` builds the model and
    ``weights`` (any of those formats) fill it. Raises ``FileNotFoundError`` for a missing file,
    :class:`utils.config.ConfigError` or ValueError for weights that do not fit.
    """
    if config_path:
        config = cfg.load_config(config_path)
        if not isinstance(config.get("arch"), dict):
            raise cfg.ConfigError(f"{config_path} has no 'arch' section to build the model from")
        arch = config["arch"]
        with_weights = {**arch, "args": {**arch.get("args", {}), "pretrained": str(weights)}}
        model = cfg.build({"arch": with_weights}, "arch", cfg.classes_in(models))
        return model.eval(), input_size(config), f"{arch['type']} from {config_path}"
    loaded = read_pretrained(weights)
    description = f"U2Net {loaded.variant!r} ({loaded.source} weights)"
    return U2Net.from_weights(loaded), input_size(loaded.config), description


class Predictor(_Predictor):
    """:class:`utils.inference.predictor.Predictor` that also loads checkpoints.

    ``description`` says which model it runs (for messages).
    """

    description = "model"

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike,
        device: str = "auto",
        config: str | os.PathLike | None = None,
        amp: str = "off",
        channels_last: bool = False,
        **options: Any,
    ) -> Predictor:
        """A predictor of the weights at ``path`` (what ``inference.py -m`` accepts).

        ``device``: ``auto`` (the first GPU if there is one), ``cpu``, ``cuda`` or ``cuda:N``;
        ``config``: a config whose ``arch`` builds the model (``inference.py -c``); ``amp``:
        ``off``, ``fp16``, ``bf16`` or ``auto`` (fp16 on CUDA, bf16 on the CPU). ``options``
        are :class:`PredictOptions` fields (``mode``, ``size``, ``scales``, ``flip``,
        ``window``, ...); ``None`` means the default: ``size`` from the checkpoint's config (else
        320), ``window`` = ``size``, ``batch_size`` 8 on a GPU and 1 on the CPU. Raises
        ``FileNotFoundError`` or ValueError naming the file or option at fault.
        """
        torch_device, ids = resolve_device(device)
        if ids:
            raise ValueError(f"device {device!r}: prediction runs on one device; give one id")
        model, default_size, description = load_model(path, config)
        chosen = {name: value for name, value in options.items() if value is not None}
        size = chosen.setdefault("size", default_size)
        chosen.setdefault("window", size)
        chosen.setdefault("batch_size", default_batch_size(torch_device))
        if "scales" in chosen:
            chosen["scales"] = tuple(chosen["scales"])
        predictor = cls(
            model,
            PredictOptions(**chosen),
            torch_device,
            amp=default_amp(torch_device) if amp == "auto" else amp,
            channels_last=channels_last,
        )
        predictor.description = description
        return predictor
