"""The GPU check (bench/gpu_check.py) skips cleanly on a machine without a GPU."""

import subprocess
import sys

import pytest
import torch

from bench.gpu_check import CHECKS
from tests.helpers import ROOT


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the skip without a GPU")
def test_gpu_check_skips_every_check_without_a_gpu():
    done = subprocess.run(
        [sys.executable, "-m", "bench.gpu_check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "no CUDA GPU" in done.stdout and f"all {len(CHECKS)} checks skipped" in done.stdout
