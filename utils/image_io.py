"""Fast image and mask reading with OpenCV: 8-bit RGB images and 8-bit greyscale masks."""

from __future__ import annotations

import os

import cv2
import numpy as np

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def _decode(path: str | os.PathLike, expected: str) -> np.ndarray:
    """Decode ``path`` as stored (no EXIF rotation, alpha kept) and scale 16-bit data to 8 bits."""
    try:
        data = np.fromfile(path, dtype=np.uint8)  # unlike cv2.imread, handles non-ASCII paths
    except OSError as e:
        raise OSError(f"cannot read {path}: {e.strerror or e}; expected {expected}") from e
    array = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if array is None:
        raise OSError(f"{path} is empty, corrupt or not an image; expected {expected}")
    if array.dtype == np.uint16:
        array = ((array.astype(np.uint32) + 128) // 257).astype(np.uint8)  # round(x / 257)
    elif array.dtype != np.uint8:
        raise OSError(f"{path} has unsupported pixel type {array.dtype}; expected {expected}")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim != 2 and not (array.ndim == 3 and array.shape[2] in (3, 4)):
        raise OSError(f"{path} has unsupported shape {array.shape}; expected {expected}")
    return array


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image as HxWx3 uint8 RGB.

    Greyscale is replicated to three channels, alpha is dropped (not composited), 16-bit data is
    scaled to 8 bits and palette images are expanded to their colours. EXIF orientation is
    ignored, like for masks, so an image and its mask stay aligned. Raises ``OSError`` naming
    the path for a missing, unreadable or corrupt file.
    """
    array = _decode(path, "an 8- or 16-bit greyscale, RGB or RGBA image")
    if array.ndim == 2:
        return cv2.cvtColor(array, cv2.COLOR_GRAY2RGB)
    return cv2.cvtColor(array, cv2.COLOR_BGRA2RGB if array.shape[2] == 4 else cv2.COLOR_BGR2RGB)


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """Read a mask as HxW uint8 in 0..255 (foreground is bright).

    Colour masks (including palette PNGs, which are expanded to their palette colours) are
    converted with ``cv2.COLOR_BGR2GRAY`` (0.299 R + 0.587 G + 0.114 B), so white stays 255 but a
    dark palette colour becomes a dark grey; alpha is dropped and 16-bit data is scaled to 8 bits.
    Raises ``OSError`` naming the path for a missing, unreadable or corrupt file.
    """
    array = _decode(path, "an 8- or 16-bit greyscale (or colour) mask")
    if array.ndim == 2:
        return array
    return cv2.cvtColor(array, cv2.COLOR_BGRA2GRAY if array.shape[2] == 4 else cv2.COLOR_BGR2GRAY)
