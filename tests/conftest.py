"""Shared fixtures: tiny DUTS-layout datasets (the repository root is on ``sys.path`` through
``pythonpath`` in pyproject.toml)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import pytest
import torch

from tests.helpers import write_duts


@pytest.fixture
def make_duts(tmp_path: Path) -> Callable[..., Path]:
    """``make_duts(name="duts", **kwargs)`` writes ``write_duts(tmp_path / name, **kwargs)``."""
    return lambda name="duts", **kwargs: write_duts(tmp_path / name, **kwargs)


@pytest.fixture
def duts_dir(make_duts: Callable[..., Path]) -> Path:
    """A tiny DUTS-layout dataset: 6 training and 3 test images of 48x40."""
    return make_duts()


@pytest.fixture
def restore_threads() -> Iterator[None]:
    """Give torch and OpenCV their thread counts back after the test."""
    torch_threads, cv2_threads = torch.get_num_threads(), cv2.getNumThreads()
    yield
    torch.set_num_threads(torch_threads)
    cv2.setNumThreads(cv2_threads)
