"""Fixtures of the inference tests: a seeded lite U2Net and a checkpoint of it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from models import U2Net
from tests.helpers import tiny_config
from utils.config import load_config
from utils.io.checkpoint import save_checkpoint


@pytest.fixture(scope="module")
def lite() -> U2Net:
    torch.manual_seed(0)
    return U2Net("lite").eval()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory, lite: U2Net) -> Path:
    """A U2Seg checkpoint of ``lite`` whose stored config has base_size 48."""
    folder = tmp_path_factory.mktemp("ckpt")
    config = load_config(tiny_config(folder))
    path = folder / "model.pth"
    save_checkpoint(
        {"arch": "U2Net", "epoch": 1, "state_dict": lite.state_dict(), "config": config}, path
    )
    return path
