"""Fixtures of the inference tests: a seeded lite U2Net."""

from __future__ import annotations

import pytest
import torch

from models import U2Net


@pytest.fixture(scope="module")
def lite() -> U2Net:
    torch.manual_seed(0)
    return U2Net("lite").eval()
