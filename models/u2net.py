"""U2Net (Qin et al., 2020): nested residual U-blocks for salient object detection.

Structure and channel counts follow the official model (xuebinqin/U-2-Net, ``U2NET`` and
``U2NETP``); convolutions followed by BatchNorm carry no bias, and every resize goes to the size
of the tensor it is joined with, so any input size works.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from base.base_model import BaseModel
from models.onnx_weights import ONNX
from models.variants import ConvSpec, Stage, block_convs, fusion_conv, side_convs, stages
from models.weight_formats import PretrainedWeights, read_pretrained
from utils.io.checkpoint import check_state_dict


def _resize(x: torch.Tensor, size: torch.Size | tuple[int, int]) -> torch.Tensor:
    """Bilinear resize (align_corners=False) to ``size``; ``x`` itself if it already has it."""
    if x.shape[-2:] == size:
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def _pool(x: torch.Tensor) -> torch.Tensor:
    """2x max-pool; ``ceil_mode`` keeps odd borders."""
    return F.max_pool2d(x, kernel_size=2, stride=2, ceil_mode=True)


class ConvBNReLU(nn.Sequential):
    """Convolution (no bias; size kept), BatchNorm and ReLU."""

    def __init__(self, spec: ConvSpec) -> None:
        super().__init__()
        self.conv = conv2d(spec, bias=False)
        self.bn = nn.BatchNorm2d(spec.out_ch)
        self.relu = nn.ReLU(inplace=True)


def conv2d(spec: ConvSpec, bias: bool = True) -> nn.Conv2d:
    """The convolution ``spec`` describes."""
    return nn.Conv2d(
        spec.in_ch,
        spec.out_ch,
        spec.kernel,
        padding=spec.padding,
        dilation=spec.dilation,
        bias=bias,
    )


class _ResidualU(nn.Module):
    """Shared forward of RSU and RSU4F: U-shaped encoder/decoder plus a residual from ``conv_in``.

    ``encoders`` run top-down (the last one, the bottom, at the resolution of the one before it);
    ``decoders`` run bottom-up, each on the concatenation of the deeper result and the skip.
    """

    downsample: bool

    conv_in: ConvBNReLU
    encoders: nn.ModuleList
    decoders: nn.ModuleList

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_in = self.conv_in(x)
        h, skips = x_in, []
        bottom = len(self.encoders) - 1
        for i, enc in enumerate(self.encoders):
            if self.downsample and 0 < i < bottom:
                h = _pool(h)
            h = enc(h)
            skips.append(h)
        skips.pop()  # the bottom is not a skip
        for dec in self.decoders:
            skip = skips.pop()
            h = dec(torch.cat((_resize(h, skip.shape[-2:]), skip), dim=1))
        return h + x_in


class RSU(_ResidualU):
    """Residual U-block of height ``height`` (official RSU7..RSU4).

    ``encoders``: ``height`` convs, 2x max-pools between the first ``height - 1`` of them, the
    last one dilated by 2; ``decoders``: ``height - 1`` convs, deepest first.
    """

    downsample = True

    def __init__(self, height: int, in_ch: int, mid_ch: int, out_ch: int) -> None:
        super().__init__()
        if height < 2:
            raise ValueError(f"RSU height must be at least 2, got {height}")
        self.height = height
        _build_convs(self, Stage(height, in_ch, mid_ch, out_ch))


class RSU4F(_ResidualU):
    """Residual U-block of height 4 with dilations 1, 2, 4, 8 instead of pooling."""

    downsample = False

    def __init__(self, in_ch: int, mid_ch: int, out_ch: int) -> None:
        super().__init__()
        _build_convs(self, Stage(0, in_ch, mid_ch, out_ch))


def _build_convs(block: _ResidualU, stage: Stage) -> None:
    """Give ``block`` the ConvBNReLU layers :func:`models.variants.block_convs` lists."""
    conv_in, encoders, decoders = block_convs(stage)
    block.conv_in = ConvBNReLU(conv_in)
    block.encoders = nn.ModuleList(ConvBNReLU(s) for s in encoders)
    block.decoders = nn.ModuleList(ConvBNReLU(s) for s in decoders)


def build_stage(stage: Stage) -> RSU | RSU4F:
    """The block of a stage: RSU-4F for height 0, else an RSU of that height."""
    if stage.height == 0:
        return RSU4F(stage.in_ch, stage.mid_ch, stage.out_ch)
    return RSU(stage.height, stage.in_ch, stage.mid_ch, stage.out_ch)


class U2Net(BaseModel):
    """U2Net salient object detector; ``variant`` is "full" (U2NET) or "lite" (U2NETP).

    Training mode returns seven logit maps at the input size: the fused map, then the side maps
    of De1, De2, De3, De4, De5, En6 (official d0, d1..d6). Eval mode returns ``sigmoid(fused)``.
    ``pretrained``: a weights file to start from (official, config-driven port, ours or an ONNX
    graph; see :mod:`models.weight_formats`), which must hold this variant and ``in_channels``
    input channels, or 3 when ``in_channels`` is more (the first conv is then widened, the extra
    channels starting from the mean of the RGB filters:
    :func:`models.weight_formats.widen_first_conv`); ``pretrained_from`` then says which file and
    format they came from (and any widening) and ``pretrained_normalisation`` how they expect
    their inputs normalised (both None without ``pretrained``).

    ``freeze_bn_stats``: BatchNorm normalises with its running statistics in training too, and
    never updates them. Weights read from an ONNX graph have their BatchNorm folded into the
    convolutions (statistics set to an identity, see :mod:`models.onnx_weights`): fine-tuning
    them with batch statistics would rescale every layer, so ``pretrained`` ONNX weights need
    ``freeze_bn_stats`` true (ValueError otherwise, saying so).
    """

    def __init__(
        self,
        variant: str = "full",
        in_channels: int = 3,
        pretrained: str | None = None,
        freeze_bn_stats: bool = False,
    ) -> None:
        super().__init__()
        self.variant = variant
        self.freeze_bn_stats = freeze_bn_stats
        enc_stages, dec_stages = stages(variant, in_channels)
        self.encoders = nn.ModuleList(build_stage(s) for s in enc_stages)
        self.decoders = nn.ModuleList(build_stage(s) for s in dec_stages)
        # Side heads in the order they are computed: En6, De5, De4, De3, De2, De1.
        self.side_heads = nn.ModuleList(conv2d(spec) for _, spec in side_convs(variant))
        self.fusion = conv2d(fusion_conv(variant))
        self.pretrained_from: str | None = None
        self.pretrained_normalisation: str | None = None
        if pretrained is not None:
            weights = read_pretrained(pretrained, variant, in_channels)
            if weights.source == ONNX and not freeze_bn_stats:
                raise ValueError(
                    f"{pretrained} is an ONNX graph: its BatchNorm layers are folded into the "
                    "convolutions, so training needs arch.args.freeze_bn_stats true (BatchNorm "
                    "keeps the folded identity statistics instead of batch statistics)"
                )
            self.load_weights(weights)
            adapted = f"; {weights.adapted}" if weights.adapted else ""
            self.pretrained_from = f"{pretrained} ({weights.source} weights{adapted})"
            self.pretrained_normalisation = weights.normalisation

    def summary(self) -> str:
        """:meth:`BaseModel.summary`, and the weights file it started from, if any."""
        start = f"; started from {self.pretrained_from}" if self.pretrained_from else ""
        return f"{super().summary()}{start}"

    def train(self, mode: bool = True) -> U2Net:
        """Training or eval mode; with ``freeze_bn_stats`` every BatchNorm stays in eval mode."""
        super().train(mode)
        if self.freeze_bn_stats:
            for module in self.modules():
                if isinstance(module, nn.BatchNorm2d):
                    module.eval()
        return self

    @classmethod
    def from_weights(cls, weights: PretrainedWeights) -> U2Net:
        """The U2Net that ``weights`` fit, holding them, in eval mode on the CPU; ValueError
        (naming the file and the keys) when they do not fit."""
        with torch.device("meta"):  # no random initialisation: every tensor comes from the file
            model = cls(weights.variant, weights.in_channels)
        model.load_weights(weights, assign=True)
        return model.eval()

    def load_weights(self, weights: PretrainedWeights, assign: bool = False) -> None:
        """Copy ``weights`` into this model (or, with ``assign``, take their tensors) after
        checking that their keys and shapes fit it (ValueError naming the file otherwise)."""
        what = weights.mismatch(f"U2Net(variant={self.variant!r})")
        check_state_dict(self.state_dict(), weights.state_dict, what)
        self.load_state_dict(weights.state_dict, assign=assign)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        size = x.shape[-2:]
        skips, h = [], x
        for i, enc in enumerate(self.encoders):
            h = enc(_pool(h) if i else h)
            skips.append(h)
        skips.pop()  # En6 is the bottom, not a skip
        sides = [_resize(self.side_heads[0](h), size)]
        for i, dec in enumerate(self.decoders, start=1):
            skip = skips.pop()
            h = dec(torch.cat((_resize(h, skip.shape[-2:]), skip), dim=1))
            sides.append(_resize(self.side_heads[i](h), size))
        sides.reverse()  # De1, De2, De3, De4, De5, En6
        fused = self.fusion(torch.cat(sides, dim=1))
        if self.training:
            return (fused, *sides)
        return torch.sigmoid(fused)


def load_pretrained(path: str | Path, variant: str | None = None) -> U2Net:
    """A U2Net in eval mode on the CPU with the weights of ``path`` (any format that
    :func:`models.weight_formats.read_pretrained` reads).

    The variant (and the number of input channels) is read from the tensor shapes; a given
    ``variant`` must match it (ValueError otherwise).
    """
    return U2Net.from_weights(read_pretrained(path, variant))
