"""Every file the project writes honours the umask (0644 and folders 0755 under umask 022, not
mkstemp's 0600 and mkdtemp's 0700); generated data on a full disk is one clear error."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from dataloaders import demo
from dataloaders.building_demo import ensure_building_demo
from dataloaders.demo import ensure_demo_data
from dataloaders.generated import MARKER
from utils.inference.outputs import OUTPUT_KINDS, write_outputs
from utils.io.atomic import DiskFullError, write_json
from utils.io.checkpoint import save_checkpoint
from utils.io.images import write_image

UMASKS = {0o022: (0o644, 0o755), 0o002: (0o664, 0o775)}  # umask: (file mode, folder mode)


@pytest.fixture(params=sorted(UMASKS), ids=lambda u: f"umask{u:03o}")
def modes(request: pytest.FixtureRequest) -> Iterator[tuple[int, int]]:
    """Set the umask for the test (restored after it); yields the expected file and folder modes."""
    old = os.umask(request.param)
    try:
        yield UMASKS[request.param]
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def tree_modes(root: Path) -> tuple[set[int], set[int]]:
    """The modes of the files and of the folders (``root`` included) under ``root``."""
    paths = [root, *root.rglob("*")]
    return {mode(p) for p in paths if p.is_file()}, {mode(p) for p in paths if p.is_dir()}


def test_checkpoints_json_and_images_follow_the_umask(modes, tmp_path):
    file_mode, _ = modes
    checkpoint, config, image = tmp_path / "c.pth", tmp_path / "config.json", tmp_path / "i.png"
    save_checkpoint({"epoch": 1, "w": torch.ones(3)}, checkpoint)
    write_json(config, {"name": "demo"})
    write_image(image, np.zeros((4, 5), np.uint8))
    assert [mode(p) for p in (checkpoint, config, image)] == [file_mode] * 3
    save_checkpoint({"epoch": 2}, checkpoint)  # replacing a file: the new one gets the mode too
    assert mode(checkpoint) == file_mode


def test_inference_outputs_follow_the_umask(modes, tmp_path):
    file_mode, folder_mode = modes
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    saliency = rng.integers(0, 256, (24, 32), dtype=np.uint8)
    mask = np.where(saliency > 127, 255, 0).astype(np.uint8)
    out = tmp_path / "out"
    out.mkdir()
    kinds = tuple(kind for kind in OUTPUT_KINDS if kind != "polygons")  # polygons: GeoOutputs
    write_outputs(out, "sub/photo", kinds, image, saliency, mask)
    files, folders = tree_modes(out)
    assert len(list(out.rglob("photo.*"))) == len(kinds)
    assert files == {file_mode} and folders == {folder_mode}


def test_generated_demo_folders_follow_the_umask(modes, tmp_path):
    file_mode, folder_mode = modes
    ensure_demo_data(str(tmp_path / "demo"), num_train=2, num_test=1)
    ensure_building_demo(str(tmp_path / "buildings"), num_tiles=2, tile_size=64)
    for root in (tmp_path / "demo", tmp_path / "buildings"):
        files, folders = tree_modes(root)
        assert (root / MARKER).is_file()
        assert files == {file_mode} and folders == {folder_mode}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["buildings", "demo"]


def test_demo_generation_on_a_full_disk_is_one_clear_error(tmp_path, monkeypatch):
    def full(root: str, num_train: int, num_test: int) -> None:
        Path(root, "part.jpg").write_bytes(bytes(100))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(demo, "_generate", full)
    target = tmp_path / "data" / "demo"
    with pytest.raises(DiskFullError) as caught:
        ensure_demo_data(str(target), num_train=2, num_test=1)
    message = str(caught.value)
    assert "\n" not in message and "no space left" in message and " free" in message
    assert str(target.parent) in message and "demo" in message
    assert list(target.parent.iterdir()) == []  # no partial or temporary folder is left
