"""Band selection and scaling of multi-band and high-bit-depth rasters to the 8-bit model input:
the config's ``imagery`` section, defined once for the training windows and for inference.

Without an ``imagery`` section images are read as 8-bit RGB (:func:`utils.io.images.read_image`).
With one, each raster is read with rasterio (:mod:`utils.io.rasters`) and:

- ``bands``: the raster's bands the model sees, in that order, numbered from 1 as GDAL and
  rasterio number them (``[1, 2, 3]``: the first three; ``[4, 1, 2]``: NIR, red, green of an RGBN
  raster). The model's ``arch.args.in_channels`` is their number.
- ``scale``: how a band's values ``x`` become 8-bit values, ``round(255 * clip((x - low) / (high -
  low), 0, 1))`` with, per band:

  - ``"divide"``: ``low = 0``, ``high = divisor``: the value that becomes 255 (default: the
    largest value of the data type, e.g. 65535 for uint16, which is the ``round(x / 257)`` of
    8-bit RGB reading; 2047 for 11-bit, 4095 for 12-bit data, 10000 for Sentinel-2 reflectance);
  - ``"fixed"``: ``low = min``, ``high = max`` (numbers, or one per selected band);
  - ``"percentile"``: ``low`` and ``high`` are the ``percentiles`` (default 2 and 98) of the
    band's values over the pixels of the whole raster file that hold data (numpy's default
    linear interpolation, ``np.percentile``), so every training window of a tile and the sliding
    prediction of it share one scaling. 8- and 16-bit integer data only (they are computed
    exactly from histograms, in bounded memory).

  A band whose ``high`` is not above ``low`` (a constant band) is 255 above ``low``, else 0.
  Pixels without data (nodata in every band: GDAL's dataset mask) are 0 in every band.

8-bit results keep the pipeline's one pixel type (resizing, padding, the official
normalisation's gain and the predictor's batches work on uint8), at the precision of any 8-bit
RGB input; the scaling decides which values those 256 levels cover.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

SCALES = ("divide", "fixed", "percentile")
DEFAULT_PERCENTILES = (2.0, 98.0)
IMAGERY_KEYS = ("bands", "scale", "divisor", "min", "max", "percentiles")
HISTOGRAM_DTYPES = ("uint8", "int8", "uint16", "int16")
"""Data types whose percentiles are computed from exact histograms."""


def _numbers(key: str, value: Any, channels: int) -> tuple[float, ...]:
    """``value`` (a number or one per band) as ``channels`` floats; ValueError naming ``key``."""
    items = value if isinstance(value, list | tuple) else [value] * channels
    if len(items) != channels or not all(_is_number(v) for v in items):
        raise ValueError(
            f"'imagery.{key}' must be a number or a list of {channels} numbers (one per band of "
            f"imagery.bands), got {value!r}"
        )
    return tuple(float(v) for v in items)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and np.isfinite(value)


@dataclass(frozen=True)
class Imagery:
    """The ``imagery`` section: which bands, how scaled (see the module docstring).

    ``low`` / ``high``: the per-band limits of ``fixed`` (None otherwise); ``divisor``: the
    value that becomes 255 with ``divide`` (None: the data type's largest value).
    """

    bands: tuple[int, ...]
    scale: str = "divide"
    divisor: float | None = None
    low: tuple[float, ...] | None = None
    high: tuple[float, ...] | None = None
    percentiles: tuple[float, float] = DEFAULT_PERCENTILES

    @property
    def channels(self) -> int:
        """How many channels the model sees: one per selected band."""
        return len(self.bands)

    @classmethod
    def from_config(cls, section: Mapping[str, Any] | None) -> Imagery | None:
        """The :class:`Imagery` of a config's ``imagery`` section (None for null). Raises
        ValueError naming the key (``imagery.bands`` ...) and what it must be."""
        if section is None:
            return None
        if not isinstance(section, Mapping):
            raise ValueError(f"'imagery' must be an object or null, got {section!r}")
        unknown = sorted(set(section) - set(IMAGERY_KEYS))
        if unknown:
            raise ValueError(
                f"unknown config key 'imagery.{unknown[0]}'; valid keys here: "
                f"{', '.join(sorted(IMAGERY_KEYS))}"
            )
        bands = section.get("bands")
        if (
            not isinstance(bands, list | tuple)
            or not bands
            or not all(isinstance(b, int) and not isinstance(b, bool) and b >= 1 for b in bands)
        ):
            raise ValueError(
                f"'imagery.bands' must be a list of band numbers from 1 (e.g. [1, 2, 3] or "
                f"[4, 1, 2]), got {bands!r}"
            )
        scale = section.get("scale", "divide")
        if scale not in SCALES:
            valid = ", ".join(repr(s) for s in SCALES)
            raise ValueError(f"'imagery.scale' must be one of {valid}, got {scale!r}")
        return cls(tuple(bands), scale, *_scale_settings(section, scale, len(bands)))

    def describe(self) -> str:
        """One line for logs, e.g. ``bands [4, 1, 2], 2-98% percentiles of each tile``."""
        if self.scale == "percentile":
            low, high = (f"{p:g}" for p in self.percentiles)
            how = f"{low}-{high}% percentiles of each tile"
        elif self.scale == "fixed":
            how = f"fixed min {list(self.low or ())} max {list(self.high or ())}"
        else:
            how = (
                f"divided by {'the type maximum' if self.divisor is None else f'{self.divisor:g}'}"
            )
        return f"bands {list(self.bands)}, {how}"

    def to_config(self) -> dict[str, Any]:
        """The config section of this imagery (what :meth:`from_config` reads back)."""
        section: dict[str, Any] = {"bands": list(self.bands), "scale": self.scale}
        if self.scale == "divide" and self.divisor is not None:
            section["divisor"] = self.divisor
        if self.scale == "fixed":
            section |= {"min": list(self.low or ()), "max": list(self.high or ())}
        if self.scale == "percentile":
            section["percentiles"] = list(self.percentiles)
        return section

    def fixed_limits(self, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray] | None:
        """Per-band ``(low, high)`` float64 arrays that do not depend on the pixels (``divide``
        and ``fixed``), None for ``percentile``. ValueError when ``divide`` has no divisor for
        a data type without a largest value (floats)."""
        if self.scale == "percentile":
            return None
        if self.scale == "fixed":
            return np.array(self.low, np.float64), np.array(self.high, np.float64)
        divisor = self.divisor
        if divisor is None:
            if not np.issubdtype(dtype, np.integer):
                raise ValueError(
                    f"{dtype} data has no largest value to divide by: set 'imagery.divisor' (the "
                    "value that becomes 255) or another 'imagery.scale'"
                )
            divisor = float(np.iinfo(dtype).max)
        return np.zeros(self.channels), np.full(self.channels, float(divisor))


def _scale_settings(
    section: Mapping[str, Any], scale: str, channels: int
) -> tuple[float | None, tuple[float, ...] | None, tuple[float, ...] | None, tuple[float, float]]:
    """``(divisor, low, high, percentiles)`` of ``section``; keys of another scale are refused."""
    wrong = {
        "divide": ("min", "max", "percentiles"),
        "fixed": ("divisor", "percentiles"),
        "percentile": ("divisor", "min", "max"),
    }[scale]
    for key in wrong:
        if key in section:
            raise ValueError(f"'imagery.{key}' does not apply to imagery.scale {scale!r}")
    divisor = section.get("divisor")
    if divisor is not None and (not _is_number(divisor) or divisor <= 0):
        raise ValueError(f"'imagery.divisor' must be a positive number, got {divisor!r}")
    low = high = None
    if scale == "fixed":
        if "min" not in section or "max" not in section:
            raise ValueError("imagery.scale 'fixed' needs 'imagery.min' and 'imagery.max'")
        low = _numbers("min", section["min"], channels)
        high = _numbers("max", section["max"], channels)
        if any(h <= lo for lo, h in zip(low, high, strict=True)):
            raise ValueError(f"'imagery.max' must be above 'imagery.min', got {low} and {high}")
    percentiles = section.get("percentiles", list(DEFAULT_PERCENTILES))
    if (
        not isinstance(percentiles, list | tuple)
        or len(percentiles) != 2
        or not all(_is_number(p) for p in percentiles)
        or not 0 <= percentiles[0] < percentiles[1] <= 100
    ):
        raise ValueError(
            f"'imagery.percentiles' must be [low, high] with 0 <= low < high <= 100, got "
            f"{percentiles!r}"
        )
    return (
        None if divisor is None else float(divisor),
        low,
        high,
        (float(percentiles[0]), float(percentiles[1])),
    )


def scale_to_8_bits(
    pixels: np.ndarray, low: np.ndarray, high: np.ndarray, valid: np.ndarray | None = None
) -> np.ndarray:
    """``round(255 * clip((x - low) / (high - low), 0, 1))`` of the HxWxC ``pixels`` (any real
    dtype) with the per-band float64 ``low`` / ``high`` (C), as HxWxC uint8; a band with
    ``high <= low`` is 255 above ``low``, else 0; a NaN value is 0, and so is every band where the
    HxW bool ``valid`` is false.

    Computed in float32 (rounding half to even); for uint16 divided by 65535 that is exactly
    ``round(x / 257)``, the 8-bit reading of :func:`utils.io.images.read_image`."""
    span = high - low
    gain = np.where(span > 0, 255.0 / np.where(span > 0, span, 1), 0.0).astype(np.float32)
    out = pixels.astype(np.float32) - low.astype(np.float32)
    out *= gain
    constant = span <= 0
    if constant.any():
        out[..., constant] = np.where(pixels[..., constant] > low[constant], 255, 0)
    np.rint(out, out=out)
    np.clip(out, 0, 255, out=out)
    np.nan_to_num(out, copy=False, nan=0.0)  # NaN (float data's nodata) becomes 0
    result = out.astype(np.uint8)
    if valid is not None:
        result[~valid] = 0
    return result


def lookup_tables(dtype: np.dtype, low: np.ndarray, high: np.ndarray) -> np.ndarray | None:
    """C x L uint8 tables of the scaling of 8- and 16-bit integer data (a dtype of
    :data:`HISTOGRAM_DTYPES`; L = 256 or 65536): entry ``v - smallest`` of row ``c`` is
    :func:`scale_to_8_bits` of the value ``v`` in band ``c``, so :func:`apply_tables` gives the
    same bytes in one lookup per pixel. None for other data types."""
    dtype = np.dtype(dtype)
    if dtype.name not in HISTOGRAM_DTYPES:
        return None
    info = np.iinfo(dtype)
    values = np.arange(int(info.min), int(info.max) + 1).astype(dtype)
    every = np.repeat(values[None, :, None], len(low), axis=2)  # 1 x L x C
    return np.ascontiguousarray(scale_to_8_bits(every, low, high)[0].T)


def apply_tables(tables: np.ndarray, bands: np.ndarray) -> np.ndarray:
    """The C x h x w uint8 scaling of the C x h x w integer ``bands`` by the ``tables`` of
    :func:`lookup_tables` for their dtype."""
    smallest = int(np.iinfo(bands.dtype).min)
    out = np.empty(bands.shape, np.uint8)
    for c in range(bands.shape[0]):
        index = bands[c] if smallest == 0 else bands[c].astype(np.int32) - smallest
        np.take(tables[c], index, out=out[c])
    return out


def band_histograms(bands: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """C x L int64 histograms of the C x H x W integer ``bands`` (band-sequential, as rasterio
    reads them; a dtype of :data:`HISTOGRAM_DTYPES`; L = 256 or 65536 levels, from the type's
    smallest value), counting the pixels where ``valid`` (HxW bool) is true, or all. Sums of them
    over the parts of a raster give the raster's histograms (see :func:`histogram_percentiles`)."""
    info = np.iinfo(bands.dtype)
    levels = int(info.max) - int(info.min) + 1
    keep = None if valid is None else valid.reshape(-1)
    counts = []
    for band in bands:
        values = band.reshape(-1) if keep is None else band.reshape(-1)[keep]
        index = values if info.min == 0 else values.astype(np.int64) - int(info.min)
        counts.append(np.bincount(index, minlength=levels))
    return np.stack(counts)


def histogram_percentiles(
    histograms: np.ndarray, percentiles: Sequence[float], smallest: int
) -> np.ndarray:
    """C x P float64: the ``percentiles`` (0..100) of each band's values given its histogram
    (C x L counts of the values ``smallest``, ``smallest + 1``, ...), as ``np.percentile`` with
    its default linear interpolation computes them on the values themselves: rank ``q / 100 * (n
    - 1)`` of the sorted values, interpolated between its two neighbours. A band without counted
    values gives 0."""
    out = np.zeros((histograms.shape[0], len(percentiles)))
    for c, counts in enumerate(histograms):
        cumulative = np.cumsum(counts)
        n = int(cumulative[-1]) if len(cumulative) else 0
        if n == 0:
            continue
        for p, q in enumerate(percentiles):
            rank = q / 100 * (n - 1)
            below = int(np.floor(rank))
            lower = np.searchsorted(cumulative, below, side="right")
            upper = np.searchsorted(cumulative, min(below + 1, n - 1), side="right")
            out[c, p] = smallest + lower + (upper - lower) * (rank - below)
    return out
