"""The U2Net variants as data: the stages (RSU height and channels) of the official U2NET and
U2NETP (Qin et al., 2020, table 1; xuebinqin/U-2-Net ``model/u2net.py``)."""

from __future__ import annotations

from typing import NamedTuple


class Stage(NamedTuple):
    """One U2Net stage: RSU height (0 for RSU-4F) and its in/mid/out channels."""

    height: int
    in_ch: int
    mid_ch: int
    out_ch: int


# Encoders En1..En6 and decoders De5..De1 per variant (official U2NET and U2NETP).
VARIANTS: dict[str, tuple[tuple[Stage, ...], tuple[Stage, ...]]] = {
    "full": (
        (
            Stage(7, 3, 32, 64),
            Stage(6, 64, 32, 128),
            Stage(5, 128, 64, 256),
            Stage(4, 256, 128, 512),
            Stage(0, 512, 256, 512),
            Stage(0, 512, 256, 512),
        ),
        (
            Stage(0, 1024, 256, 512),
            Stage(4, 1024, 128, 256),
            Stage(5, 512, 64, 128),
            Stage(6, 256, 32, 64),
            Stage(7, 128, 16, 64),
        ),
    ),
    "lite": (
        (
            Stage(7, 3, 16, 64),
            Stage(6, 64, 16, 64),
            Stage(5, 64, 16, 64),
            Stage(4, 64, 16, 64),
            Stage(0, 64, 16, 64),
            Stage(0, 64, 16, 64),
        ),
        (
            Stage(0, 128, 16, 64),
            Stage(4, 128, 16, 64),
            Stage(5, 128, 16, 64),
            Stage(6, 128, 16, 64),
            Stage(7, 128, 16, 64),
        ),
    ),
}


def check_variant(variant: str) -> None:
    """Raise ValueError naming the valid variants unless ``variant`` is one of them."""
    if variant not in VARIANTS:
        valid = ", ".join(repr(v) for v in VARIANTS)
        raise ValueError(f"unknown U2Net variant {variant!r}; valid variants: {valid}")


class ConvSpec(NamedTuple):
    """One convolution of U2Net: channels, dilation and square kernel (stride 1, one group,
    padding ``dilation * (kernel // 2)`` so the size is kept)."""

    in_ch: int
    out_ch: int
    dilation: int = 1
    kernel: int = 3

    @property
    def padding(self) -> int:
        return self.dilation * (self.kernel // 2)


def block_convs(stage: Stage) -> tuple[ConvSpec, list[ConvSpec], list[ConvSpec]]:
    """The ConvBNReLU convolutions of a stage's residual U-block, in execution order:
    ``conv_in``, the encoders (top-down) and the decoders (deepest first).

    RSU of height ``h`` (official RSU7..RSU4): ``h`` encoders, the last dilated by 2, and
    ``h - 1`` decoders; RSU-4F (height 0): encoders dilated 1, 2, 4, 8, decoders 4, 2, 1. Each
    decoder reads the concatenation of the deeper result and the skip (twice ``mid_ch``).
    """
    i, m, o = stage.in_ch, stage.mid_ch, stage.out_ch
    if stage.height == 0:
        encoders = [ConvSpec(o, m)] + [ConvSpec(m, m, d) for d in (2, 4, 8)]
        decoders = [ConvSpec(2 * m, m, d) for d in (4, 2)] + [ConvSpec(2 * m, o)]
    else:
        h = stage.height
        encoders = [ConvSpec(o, m)] + [ConvSpec(m, m)] * (h - 2) + [ConvSpec(m, m, 2)]
        decoders = [ConvSpec(2 * m, m)] * (h - 2) + [ConvSpec(2 * m, o)]
    return ConvSpec(i, o), encoders, decoders


def stages(variant: str, in_channels: int = 3) -> tuple[tuple[Stage, ...], tuple[Stage, ...]]:
    """The encoder and decoder stages of ``variant`` with ``in_channels`` input channels."""
    check_variant(variant)
    encoders, decoders = VARIANTS[variant]
    return (encoders[0]._replace(in_ch=in_channels), *encoders[1:]), decoders


def trunk_convs(variant: str, in_channels: int = 3) -> list[tuple[str, int, ConvSpec]]:
    """Every ConvBNReLU of the model in execution order: (module prefix in our naming, stage
    index 0-10 (En1..En6, De5..De1), spec)."""
    encoders, decoders = stages(variant, in_channels)
    found = []
    for index, stage in enumerate((*encoders, *decoders)):
        group = "encoders" if index < len(encoders) else "decoders"
        head = f"{group}.{index if index < len(encoders) else index - len(encoders)}"
        conv_in, inner_encoders, inner_decoders = block_convs(stage)
        found.append((f"{head}.conv_in", index, conv_in))
        found += [(f"{head}.encoders.{k}", index, s) for k, s in enumerate(inner_encoders)]
        found += [(f"{head}.decoders.{k}", index, s) for k, s in enumerate(inner_decoders)]
    return found


def side_convs(variant: str) -> list[tuple[int, ConvSpec]]:
    """The side heads in the order they are computed (En6, De5, ..., De1): (stage index whose
    output they read, spec), 3x3 convolutions to one channel."""
    encoders, decoders = stages(variant)
    last = len(encoders) - 1
    return [(last + k, ConvSpec(s.out_ch, 1)) for k, s in enumerate((encoders[-1], *decoders))]


def fusion_conv(variant: str) -> ConvSpec:
    """The 1x1 convolution that fuses the side maps into the output."""
    return ConvSpec(len(side_convs(variant)), 1, kernel=1)
