"""U2Net weights from other formats mapped to our naming: the official files, the config-driven
port, ours.

``read_pretrained(path)`` reads any of them with ``torch.load(..., weights_only=True)`` and returns
the weights in our naming with the variant they hold; ``U2Net.from_weights`` and
``models.load_pretrained`` check that they fit and build the model. Formats, told apart by the key
names:

- official U2NET / U2NETP (``u2net.pth``, ``u2netp.pth``): ``stage1.rebnconvin.conv_s1.weight``;
- the config-driven port: ``encode_modules.0.conv_in.conv.weight``, bare or in ``{"model": ...}``;
- U2Seg: ``encoders.0.conv_in.conv.weight``, bare or in a checkpoint's ``state_dict``;

each possibly with ``module.`` (DataParallel / DDP) or ``_orig_mod.`` (torch.compile) prefixes;
and ONNX graphs (rembg's ``u2net.onnx`` / ``u2netp.onnx``, our exports), mapped by structure in
:mod:`models.onnx_weights`. The bias of a conv followed by BatchNorm is folded into the BN
running mean (``running_mean - bias``), which leaves the eval-mode output unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import torch

from models.onnx_weights import ONNX, onnx_state_dict
from models.variants import VARIANTS, check_variant
from utils.io.checkpoint import first_keys, load_weights_only
from utils.io.file_kinds import is_onnx_file
from utils.preprocessing import NORMALISATIONS
from utils.runtime.logs import get_logger

OFFICIAL = "official U2NET/U2NETP"
PORT = "config-driven port"
OURS = "U2Seg"
FIRST_CONV = "encoders.0.conv_in.conv.weight"  # En1's input conv: the only in_channels-wide tensor
RGB = 3  # the input channels of every released U2Net
EXAMPLES = {
    OFFICIAL: "stage1.rebnconvin.conv_s1.weight",
    PORT: "encode_modules.0.conv_in.conv.weight",
    OURS: FIRST_CONV,
}
_ROOTS = {
    OFFICIAL: re.compile(r"stage[1-6]d?|side[1-6]|outconv"),
    PORT: re.compile(r"encode_modules|decode_modules|side_modules|out_conv"),
    OURS: re.compile(r"encoders|decoders|side_heads|fusion"),
}
_PORT_NAMES = {
    "encode_modules": "encoders",
    "decode_modules": "decoders",
    "side_modules": "side_heads",
    "out_conv": "fusion",
}
_WRAPPERS = ("module.", "_orig_mod.")  # DataParallel / DDP, torch.compile


class PretrainedWeights(NamedTuple):
    """A state dict in our naming, with the U2Net it holds and the format it came from.

    ``name`` is the file (for messages); ``source`` is one of :data:`EXAMPLES`' formats, or
    ``None`` when the keys follow no known naming (``problem`` then says how; the state dict is
    left as it was and cannot fit a U2Net). ``config`` is the training config stored in a U2Seg
    checkpoint. ``normalisation`` is how the weights expect their inputs
    (:data:`utils.preprocessing.NORMALISATIONS`): a U2Seg checkpoint's config says (``imagenet``
    before the setting existed); the official files are ``official``, the port's ``imagenet``;
    ONNX graphs say in their metadata when we exported them, else (rembg's) ``official``.
    ``input_size`` is the square input size an ONNX file of ours was exported at (None
    otherwise: a checkpoint's config gives it). ``adapted`` says what was changed to fit the
    model they start (:func:`widen_first_conv`), empty when nothing was. ``imagery`` is the
    ``imagery`` section (:mod:`utils.imagery`) their inputs were read with: a U2Seg checkpoint's
    config's, or the metadata of an ONNX export of one; None for 8-bit RGB inputs.
    """

    state_dict: dict[str, torch.Tensor]
    variant: str
    in_channels: int
    source: str | None
    name: str
    config: dict[str, Any] | None = None
    problem: str = ""
    normalisation: str | None = None
    input_size: int | None = None
    adapted: str = ""
    imagery: dict[str, Any] | None = None

    def mismatch(self, model: str) -> str:
        """The start of the message when these weights do not fit ``model`` (e.g.
        ``"U2Net(variant='lite')"``)."""
        if self.source is None:
            known = ", ".join(f"{f} ('{example}')" for f, example in EXAMPLES.items())
            return (
                f"{self.name}: unrecognised U2Net state dict format: its keys {self.problem} "
                f"known here ({known})"
            )
        return f"{self.name}: {self.source} state dict does not fit {model}"


def read_pretrained(
    path: str | Path, variant: str | None = None, in_channels: int | None = None
) -> PretrainedWeights:
    """The weights of ``path`` in our naming, to start a U2Net of ``variant`` with
    ``in_channels`` inputs (None: whatever the file holds).

    ``variant`` must match the file, and so must ``in_channels``, except that 3-channel (RGB)
    weights start a model with more input channels by :func:`widen_first_conv` (logged, and said
    in ``adapted``); otherwise a ValueError says what the file holds. An ONNX file (known by its
    first bytes) is read by :func:`models.onnx_weights.onnx_state_dict`. Raises
    ``FileNotFoundError`` for a missing file, ValueError for one that is neither a weights-only
    PyTorch file nor a U2Net ONNX graph, ImportError for an ONNX file without the onnx
    package."""
    if variant is not None:
        check_variant(variant)
    path = Path(path).expanduser()
    if is_onnx_file(path):
        graph = onnx_state_dict(path)
        weights = PretrainedWeights(
            graph.state_dict,
            graph.variant,
            graph.in_channels,
            ONNX,
            str(path),
            normalisation=graph.normalisation,
            input_size=graph.input_size,
            imagery=graph.imagery,
        )
    else:
        expected = "a PyTorch weights file (a torch.save output) or an ONNX graph"
        weights = convert_state_dict(load_weights_only(path, expected=expected), name=str(path))
    if weights.source is None:
        return weights  # the fit check names the keys
    if variant is not None and variant != weights.variant:
        raise ValueError(
            f"{path} holds U2Net variant {weights.variant!r} ({weights.source} weights), "
            f"not {variant!r}: set the variant to {weights.variant!r}"
        )
    if in_channels is None or in_channels == weights.in_channels:
        return weights
    if weights.in_channels == RGB and in_channels > RGB:
        weights = widen_first_conv(weights, in_channels)
        get_logger().info("%s: %s", path, weights.adapted)
        return weights
    raise ValueError(
        f"{path} holds a U2Net with {weights.in_channels} input channels, not {in_channels}: "
        f"set arch.args.in_channels to {weights.in_channels} (only {RGB}-channel weights start "
        f"a model with more input channels, the extra ones initialised from the RGB mean)"
    )


def widen_first_conv(weights: PretrainedWeights, in_channels: int) -> PretrainedWeights:
    """``weights`` (3 input channels) with the first conv widened to ``in_channels`` (> 3).

    The first conv (:data:`FIRST_CONV`, ``[out, 3, k, k]``) becomes ``[out, in_channels, k, k]``:
    channels 0..2 keep the R, G, B filters unchanged and each further channel gets their mean,
    ``w[:, :3].mean(dim=1, keepdim=True)`` (issue 18's rule: extra bands initialised from the
    RGB mean when fine-tuning from 3-band weights). Its bias, if any, and every other tensor are
    unchanged. timm's ``adapt_input_conv`` repeats the RGB filters and rescales all of them by
    ``3 / in_channels``; we do not rescale, so channels 0..2 respond exactly as before to the
    same RGB input (an extra band of zeros changes nothing), and the BatchNorm that follows the
    conv normalises whatever scale the extra bands add. ValueError naming the file when
    ``weights`` lack the conv or do not have 3 input channels.
    """
    conv = weights.state_dict.get(FIRST_CONV)
    if conv is None or conv.dim() != 4 or conv.shape[1] != RGB or in_channels <= RGB:
        found = "none" if conv is None else f"shape {list(conv.shape)}"
        raise ValueError(
            f"{weights.name}: cannot widen the first conv ({FIRST_CONV}, found: {found}) to "
            f"{in_channels} input channels: only a [out, {RGB}, k, k] weight widens, to more "
            f"than {RGB} channels"
        )
    extra = conv.mean(dim=1, keepdim=True).expand(-1, in_channels - RGB, -1, -1)
    state = weights.state_dict | {FIRST_CONV: torch.cat((conv, extra), dim=1)}
    adapted = (
        f"first conv widened from {RGB} to {in_channels} input channels "
        "(extra channels: the mean of the RGB filters)"
    )
    return weights._replace(state_dict=state, in_channels=in_channels, adapted=adapted)


def convert_state_dict(obj: Any, name: str = "state dict") -> PretrainedWeights:
    """Map a loaded file (state dict or checkpoint dict) to our naming; ``name`` is for errors."""
    config = obj.get("config") if isinstance(obj, Mapping) else None
    state = _unwrap(obj, name)
    source, problem = _detect(state)
    stored = dict(config) if isinstance(config, Mapping) else None
    if source is None:
        return PretrainedWeights(state, "full", 3, None, name, stored, problem)
    if source == OFFICIAL:
        state = {_official_key(k): v for k, v in state.items()}
    elif source == PORT:
        state = {".".join(_PORT_NAMES.get(p, p) for p in k.split(".")): v for k, v in state.items()}
    state = _fold_conv_biases(state)
    variant, in_channels = _detect_variant(state, source, name)
    if source == OURS:
        normalisation = (stored or {}).get("normalisation", NORMALISATIONS[0])
    else:
        normalisation = "official" if source == OFFICIAL else NORMALISATIONS[0]
    return PretrainedWeights(
        state,
        variant,
        in_channels,
        source,
        name,
        stored,
        normalisation=normalisation,
        imagery=(stored or {}).get("imagery") if source == OURS else None,
    )


def _unwrap(obj: Any, name: str) -> dict[str, torch.Tensor]:
    """The state dict inside ``obj`` (ours: ``state_dict``, the port's: ``model``), without
    wrapper prefixes."""
    if isinstance(obj, Mapping):
        if obj.get("arch") not in (None, "U2Net"):
            raise ValueError(f"{name} is a checkpoint of {obj['arch']!r}, not of U2Net")
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj:
        raise ValueError(f"{name} holds no state dict (found {type(obj).__name__})")
    not_tensors = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise ValueError(
            f"{name} is not a state dict: {not_tensors[0]!r} is not a tensor "
            f"(keys: {first_keys(list(obj))})"
        )
    state = {}
    for key, value in obj.items():
        key = str(key)
        while key.startswith(_WRAPPERS):
            key = key.split(".", 1)[1]
        state[key] = value.float() if value.is_floating_point() else value
    return state


def _detect(state: dict[str, torch.Tensor]) -> tuple[str | None, str]:
    """The format whose naming the keys follow, or None and what is wrong with them."""
    roots = {k.split(".", 1)[0] for k in state}
    found = [f for f, pattern in _ROOTS.items() if any(pattern.fullmatch(r) for r in roots)]
    if len(found) == 1:
        return found[0], ""
    if found:
        return None, f"mix the namings of {' and '.join(found)}"
    return None, "follow none of the namings"


def _official_key(key: str) -> str:
    """``stage2d.rebnconv3d.conv_s1.weight`` -> ``decoders.3.decoders.2.conv.weight``."""
    parts = key.split(".")
    stage = re.fullmatch(r"stage([1-6])(d?)", parts[0])
    side = re.fullmatch(r"side([1-6])", parts[0])
    if side:
        return ".".join(["side_heads", str(6 - int(side.group(1))), *parts[1:]])
    if parts[0] == "outconv":
        return ".".join(["fusion", *parts[1:]])
    if not stage or len(parts) < 3:
        return key  # left for the key check to report
    n, decoder = int(stage.group(1)), bool(stage.group(2))
    if decoder:
        head, block = ["decoders", str(5 - n)], VARIANTS["full"][1][5 - n]
    else:
        head, block = ["encoders", str(n - 1)], VARIANTS["full"][0][n - 1]
    height = block.height or 4  # RSU-4F has 4 levels; both variants have the same heights
    conv = re.fullmatch(r"rebnconv(in|\d+)(d?)", parts[1])
    if not conv:
        return key
    if conv.group(1) == "in":
        inner = ["conv_in"]
    elif conv.group(2):
        inner = ["decoders", str(height - int(conv.group(1)) - 1)]
    else:
        inner = ["encoders", str(int(conv.group(1)) - 1)]
    layer = {"conv_s1": "conv", "bn_s1": "bn"}.get(parts[2], parts[2])
    return ".".join([*head, *inner, layer, *parts[3:]])


def _fold_conv_biases(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Fold the bias of every conv followed by BatchNorm into the BN running mean (exact in eval
    mode; in training mode BN subtracts the batch mean, which cancels a constant bias)."""
    out = dict(state)
    for key, bias in state.items():
        if not key.endswith(".conv.bias"):
            continue
        prefix = key[: -len("conv.bias")]
        mean = out.get(prefix + "bn.running_mean")
        if mean is None or mean.shape != bias.shape:
            continue  # left for the key check to report
        out[prefix + "bn.running_mean"] = (mean.double() - bias.double()).to(mean.dtype)
        del out[key]
    for key in [k for k in out if k.endswith(".bn.running_mean")]:
        out.setdefault(key[: -len("running_mean")] + "num_batches_tracked", torch.tensor(0))
    return out


def _detect_variant(state: dict[str, torch.Tensor], source: str, name: str) -> tuple[str, int]:
    """The variant (from En1's mid channels) and the input channels (En1's input conv); without
    those convs, "full" and 3 (the key check that follows then lists what is missing)."""
    first_mid = "encoders.0.encoders.0.conv.weight"
    if any(k not in state or state[k].dim() != 4 for k in (FIRST_CONV, first_mid)):
        return "full", 3
    mid = state[first_mid].shape[0]
    for variant, (encoders, _) in VARIANTS.items():
        if encoders[0].mid_ch == mid:
            return variant, state[FIRST_CONV].shape[1]
    known = ", ".join(f"{v}: {e[0].mid_ch}" for v, (e, _) in VARIANTS.items())
    raise ValueError(
        f"{name}: {source} weights with {mid} mid channels in the first encoder match no U2Net "
        f"variant ({known})"
    )
