"""Atomic writes that fail: an ONNX export that fails (full disk, tolerance check) keeps the
previous file; full and read-only disks give one line naming the file, folder and free space.
And a file given as weights that is not (the ONNX export among others) is named for what it is."""

from __future__ import annotations

import bz2
import errno
import hashlib
import lzma
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from models import U2Net
from tests.models.test_export_onnx import load_tool
from utils.io import atomic
from utils.io.atomic import (
    DiskFullError,
    ReadOnlyFileSystemError,
    UnwritableError,
    atomic_write,
    write_text,
)
from utils.io.checkpoint import load_checkpoint, save_checkpoint
from utils.io.file_kinds import not_torch_reason

onnx = pytest.importorskip("onnx", reason="onnx (requirements-dev.txt) reads the exported file")
pytest.importorskip("onnxruntime", reason="onnxruntime (requirements-dev.txt) checks the export")

TORCH_WRITER_ERROR = "[enforce fail at inline_container.cc:672] . unexpected pos 4864 vs 4752"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("run") / "checkpoint-epoch1.pth"
    save_checkpoint({"arch": "U2Net", "epoch": 1, "state_dict": U2Net("lite").state_dict()}, path)
    return path


@pytest.fixture(scope="module")
def good_export(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A good static export of ``checkpoint``, written under the umask 022."""
    out = tmp_path_factory.mktemp("export") / "model.onnx"
    umask = os.umask(0o022)
    try:
        assert load_tool().main(["-m", str(checkpoint), "-o", str(out), "--size", "64"]) == 0
    finally:
        os.umask(umask)
    return out


@pytest.fixture
def previous(good_export: Path, tmp_path: Path) -> tuple[Path, str]:
    """A copy of the good export, ``model.onnx`` in its own folder, and its SHA-256."""
    out = tmp_path / "exports" / "model.onnx"
    out.parent.mkdir()
    out.write_bytes(good_export.read_bytes())
    return out, digest(out)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_intact(out: Path, sha: str) -> None:
    """``out`` has its old bytes, is a readable ONNX model, and is alone in its folder."""
    assert digest(out) == sha
    onnx.checker.check_model(onnx.load(str(out)))
    assert [p.name for p in out.parent.iterdir()] == [out.name]


def assert_one_line(err: BaseException, path: Path) -> str:
    message = str(err)
    assert "\n" not in message and "Errno" not in message
    assert path.name in message and str(path.parent) in message and " free" in message
    return message


def half_written_then(error: BaseException):
    """An exporter that writes the start of a file, then fails with ``error``."""

    def export(model, path, *args, **kwargs):
        Path(path).write_bytes(b"\x08\x08\x12\x07pytorch" + bytes(1000))
        raise error

    return export


def test_export_into_a_full_disk_keeps_the_previous_file(previous, checkpoint, monkeypatch):
    out, sha = previous
    tool = load_tool()
    monkeypatch.setattr(tool, "export", half_written_then(OSError(errno.ENOSPC, "No space")))
    with pytest.raises(DiskFullError) as caught:
        tool.main(["-m", str(checkpoint), "-o", str(out), "--size", "64"])
    assert caught.value.errno == errno.ENOSPC
    assert "no space left" in assert_one_line(caught.value, out)
    assert_intact(out, sha)


def test_export_whose_writer_error_hides_enospc_is_a_full_disk(previous, checkpoint, monkeypatch):
    """A writer error that chains no ENOSPC is a full disk when the disk is found full."""
    out, sha = previous
    tool = load_tool()
    monkeypatch.setattr(tool, "export", half_written_then(RuntimeError(TORCH_WRITER_ERROR)))
    monkeypatch.setattr(atomic, "_free_bytes", lambda folder: 0)
    with pytest.raises(DiskFullError, match=r"model\.onnx \(0 B free, more than 1\.0 kB"):
        tool.main(["-m", str(checkpoint), "-o", str(out), "--size", "64"])
    assert_intact(out, sha)


def test_export_failing_its_tolerance_check_keeps_the_previous_file(
    previous, checkpoint, monkeypatch, capsys
):
    out, sha = previous
    tool = load_tool()
    written = []
    real_check = tool.check

    def worse(model, path, shapes):  # the real check, on the new file, with a failing result
        written.append(path)
        real_check(model, path, shapes)
        return [(shapes[0], 0.5)]

    monkeypatch.setattr(tool, "check", worse)
    capsys.readouterr()
    assert tool.main(["-m", str(checkpoint), "-o", str(out), "--size", "64"]) == 1
    err = capsys.readouterr().err
    assert "FAILED: 0.5 exceeds the tolerance 0.0001" in err and "previous" in err
    assert written[0] != out and written[0].parent == out.parent and not written[0].exists()
    assert_intact(out, sha)

    new = out.with_name("new.onnx")
    monkeypatch.setattr(tool, "export", lambda *args, **kwargs: None)
    monkeypatch.setattr(tool, "check", lambda model, path, shapes: [(shapes[0], 0.5)])
    assert tool.main(["-m", str(checkpoint), "-o", str(new), "--size", "64"]) == 1
    assert f"{new} is not written" in capsys.readouterr().err
    assert not new.exists()
    assert_intact(out, sha)


def test_export_is_readable_by_others(good_export):
    assert good_export.stat().st_mode & 0o777 == 0o644
    onnx.checker.check_model(onnx.load(str(good_export)))
    assert [p.name for p in good_export.parent.iterdir()] == [good_export.name]


def test_checkpoint_save_failing_without_enospc_on_a_full_disk(tmp_path, monkeypatch):
    path = tmp_path / "runs" / "demo" / "checkpoint-epoch3.pth"
    path.parent.mkdir(parents=True)
    save_checkpoint({"epoch": 2}, path)

    def failing_save(obj, f, *args, **kwargs):  # torch's writer: some bytes, then its error
        f.write(b"PK\x03\x04" + bytes(4000))
        raise RuntimeError(TORCH_WRITER_ERROR)

    monkeypatch.setattr(torch, "save", failing_save)
    monkeypatch.setattr(atomic, "_free_bytes", lambda folder: 0)
    with pytest.raises(DiskFullError) as caught:
        save_checkpoint({"epoch": 3}, path)
    message = assert_one_line(caught.value, path)
    assert "no space left" in message and "(0 B free, more than 4.0 kB to write)" in message
    assert isinstance(caught.value.__cause__, RuntimeError)
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 2
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_writer_error_with_free_space_is_not_called_a_full_disk(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint-epoch3.pth"
    monkeypatch.setattr(atomic, "_free_bytes", lambda folder: 50 * 2**30)
    with pytest.raises(RuntimeError, match="unexpected pos"), atomic_write(path) as f:
        f.write(b"partial")
        raise RuntimeError(TORCH_WRITER_ERROR)
    assert list(tmp_path.iterdir()) == []


def test_read_only_file_system_is_one_clear_error(tmp_path, monkeypatch):
    path = tmp_path / "config.json"
    real_open = os.open

    def read_only(file, flags, *args, **kwargs):
        if str(file).endswith(".tmp") and flags & os.O_CREAT:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(file))
        return real_open(file, flags, *args, **kwargs)

    monkeypatch.setattr(atomic.os, "open", read_only)
    with pytest.raises(ReadOnlyFileSystemError) as caught:
        write_text(path, "{}\n")
    assert isinstance(caught.value, UnwritableError) and isinstance(caught.value, OSError)
    assert caught.value.errno == errno.EROFS and caught.value.filename == str(path)
    assert "read-only file system" in assert_one_line(caught.value, path)
    assert not isinstance(caught.value, DiskFullError)
    assert list(tmp_path.iterdir()) == []


def npz(path: Path) -> None:
    with path.open("wb") as f:
        np.savez(f, w=np.zeros(3))


OTHER_FORMATS = {  # name: (writer, reason)
    "whitespace": (lambda p: p.write_bytes(b" \n\n"), "a text file holding only white space"),
    "zeros": (lambda p: p.write_bytes(bytes(5000)), "first 4096 bytes are all zero"),
    "npz": (npz, "a NumPy .npz archive"),
    "bzip2": (lambda p: p.write_bytes(bz2.compress(b"weights")), "a bzip2-compressed file"),
    "xz": (lambda p: p.write_bytes(lzma.compress(b"weights")), "an xz-compressed file"),
    "pdf": (lambda p: p.write_bytes(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n"), "a PDF document"),
    "0x80 not a pickle": (lambda p: p.write_bytes(b"\x80\x7f\x00\x01"), "match no known format"),
}


def test_an_exported_model_given_as_weights_is_named_as_onnx(good_export):
    reason = not_torch_reason(good_export)
    assert reason is not None and reason.startswith("it is an ONNX model (protobuf")
    assert "unpickling" not in reason


@pytest.mark.parametrize("kind", OTHER_FORMATS)
def test_files_of_other_formats_are_named(kind, tmp_path):
    write, expected = OTHER_FORMATS[kind]
    path = tmp_path / "weights.pth"
    write(path)
    reason = not_torch_reason(path)
    assert reason is not None and expected in reason and "unpickling" not in reason
