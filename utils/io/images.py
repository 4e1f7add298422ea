"""Image files with OpenCV: finding them, reading 8-bit RGB images and masks, writing atomically."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from utils.io.atomic import atomic_write

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class ImageNameClash(ValueError):
    """Two image files of one folder differ only in their extension."""


def find_images(
    folder: str | os.PathLike,
    skip: Path | None = None,
    *,
    recursive: bool = True,
    what: str = "image",
) -> dict[str, Path]:
    """``{relative path without extension (posix): path}`` of the images in ``folder``.

    The search is sorted and goes into the sub-folders unless ``recursive`` is false (then the
    keys are the file names without extension, e.g. for pairing images and masks by name);
    extensions (:data:`IMAGE_EXTENSIONS`) match in any case; names starting with ``.`` are
    skipped, and so is the folder ``skip`` (a resolved path), e.g. an output folder inside the
    input folder. Raises ``FileNotFoundError`` naming the folder (as the ``what`` folder) when it
    does not exist, and :class:`ImageNameClash` naming it when two files differ only in their
    extension (``a/x.jpg`` and ``a/x.png``), as their outputs or pairings would collide.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{what} folder {folder} does not exist")
    found: dict[str, list[Path]] = {}
    for root, dirs, names in os.walk(folder):
        root_path = Path(root)
        dirs[:] = sorted(
            d
            for d in dirs
            if recursive
            and not d.startswith(".")
            and (skip is None or (root_path / d).resolve() != skip)
        )
        for name in sorted(names):
            if name.startswith(".") or Path(name).suffix.lower() not in IMAGE_EXTENSIONS:
                continue
            path = root_path / name
            found.setdefault(path.relative_to(folder).with_suffix("").as_posix(), []).append(path)
    _refuse_clashes(folder, found)
    return {key: paths[0] for key, paths in found.items()}


def _refuse_clashes(folder: Path, found: dict[str, list[Path]]) -> None:
    """Raise :class:`ImageNameClash` if a key of ``found`` has several files."""
    clashes = sorted(key for key, paths in found.items() if len(paths) > 1)
    if clashes:
        examples = "; ".join(
            ", ".join(sorted(p.relative_to(folder).as_posix() for p in found[key]))
            for key in clashes[:3]
        )
        raise ImageNameClash(
            f"{folder}: {len(clashes)} name(s) occur with several extensions, so their outputs or "
            f"pairings would collide: {examples}"
        )


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


_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _header_size(data: bytes) -> tuple[int, int] | None:
    """(height, width) from a PNG or JPEG header, or None for other formats."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
        return int.from_bytes(data[20:24], "big"), int.from_bytes(data[16:20], "big")
    if data[:2] != b"\xff\xd8":
        return None
    offset = 2
    while offset + 9 <= len(data) and data[offset] == 0xFF:
        marker = data[offset + 1]
        length = int.from_bytes(data[offset + 2 : offset + 4], "big")
        if marker in _JPEG_SOF:
            return (
                int.from_bytes(data[offset + 5 : offset + 7], "big"),
                int.from_bytes(data[offset + 7 : offset + 9], "big"),
            )
        offset += 2 + length
    return None


def _tiff_size(path: str | os.PathLike) -> tuple[int, int]:
    """(height, width) from a TIFF header; more bands than RGBA are refused here, early."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            bands, shape = page.samplesperpixel, page.shape
    except (tifffile.TiffFileError, OSError, ValueError) as err:
        raise OSError(f"{path} is not a readable TIFF: {err}") from err
    if bands not in (1, 3, 4):
        raise OSError(
            f"{path} has {bands} bands; supported are 8- or 16-bit grey, RGB or RGBA images "
            "(export the RGB bands of multi-band imagery first)"
        )
    return int(shape[0]), int(shape[1])


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(height, width) of an image from its PNG, JPEG or TIFF header when possible (no
    decoding; other formats are decoded). Raises ``OSError`` naming the path."""
    if Path(path).suffix.lower() in (".tif", ".tiff"):
        return _tiff_size(path)
    try:
        with open(path, "rb") as f:
            head = f.read(65536)
    except OSError as e:
        raise OSError(f"cannot read {path}: {e.strerror or e}") from e
    size = _header_size(head)
    return size if size is not None else read_image(path).shape[:2]


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


def write_image(path: str | os.PathLike, array: np.ndarray, quality: int = 95) -> None:
    """Write an HxW grey, HxWx3 RGB or HxWx4 RGBA uint8 ``array`` to ``path`` atomically.

    The format follows the extension (JPEG at ``quality``); the parent folders are created. The
    file is encoded in memory and written to a temporary file that is renamed, so a failure
    never leaves a truncated image, and a file already at ``path`` stays intact until then.
    """
    path = Path(path)
    if array.ndim == 3:
        code = cv2.COLOR_RGBA2BGRA if array.shape[2] == 4 else cv2.COLOR_RGB2BGR
        array = cv2.cvtColor(array, code)
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if path.suffix.lower() in (".jpg", ".jpeg") else []
    ok, encoded = cv2.imencode(path.suffix, array, params)
    if not ok:
        raise OSError(f"cannot encode {path} as {path.suffix}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as f:
        f.write(encoded.tobytes())
