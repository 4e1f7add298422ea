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
