"""The Python API in two calls: load a trained U2Net, predict probability maps.

    from u2seg import Predictor

    predictor = Predictor.from_checkpoint("saved/runs/U2Net/0101_120000/best_model.pth")
    probability = predictor.predict("photo.jpg")  # HxW float32 in [0, 1], the photo's size

``inference.py`` is the command line over the same calls.
"""

from __future__ import annotations

import os
from typing import Any, NamedTuple

from torch import nn

import models
from models import U2Net, read_pretrained
from utils import config as cfg
from utils.imagery import Imagery
from utils.inference.predictor import PredictOptions, default_batch_size
from utils.inference.predictor import Predictor as _Predictor
from utils.preprocessing import DEFAULT_INPUT_SIZE, NORMALISATIONS, check_normalisation
from utils.runtime.device import resolve_device
from utils.runtime.precision import default_amp

__all__ = ["LoadedModel", "Predictor", "load_model"]


def input_size(config: dict[str, Any] | None, recorded: int | None = None) -> int:
    """The size a model predicts at by default: ``recorded`` when given (the size an ONNX export
    of ours records in its metadata: :attr:`models.PretrainedWeights.input_size`), else the
    validation ``base_size`` of a training config (else the train loader's), else
    :data:`DEFAULT_INPUT_SIZE`."""
    if recorded:
        return recorded
    for section in ("val_loader", "train_loader"):
        loader = (config or {}).get(section) or {}
        size = loader.get("args", {}).get("base_size")
        if isinstance(size, int):
            return size
    return DEFAULT_INPUT_SIZE


class LoadedModel(NamedTuple):
    """A model ready to predict: in eval mode on the CPU, with the input size, the
    normalisation (:data:`utils.preprocessing.NORMALISATIONS`) and the imagery (bands and
    scaling of its inputs, :mod:`utils.imagery`; None: 8-bit RGB) it expects, and a description
    for messages."""

    model: nn.Module
    input_size: int
    description: str
    normalisation: str
    imagery: Imagery | None = None


def load_model(
    weights: str | os.PathLike, config_path: str | os.PathLike | None = None
) -> LoadedModel:
    """The model of ``weights``: a U2Seg checkpoint (its stored config gives the input size, the
    normalisation and the imagery), official / ported U2Net weights or a U2Net ONNX file
    (official normalisation and RGB inputs unless its metadata says otherwise). With
    ``config_path``, the config's ``arch`` builds the model (with the weights' input channels
    where it leaves ``in_channels`` out) and ``weights`` (any of those formats) fill it; the
    config's ``normalisation`` and ``imagery``, when it has them, override the weights'. Raises
    ``FileNotFoundError`` for a missing file, :class:`utils.config.ConfigError` or ValueError for
    weights or an imagery section that do not fit.
    """
    loaded = read_pretrained(weights)
    if not config_path:
        description = f"U2Net {loaded.variant!r} ({loaded.source} weights)"
        normalisation = loaded.normalisation or NORMALISATIONS[0]
        model = U2Net.from_weights(loaded)
        size = input_size(loaded.config, loaded.input_size)
        imagery = _imagery(loaded.imagery, str(weights))
        return LoadedModel(model, size, description, normalisation, imagery)
    config = cfg.load_config(config_path)
    if not isinstance(config.get("arch"), dict):
        raise cfg.ConfigError(f"{config_path} has no 'arch' section to build the model from")
    arch = config["arch"]
    args = {k: v for k, v in arch.get("args", {}).items() if k != "pretrained"}
    args.setdefault("in_channels", loaded.in_channels)  # as train.py fills it from the imagery
    bare = {**arch, "args": args}
    model = cfg.build({"arch": bare}, "arch", cfg.classes_in(models))
    model.load_weights(loaded)
    normalisation = config.get("normalisation", loaded.normalisation or NORMALISATIONS[0])
    check_normalisation(normalisation)
    description = f"{arch['type']} from {config_path}"
    section = config.get("imagery", loaded.imagery)
    imagery = _imagery(section, str(config_path if "imagery" in config else weights))
    return LoadedModel(model.eval(), input_size(config), description, normalisation, imagery)


def _imagery(section: dict[str, Any] | None, source: str) -> Imagery | None:
    """The :class:`Imagery` of an ``imagery`` section, None without one; ConfigError naming
    ``source``."""
    try:
        return Imagery.from_config(section)
    except ValueError as err:
        raise cfg.ConfigError(f"{source}: {err}") from None


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
        normalisation: str | None = None,
        fuse: bool | None = None,
        **options: Any,
    ) -> Predictor:
        """A predictor of the weights at ``path`` (what ``inference.py -m`` accepts).

        ``device``: ``auto`` (the first GPU if there is one), ``cpu``, ``cuda`` or ``cuda:N``;
        ``config``: a config whose ``arch`` builds the model (``inference.py -c``); ``amp``:
        ``off``, ``fp16``, ``bf16`` or ``auto`` (fp16 on CUDA, bf16 on the CPU);
        ``normalisation``: ``imagenet`` or ``official``, None for the weights' own (see
        :func:`load_model`); ``fuse``: run the model with BatchNorm folded into the
        convolutions (:meth:`Predictor.fuse`: faster, maps within one grey level), None
        (default) on the CPU only. ``options`` are :class:`PredictOptions` fields (``mode``,
        ``size``, ``scales``, ``flip``, ``window``, ...); ``None`` means the default: ``size``
        from the checkpoint's config (else 320), ``window`` = ``size``, ``batch_size`` 8 on a
        GPU and 1 on the CPU. Raises ``FileNotFoundError`` or ValueError naming the file or
        option at fault. Image files are read as the model's config says (its ``imagery``
        section: band selection and scaling; else 8-bit RGB).
        """
        torch_device, ids = resolve_device(device)
        if ids:
            raise ValueError(f"device {device!r}: prediction runs on one device; give one id")
        model, default_size, description, own_normalisation, imagery = load_model(path, config)
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
            normalisation=normalisation or own_normalisation,
            imagery=imagery,
        )
        predictor.description = description
        if fuse or (fuse is None and torch_device.type == "cpu"):
            predictor.fuse()
        return predictor
