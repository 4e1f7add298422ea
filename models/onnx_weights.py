"""U2Net weights read from an ONNX graph: rembg's ``u2net.onnx`` / ``u2netp.onnx`` and our exports.

Such graphs hold no BatchNorm: exporters fold each BatchNorm into the convolution before it
(weight ``W * gamma / sqrt(var + eps)``, bias ``(b - mean) * gamma / sqrt(var + eps) + beta``),
and most initializers are unnamed (``"1967"``). So the weights are found by structure, not by
name:

- the *trunk* convolutions (3x3 with more than one output channel: every ConvBNReLU) are taken
  in the graph's node order, which is the order in which they execute, and matched one to one
  with :func:`models.variants.trunk_convs` (En1..En6, then De5..De1, each residual U-block as
  ``conv_in``, its encoders, its decoders), which also tells the variant by the shapes;
- the six *side* convolutions are placed by the stage whose output they read: the stage of the
  trunk convolutions nearest above them in the graph (exporters place them differently: the
  official model computes them after the last decoder, ours after each stage);
- the *fusion* convolution is the 1x1 one.

Every match is checked: weight shape, stride 1, dilation, padding and one group. A folded
convolution is loaded as our bias-free convolution followed by a BatchNorm that is an exact
identity in eval mode apart from its shift: weight 1, running mean 0, running variance
``1 - eps`` (so that ``var + eps`` is exactly 1.0 in float32 and the scale is exactly 1) and bias
= the folded bias. The forward pass then computes what the ONNX graph computes. When fine-tuning
(train mode), BatchNorm normalises with the batch statistics as always.

Reading needs the ``onnx`` package (``pip install onnx``), imported only when an ONNX file is
read.
"""

from __future__ import annotations

import json
from collections import Counter, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from models.variants import VARIANTS, ConvSpec, fusion_conv, side_convs, trunk_convs
from utils.imagery import Imagery
from utils.preprocessing import NORMALISATIONS

ONNX = "ONNX graph (BatchNorm folded)"
NORMALISATION_KEY = "normalisation"
"""The metadata entry (``metadata_props``) in which our exports record their inputs'
normalisation."""
INPUT_SIZE_KEY = "input_size"
"""The metadata entry in which our exports record the square input size they were exported at
(the size the model is run at by default when the file is loaded back)."""
IMAGERY_KEY = "imagery"
"""The metadata entry in which our exports of a model trained with an ``imagery`` section record
it, as JSON (:mod:`utils.imagery`: which bands of a raster the inputs are, how scaled)."""


@dataclass(frozen=True)
class GraphConv:
    """One Conv node of the graph: its position, weight and bias (float32), attributes and the
    names of the tensors it reads (its data input first)."""

    index: int
    name: str
    weight: torch.Tensor
    bias: torch.Tensor | None
    strides: tuple[int, ...]
    dilations: tuple[int, ...]
    pads: tuple[int, ...]
    group: int
    data_input: str


def load_onnx_model(path: str | Path) -> Any:
    """``onnx.ModelProto`` of ``path``; ValueError naming the file when it cannot be read as one
    (truncated, not protobuf), ImportError saying what to install without the onnx package."""
    try:
        import onnx
    except ImportError as err:
        raise ImportError(
            f"{path} is an ONNX file: reading it needs the onnx package (pip install onnx)"
        ) from err
    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception as err:  # onnx raises protobuf DecodeError and others: one message for all
        raise ValueError(
            f"{path} cannot be read as an ONNX model (truncated or not an ONNX file: "
            f"{type(err).__name__}: {err})"
        ) from err


def _constants(graph: Any) -> dict[str, np.ndarray]:
    """Initializers and Constant-node tensors by name."""
    from onnx import numpy_helper

    found = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            for attribute in node.attribute:
                if attribute.name == "value":
                    found[node.output[0]] = numpy_helper.to_array(attribute.t)
    return found


def _attributes(node: Any) -> dict[str, Any]:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def graph_convs(model: Any, name: str) -> list[GraphConv]:
    """The Conv nodes of ``model`` in graph order with their weights (ValueError when a weight is
    not a constant of the graph)."""
    constants = _constants(model.graph)
    convs = []
    for index, node in enumerate(model.graph.node):
        if node.op_type != "Conv":
            continue
        if node.input[1] not in constants:
            raise ValueError(f"{name}: the weight of Conv node {node.name!r} is not stored in it")
        attrs = _attributes(node)
        if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            raise ValueError(
                f"{name}: Conv node {node.name!r} uses auto_pad, which U2Net never does"
            )
        weight = torch.from_numpy(constants[node.input[1]].astype(np.float32))
        has_bias = len(node.input) > 2 and node.input[2] in constants
        bias = torch.from_numpy(constants[node.input[2]].astype(np.float32)) if has_bias else None
        kernel = weight.shape[2:]
        convs.append(
            GraphConv(
                index=index,
                name=node.name or f"Conv #{len(convs)}",
                weight=weight,
                bias=bias,
                strides=tuple(attrs.get("strides", [1] * len(kernel))),
                dilations=tuple(attrs.get("dilations", [1] * len(kernel))),
                pads=tuple(attrs.get("pads", [0] * 2 * len(kernel))),
                group=int(attrs.get("group", 1)),
                data_input=node.input[0],
            )
        )
    return convs


def _detect_variant(trunk: list[GraphConv], name: str, summary: str) -> tuple[str, int]:
    """The variant whose trunk weight shapes the graph's trunk has (ValueError otherwise)."""
    in_channels = int(trunk[0].weight.shape[1]) if trunk else 3
    counts = {}
    for variant in VARIANTS:
        layout = trunk_convs(variant, in_channels)
        counts[variant] = len(layout)
        shapes = [(s.out_ch, s.in_ch, s.kernel, s.kernel) for _, _, s in layout]
        if shapes == [tuple(c.weight.shape) for c in trunk]:
            return variant, in_channels
    known = " or ".join(sorted({str(n) for n in counts.values()}))
    raise ValueError(
        f"{name} is an ONNX model but not a U2Net: {summary}; its {len(trunk)} 3x3 "
        f"convolutions of more than one output channel do not have the number ({known}) and "
        f"shapes of a U2Net's ({', '.join(counts)})"
    )


def _check_conv(found: GraphConv, spec: ConvSpec, where: str, name: str) -> None:
    """ValueError naming both when the graph's conv differs from ``spec`` in any attribute."""
    expected = (
        (spec.out_ch, spec.in_ch, spec.kernel, spec.kernel),
        (1, 1),
        (spec.dilation,) * 2,
        (spec.padding,) * 4,
        1,
    )
    actual = (tuple(found.weight.shape), found.strides, found.dilations, found.pads, found.group)
    if expected != actual:
        raise ValueError(
            f"{name}: Conv node {found.name!r} (weight shape, strides, dilations, pads, group) "
            f"= {actual} does not match {where} {expected}"
        )


def _nearest_convs(start: str, graph: Any, positions: dict[int, int]) -> list[int]:
    """The positions (``positions``: node index -> position) of the Conv nodes nearest above
    tensor ``start``: the search stops at each Conv it meets."""
    producer = {out: index for index, node in enumerate(graph.node) for out in node.output}
    found, seen, queue = [], set(), deque([start])
    while queue:
        index = producer.get(queue.popleft())
        if index is None or index in seen:
            continue
        seen.add(index)
        if index in positions:
            found.append(positions[index])
        else:
            queue.extend(graph.node[index].input)
    return found


def _fold_into_bn(state: dict[str, torch.Tensor], prefix: str, conv: GraphConv) -> None:
    """Our ``prefix.conv`` / ``prefix.bn`` entries for a BatchNorm-folded graph convolution."""
    channels = conv.weight.shape[0]
    eps = torch.tensor(nn.BatchNorm2d(1).eps)  # float32, as BatchNorm adds it
    state[f"{prefix}.conv.weight"] = conv.weight
    state[f"{prefix}.bn.weight"] = torch.ones(channels)
    state[f"{prefix}.bn.bias"] = conv.bias if conv.bias is not None else torch.zeros(channels)
    state[f"{prefix}.bn.running_mean"] = torch.zeros(channels)
    state[f"{prefix}.bn.running_var"] = (1 - eps).expand(channels).clone()  # var + eps == 1.0
    state[f"{prefix}.bn.num_batches_tracked"] = torch.tensor(0)


def _summary(model: Any) -> str:
    """The graph's most common operators, for messages."""
    counts = Counter(node.op_type for node in model.graph.node)
    ops = ", ".join(f"{n} {op}" for op, n in counts.most_common(6))
    return f"{len(model.graph.node)} nodes ({ops})"


class OnnxWeights(NamedTuple):
    """The U2Net of an ONNX file: state dict in our naming, variant, input channels, the
    normalisation its inputs need (the ``normalisation`` metadata entry of our exports, else
    ``official``: rembg's files hold the official weights), the input size our exports record
    (``input_size`` entry; None for other files) and the ``imagery`` section they record (the
    ``imagery`` entry, JSON; None without one: 8-bit RGB inputs)."""

    state_dict: dict[str, torch.Tensor]
    variant: str
    in_channels: int
    normalisation: str
    input_size: int | None = None
    imagery: dict[str, Any] | None = None


def onnx_state_dict(path: str | Path) -> OnnxWeights:
    """The U2Net in the ONNX file ``path`` (see :class:`OnnxWeights`).

    Raises ImportError without the onnx package, ValueError (naming the file and what it holds)
    for a file that is not an ONNX model or holds another architecture.
    """
    name = str(path)
    model = load_onnx_model(path)
    convs = graph_convs(model, name)
    trunk = [c for c in convs if c.weight.shape[0] > 1 and c.weight.shape[2:] == (3, 3)]
    variant, in_channels = _detect_variant(trunk, name, _summary(model))
    state: dict[str, torch.Tensor] = {}
    stage_of = []
    for found, (prefix, stage, spec) in zip(trunk, trunk_convs(variant, in_channels), strict=True):
        _check_conv(found, spec, f"U2Net {variant} {prefix}.conv", name)
        _fold_into_bn(state, prefix, found)
        stage_of.append(stage)
    heads = [c for c in convs if all(c is not t for t in trunk)]
    stage_at = {conv.index: stage for conv, stage in zip(trunk, stage_of, strict=True)}
    state |= _heads(heads, model.graph, stage_at, variant, name)
    normalisation, size, imagery = _metadata(model, name)
    return OnnxWeights(state, variant, in_channels, normalisation, size, imagery)


def _metadata(model: Any, name: str) -> tuple[str, int | None, dict[str, Any] | None]:
    """The normalisation, input size and imagery section recorded in the file's metadata
    (``official``, None and None where they are absent); ValueError naming the file for values
    that make no sense."""
    metadata = {entry.key: entry.value for entry in model.metadata_props}
    normalisation = metadata.get(NORMALISATION_KEY, "official")
    if normalisation not in NORMALISATIONS:
        raise ValueError(
            f"{name}: its metadata says normalisation {normalisation!r}; known: {NORMALISATIONS}"
        )
    size = metadata.get(INPUT_SIZE_KEY)
    if size is not None and not (size.isdigit() and int(size) > 0):
        raise ValueError(f"{name}: its metadata says input_size {size!r}; expected a positive int")
    return normalisation, None if size is None else int(size), _imagery(metadata, name)


def _imagery(metadata: dict[str, str], name: str) -> dict[str, Any] | None:
    """The ``imagery`` section of the metadata (checked), None without one."""
    text = metadata.get(IMAGERY_KEY)
    if text is None:
        return None
    try:
        section = json.loads(text)
        Imagery.from_config(section)
    except ValueError as err:  # json.JSONDecodeError is a ValueError
        raise ValueError(
            f"{name}: its metadata's imagery entry {text!r} is invalid: {err}"
        ) from None
    return section


def _heads(
    heads: list[GraphConv], graph: Any, stage_at: dict[int, int], variant: str, name: str
) -> dict[str, torch.Tensor]:
    """Our ``side_heads.N`` and ``fusion`` entries from the graph's other convolutions: a side
    conv is placed by the stage whose output it reads (the stage of the trunk convs nearest
    above it), the fusion conv is the 1x1 one. ValueError naming what was found when they are
    not U2Net's six sides and one fusion."""
    sides = side_convs(variant)  # (stage, spec) in our order
    by_stage: dict[int, GraphConv] = {}
    fusions = []
    for conv in heads:
        if conv.weight.shape[2:] == (1, 1):
            fusions.append(conv)
            continue
        above = set(_nearest_convs(conv.data_input, graph, stage_at))
        if len(above) == 1:
            by_stage[above.pop()] = conv
    wanted = sorted(stage for stage, _ in sides)
    if len(heads) != len(sides) + 1 or sorted(by_stage) != wanted or len(fusions) != 1:
        raise ValueError(
            f"{name}: expected {len(sides)} side convolutions reading stages {wanted} (En6, "
            f"De5..De1) and one 1x1 fusion convolution besides the trunk; found "
            f"{len(heads)} convolutions, sides reading stages {sorted(by_stage)}"
        )
    state = {}
    placed = [(f"side_heads.{k}", by_stage[stage], spec) for k, (stage, spec) in enumerate(sides)]
    for prefix, conv, spec in [*placed, ("fusion", fusions[0], fusion_conv(variant))]:
        _check_conv(conv, spec, prefix, name)
        if conv.bias is None:
            raise ValueError(f"{name}: Conv node {conv.name!r} ({prefix}) has no bias")
        state[f"{prefix}.weight"], state[f"{prefix}.bias"] = conv.weight, conv.bias
    return state
