"""A machine busy with other work, on demand: ``with busy(n): ...`` runs ``n`` processes that
spin (``while True: pass``) for the duration of the block, so that a benchmark measures its
candidates side by side on cores they must share, as on a shared workstation or CI runner.
Imports no torch (the benchmarks that time whole processes keep their own start quick)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def busy(processes: int) -> Iterator[None]:
    """Keep ``processes`` (0 or more) spinning Python processes running while the block runs;
    they are killed when it ends, however it ends."""
    spinners = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(processes)
    ]
    try:
        yield
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()
