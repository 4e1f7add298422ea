"""Image files with OpenCV: finding them, reading 8-bit RGB images, grey maps and masks (with the
mask rule of :func:`read_mask`), writing atomically."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from utils.io.atomic import write_bytes

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")

# A corrupt or truncated file is reported by the readers below, with its path and what to do;
# OpenCV's own log lines about it ("[ WARN:0@4.8] global grfmt_png.cpp ...", "[ERROR:0@0.0]
# ... Unsupported number of channels") only add noise: every failure of an OpenCV call reaches
# Python anyway, as a None image or a cv2.error.
cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)


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


def _file_bytes(path: str | os.PathLike, expected: str) -> np.ndarray:
    """The bytes of ``path`` (unlike cv2.imread, this handles non-ASCII paths)."""
    try:
        return np.fromfile(path, dtype=np.uint8)
    except OSError as e:
        raise OSError(f"cannot read {path}: {e.strerror or e}; expected {expected}") from e


def _decode_stored(data: np.ndarray, path: str | os.PathLike, expected: str) -> np.ndarray:
    """Decode the file bytes ``data`` as stored: 8- or 16-bit, HxW or HxWx3/4 (BGR, BGRA), no
    EXIF rotation, alpha kept; palette images are expanded to their colours."""
    array = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if array is None:
        if data.size and Path(path).suffix.lower() in (".tif", ".tiff"):
            _tiff_size(path)  # says when the band count is why (e.g. 5-band imagery)
        raise OSError(f"{path} is empty, corrupt or not an image; expected {expected}")
    if array.dtype not in (np.uint8, np.uint16):
        raise OSError(f"{path} has unsupported pixel type {array.dtype}; expected {expected}")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim != 2 and not (array.ndim == 3 and array.shape[2] in (3, 4)):
        raise OSError(f"{path} has unsupported shape {array.shape}; expected {expected}")
    return array


def _to_8_bits(array: np.ndarray) -> np.ndarray:
    """16-bit data scaled to 8 bits, ``round(x / 257)``; 8-bit data unchanged."""
    if array.dtype == np.uint16:
        return ((array.astype(np.uint32) + 128) // 257).astype(np.uint8)
    return array


def _decode(path: str | os.PathLike, expected: str) -> np.ndarray:
    """Decode ``path`` as stored (no EXIF rotation, alpha kept) and scale 16-bit data to 8 bits."""
    return _to_8_bits(_decode_stored(_file_bytes(path, expected), path, expected))


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
            "(select the bands of multi-band imagery with the config's imagery section)"
        )
    return int(shape[0]), int(shape[1])


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(height, width) of an image from its PNG, JPEG or TIFF header when possible (no
    decoding; other formats are decoded). Raises ``OSError`` naming the path.

    The first 4 KiB are read, then up to 64 KiB when the JPEG frame header comes later (e.g.
    after an EXIF thumbnail), so checking many files reads little of each."""
    if Path(path).suffix.lower() in (".tif", ".tiff"):
        return _tiff_size(path)
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
            size = _header_size(head)
            if size is None and len(head) == 4096 and head[:2] == b"\xff\xd8":
                head += f.read(65536 - 4096)
                size = _header_size(head)
    except OSError as e:
        raise OSError(f"cannot read {path}: {e.strerror or e}") from e
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


def _to_grey(array: np.ndarray) -> np.ndarray:
    """An HxW, BGR or BGRA array as HxW grey (``cv2.COLOR_BGR2GRAY``, alpha dropped)."""
    if array.ndim == 2:
        return array
    return cv2.cvtColor(array, cv2.COLOR_BGRA2GRAY if array.shape[2] == 4 else cv2.COLOR_BGR2GRAY)


def read_grey(path: str | os.PathLike) -> np.ndarray:
    """Read any image as HxW uint8 grey, values as stored (for prediction maps; masks are read
    with :func:`read_mask`).

    Colour images (including palette PNGs, expanded to their palette colours) are converted with
    ``cv2.COLOR_BGR2GRAY`` (0.299 R + 0.587 G + 0.114 B); alpha is dropped and 16-bit data is
    scaled to 8 bits. A JPEG is decoded straight to grey by the JPEG decoder (its luma plane,
    ``cv2.IMREAD_GRAYSCALE``), as the reference toolkit reads prediction maps
    (PySODEvalToolkit, ``cv2.imread(path, cv2.IMREAD_GRAYSCALE)``): for a colour JPEG that
    differs from converting its decoded colours by up to a dozen grey levels. EXIF orientation is
    ignored, as for every image here. Raises ``OSError`` naming the path for a missing,
    unreadable or corrupt file.
    """
    expected = "an 8- or 16-bit greyscale (or colour) image"
    data = _file_bytes(path, expected)
    return _decode_grey(data, path, expected)


def _is_jpeg(data: np.ndarray) -> bool:
    """Whether the file bytes ``data`` start like a JPEG (the SOI marker and a segment)."""
    return data[:3].tobytes() == b"\xff\xd8\xff"


def _decode_grey(data: np.ndarray, path: str | os.PathLike, expected: str) -> np.ndarray:
    """The file bytes ``data`` as HxW uint8 grey: a JPEG straight from the decoder (its luma, as
    ``cv2.IMREAD_GRAYSCALE`` reads it: PySODEvalToolkit's reading), other formats decoded then
    converted (:func:`_to_grey`, 16-bit scaled to 8 bits); EXIF orientation ignored."""
    if _is_jpeg(data):
        grey = cv2.imdecode(data, cv2.IMREAD_GRAYSCALE | cv2.IMREAD_IGNORE_ORIENTATION)
        if grey is None:
            raise OSError(f"{path} is empty, corrupt or not an image; expected {expected}")
        return grey
    return _to_grey(_to_8_bits(_decode_stored(data, path, expected)))


def _png_palette(data: np.ndarray) -> np.ndarray | None:
    """The Nx3 RGB palette (``PLTE``) of a palette PNG (colour type 3), else None."""
    if data[:8].tobytes() != b"\x89PNG\r\n\x1a\n" or data[12:16].tobytes() != b"IHDR":
        return None
    if data.size < 26 or data[25] != 3:
        return None
    offset = 8
    while offset + 8 <= data.size:
        length = int.from_bytes(data[offset : offset + 4].tobytes(), "big")
        kind = data[offset + 4 : offset + 8].tobytes()
        if kind == b"PLTE":
            body = data[offset + 8 : offset + 8 + length]
            return body[: body.size // 3 * 3].reshape(-1, 3)
        if kind in (b"IDAT", b"IEND"):
            return None
        offset += 12 + length
    return None


def read_mask_flagged(path: str | os.PathLike) -> tuple[np.ndarray, bool]:
    """Read a mask as :func:`read_mask` does; also return whether it was 0/1-encoded.

    The flag is true when the 0/1 rule of :func:`read_mask` scaled the mask to 0/255 (so an
    all-zero mask is never flagged, and neither is a palette label map).
    """
    expected = "an 8- or 16-bit greyscale (or colour) mask"
    data = _file_bytes(path, expected)
    if _is_jpeg(data):  # as the reference reads it: the decoder's luma
        mask = _decode_grey(data, path, expected)
    else:
        stored = _decode_stored(data, path, expected)
        palette = _png_palette(data)
        if stored.ndim == 3 and palette is not None and (palette != palette[:, :1]).any():
            background = palette[0, ::-1]  # a coloured palette: a label map; BGR, as decoded
            foreground = (stored[:, :, :3] != background).any(axis=2)
            return foreground.astype(np.uint8) * np.uint8(255), False
        if stored.dtype == np.uint16 and stored.max(initial=0) == 1:
            stored = stored.astype(np.uint8)  # 16-bit 0/1: would be 0 after scaling to 8 bits
        mask = _to_grey(_to_8_bits(stored))
    if mask.max(initial=0) == 1:  # values 0 and 1 only
        return mask * np.uint8(255), True
    return mask, False


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """Read a ground-truth mask as HxW uint8 in 0..255 (foreground is bright).

    The mask rule (every SOD mask is read by it: datasets, validation, ``evaluate.py``):

    - the image is read as 8-bit grey like :func:`read_grey` (colour with
      ``cv2.COLOR_BGR2GRAY``, alpha dropped, 16-bit data scaled by 1/257; a JPEG as its
      decoder's luma, as the reference toolkit reads masks), except for the two cases below;
    - 0/1 encoding: a mask whose maximum is 1 (values 0 and 1 only; for 16-bit data, as stored)
      is multiplied by 255; 0/255 and soft 0..255 masks are unchanged;
    - a palette PNG whose palette has a non-grey colour is a label map (VOC style): foreground
      (255) is every pixel whose colour differs from the colour of palette index 0, i.e. any
      non-zero index (unless it repeats that colour); a palette of greys only is read as those
      grey values (as a grey PNG would be), then the 0/1 rule applies.

    Raises ``OSError`` naming the path for a missing, unreadable or corrupt file. See
    :func:`read_mask_flagged` for whether the 0/1 rule applied, :func:`count_01_masks` to count.
    """
    return read_mask_flagged(path)[0]


def count_01_masks(paths: Sequence[str | os.PathLike], limit: int | None = None) -> tuple[int, int]:
    """``(0/1-encoded, checked)``: how many of ``paths`` (at most ``limit`` of them, evenly
    spaced, the first included; all when None) :func:`read_mask` reads with its 0/1 rule.
    Unreadable files are skipped (their error comes when they are used)."""
    if limit is not None and len(paths) > limit:
        paths = [paths[i * len(paths) // limit] for i in range(limit)]
    found = checked = 0
    for path in paths:
        try:
            found += read_mask_flagged(path)[1]
        except OSError:
            continue
        checked += 1
    return found, checked


def write_image(path: str | os.PathLike, array: np.ndarray, quality: int = 95) -> None:
    """Write an HxW grey, HxWx3 RGB or HxWx4 RGBA uint8 ``array`` to ``path`` atomically.

    The format follows the extension (JPEG at ``quality``); the parent folders are created. The
    file is encoded in memory and written to a temporary file that is renamed, so a failure
    never leaves a truncated image, and a file already at ``path`` stays intact until then; the
    file gets the umask's mode (``0644`` under ``022``). Raises ``OSError`` when encoding fails
    and :class:`~utils.io.atomic.UnwritableError` for a full or read-only disk.
    """
    path = Path(path)
    if array.ndim == 3:
        code = cv2.COLOR_RGBA2BGRA if array.shape[2] == 4 else cv2.COLOR_RGB2BGR
        array = cv2.cvtColor(array, code)
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if path.suffix.lower() in (".jpg", ".jpeg") else []
    ok, encoded = cv2.imencode(path.suffix, array, params)
    if not ok:
        raise OSError(f"cannot encode {path} as {path.suffix}")
    write_bytes(path, encoded.tobytes())
