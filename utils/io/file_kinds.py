"""What a file given as PyTorch weights really is, told from its first bytes.

:func:`not_torch_reason` names the format of a file that ``torch.save`` did not write (ONNX, a
zip that is no torch archive, a torch archive cut short, a web page, an image, text, ...) with
advice that works, so that a mixed-up file is reported as what it is instead of as an unpickling
error. ``torch.save`` writes a zip archive (``PK\\x03\\x04``, with a ``<name>/data.pkl`` member)
or, in the legacy format, a pickle (first byte ``0x80``, then the protocol); only such files reach
``torch.load`` (and so the refusal of arbitrary unpickling).
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

HEAD_BYTES = 4096
"""Bytes read to tell the format."""
PICKLE_PROTO = 0x80
ZIP_MAGIC = b"PK\x03\x04"
_REFETCH = "an interrupted download or copy? fetch the file again"
_GIVE_PTH = "give the .pth file written by torch.save"
_IMAGES = {  # magic: name (BMP and WebP are checked apart: their magic is short or split)
    b"\x89PNG\r\n\x1a\n": "PNG",
    b"\xff\xd8\xff": "JPEG",
    b"GIF87a": "GIF",
    b"GIF89a": "GIF",
    b"II*\x00": "TIFF",
    b"MM\x00*": "TIFF",
}
_OTHER_MAGICS = {
    b"\x1f\x8b": "a gzip-compressed file: decompress it (gunzip, or tar -xzf for a .tar.gz) "
    "and give the file inside",
    b"\x89HDF\r\n\x1a\n": "an HDF5 file (Keras / TensorFlow weights?), which PyTorch cannot read",
    b"\x93NUMPY": "a NumPy array file (.npy), not a state dict",
    b"PK\x05\x06": "an empty zip archive",
    b"\xfd7zXZ\x00": "an xz-compressed file: decompress it (unxz, or tar -xJf) and give the file "
    "inside",
    b"\x28\xb5\x2f\xfd": "a zstd-compressed file: decompress it (unzstd) and give the file inside",
    b"7z\xbc\xaf\x27\x1c": "a 7-Zip archive: extract it (7z x) and give the .pth file inside",
    b"%PDF-": "a PDF document, not weights",
}
PICKLE_PROTOCOLS = range(2, 6)
"""Protocols a binary pickle may announce after its ``0x80`` byte (torch.save's legacy format
writes 2)."""
# ModelProto fields after ir_version (field 1, varint): producer_name (2), producer_version (3),
# domain (4), model_version (5), doc_string (6), graph (7), opset_import (8)
_ONNX_NEXT_TAGS = {0x12, 0x1A, 0x22, 0x28, 0x32, 0x3A, 0x42}


def not_torch_reason(path: Path) -> str | None:
    """Why ``path`` is not a ``torch.save`` file ("it is ..." with advice), or None when its first
    bytes look like one (a torch zip archive or a pickle), to be read by ``torch.load``."""
    with open(path, "rb") as f:
        head = f.read(HEAD_BYTES)
    if not head:
        return f"it is empty (0 bytes): {_REFETCH}"
    if head[0] == PICKLE_PROTO and len(head) > 1 and head[1] in PICKLE_PROTOCOLS:
        return None
    if head.startswith(ZIP_MAGIC):
        return _zip_reason(path, head)
    reason = _magic_reason(path, head)
    if reason is not None:
        return reason
    if looks_like_onnx(head):
        return (
            "it is an ONNX model (protobuf): a U2Net one is read as weights (inference.py -m, "
            "arch.args.pretrained, load_pretrained), not as a training checkpoint"
        )
    if _looks_like_safetensors(head):
        return (
            "it is a safetensors file, which is not read here: convert it once with "
            "`from safetensors.torch import load_file; torch.save(load_file(PATH), 'weights.pth')`"
        )
    if not head.strip(b"\x00"):
        return (
            f"its first {len(head)} bytes are all zero (a file preallocated and never written, "
            f"or left so by a crash): {_REFETCH}"
        )
    text = _as_text(head)
    if text is not None:
        return _text_reason(text)
    shown = " ".join(f"{b:02x}" for b in head[:8])
    return (
        f"its first bytes ({shown}) match no known format (a torch.save file starts with 'PK', a "
        f"zip archive, or with byte 0x80, a legacy pickle): a damaged file? {_REFETCH}"
    )


def _magic_reason(path: Path, head: bytes) -> str | None:
    """The reason for a file whose magic bytes name its format (images, archives, arrays)."""
    for magic, name in _IMAGES.items():
        if head.startswith(magic):
            return _image(name)
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return _image("WebP")
    if (
        head[:2] == b"BM"
        and len(head) >= 6
        and int.from_bytes(head[2:6], "little") == (path.stat().st_size)
    ):
        return _image("BMP")
    for magic, reason in _OTHER_MAGICS.items():
        if head.startswith(magic):
            return f"it is {reason}"
    if head[:3] == b"BZh" and head[4:10] == b"\x31\x41\x59\x26\x53\x59":
        return (
            "it is a bzip2-compressed file: decompress it (bunzip2, or tar -xjf) and give the "
            "file inside"
        )
    if head[257:262] == b"ustar":
        return "it is a tar archive: extract it (tar -xf) and give the .pth file inside"
    return None


def _image(name: str) -> str:
    return f"it is a {name} image, not weights (with inference.py: did you swap -m and -i?)"


def _zip_reason(path: Path, head: bytes) -> str | None:
    """None for a readable torch archive (a ``data.pkl`` member, at the top or one folder deep)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError) as err:
        # the first member's name is in the local header: torch's first member is <name>/data.pkl
        size = int.from_bytes(head[26:28], "little")
        first = head[30 : 30 + size].decode("utf-8", "replace")
        kind = "a PyTorch zip archive" if _is_data_pkl(first) else "a zip archive"
        return f"it is {kind} cut short or damaged ({err}): {_REFETCH}"
    if any(_is_data_pkl(name) for name in names):
        return None
    if names and all(name.endswith(".npy") for name in names):
        return "it is a NumPy .npz archive (named arrays), not a state dict written by torch.save"
    shown = ", ".join(names[:5]) + (f" ... ({len(names)} in all)" if len(names) > 5 else "")
    return (
        f"it is a zip archive, but not a PyTorch one: it holds no data.pkl ({shown or 'nothing'}); "
        "if it packs the weights, unzip it and give the .pth file inside"
    )


def _is_data_pkl(name: str) -> bool:
    return name == "data.pkl" or re.fullmatch(r"[^/]+/data\.pkl", name) is not None


def looks_like_onnx(head: bytes) -> bool:
    """Whether the first bytes ``head`` of a file are those of an ONNX ``ModelProto``: it starts
    with ``ir_version`` (tag 0x08, a small varint) followed by another of its fields;
    ``torch.onnx.export`` writes ``08 <ir> 12 07 'pytorch'``."""
    if len(head) < 4 or head[0] != 0x08 or not 1 <= head[1] <= 0x7F:
        return False
    return head[2] in _ONNX_NEXT_TAGS


def is_onnx_file(path: str | Path) -> bool:
    """Whether ``path`` is an ONNX model by its first bytes (False for a file that cannot be
    read: its reader names the problem)."""
    try:
        with open(path, "rb") as f:
            return looks_like_onnx(f.read(HEAD_BYTES))
    except OSError:
        return False


def _looks_like_safetensors(head: bytes) -> bool:
    """safetensors: an 8-byte little-endian header length, then a JSON header ``{"...``."""
    return len(head) >= 10 and head[8:10] == b'{"' and int.from_bytes(head[:8], "little") < 2**30


def _as_text(head: bytes) -> str | None:
    """``head`` as text when it decodes as UTF-8 without control characters, else None."""
    text = head.decode("utf-8", "ignore")  # "ignore": the last character may be cut
    if len(text) < len(head) // 2 or re.search(r"[\x00-\x08\x0e-\x1f\x7f]", text):
        return None
    return text.lstrip("\ufeff \t\r\n")


def _text_reason(text: str) -> str:
    """The reason for a text file (``text``: its start, without leading white space)."""
    if not text:
        return f"it is a text file holding only white space, not weights: {_GIVE_PTH}"
    lower = text[:1024].lower()
    if "<!doctype html" in lower or "<html" in lower:
        return (
            "it is a web page (HTML) saved instead of the file, e.g. a repository page or a "
            "download-confirmation page: download the raw file itself"
        )
    if text.startswith("version https://git-lfs"):
        return (
            "it is a Git LFS pointer (the stub of a file stored in Git LFS): run `git lfs pull` "
            "in its repository, or download the file itself"
        )
    if text[:1] in "{[":
        return f"it is JSON text (a config or metadata file?), not weights: {_GIVE_PTH}"
    first = text.splitlines()[0][:60]
    return f"it is a text file (first line: {first!r}), not weights: {_GIVE_PTH}"
