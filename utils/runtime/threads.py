"""CPU thread layout: torch's intra-op and inter-op threads, OpenCV's threads and the file I/O
threads of a process (:func:`thread_layout`; in training, its DataLoader workers and its share
of the cores under DDP: :func:`training_layout`), sized so that together they do not
oversubscribe its cores; and how torch's OpenMP threads wait.

On a CPU shared with other work, an OpenMP worker thread that waits at an operator's barrier for
a sibling that is not running must not spin there for long: spinning takes the core from the
sibling it waits for. Measured on 2 cores with other processes running (U2NETP forward at
320x320, median of 5): 2 torch threads 1.15-2.80 s with GNU OpenMP's default wait (spinning for
300,000 rounds), 0.49 s with ``OMP_WAIT_POLICY=PASSIVE`` (sleep at once), 0.47 s with 1 thread.
Sleeping at once costs on an idle machine, though: every barrier then pays a wake-up. A short
spin, ``GOMP_SPINCOUNT=1000``, is as fast as spinning when the machine is idle and as robust as
sleeping when it is busy: ``inference.py --mode single`` at 320 with the official U2NETP on 18
photos, 2 threads, images/s of the prediction loop, two runs each:

==========================  ==========  =========================  ==========================
wait                        idle        busy (1 spinning process)  heavy (3 spinning processes)
==========================  ==========  =========================  ==========================
``OMP_WAIT_POLICY=ACTIVE``  3.72, 3.79  1.50, 1.38
``OMP_WAIT_POLICY=PASSIVE`` 3.58, 3.48  2.08, 2.12                 1.26, 1.27
``GOMP_SPINCOUNT=1000``     3.78, 3.73  1.98, 2.06                 1.27, 1.34
==========================  ==========  =========================  ==========================

:func:`wait_policy` must be applied before torch is imported (OpenMP reads the environment when it
loads; the CLIs call it first thing), so this module imports neither torch nor OpenCV at
import time.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

from utils.runtime.logs import counted

THREADS_RULE = "0 (every usable core) or a number of cores"
"""What a ``threads`` setting (the config key, every CLI's ``--threads``) may be."""

SPIN_COUNT = ("GOMP_SPINCOUNT", "1000")
"""Environment variable and value that make waiting OpenMP threads spin 1000 rounds
(microseconds at most) before they sleep: GNU OpenMP's, the one of the torch wheels on PyPI (see
the module docstring)."""


def wait_policy() -> dict[str, str]:
    """The environment to add before torch is imported, ``os.environ.update(wait_policy())``:
    :data:`SPIN_COUNT`, unless the environment already says how OpenMP threads wait
    (``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT``: a user's setting wins)."""
    if {"OMP_WAIT_POLICY", SPIN_COUNT[0]} & os.environ.keys():
        return {}
    return dict([SPIN_COUNT])


def usable_cores() -> int:
    """The number of CPUs this process may run on (its affinity mask, e.g. a SLURM or
    ``taskset`` allocation; ``os.cpu_count()`` where affinity is not available)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class ThreadLayout:
    """How a process uses its ``cores``: ``compute`` torch intra-op threads (the calling thread
    is one of them) and ``io`` threads each for reading and for writing files (0: files are
    read and written by the calling thread, between forwards)."""

    cores: int
    compute: int
    io: int


def thread_layout(
    threads: int | None = None, cores: int | None = None, gpu: bool = False
) -> ThreadLayout:
    """The layout for ``threads`` threads in all (0 or None: every usable core; capped at the
    usable cores, since more threads than cores only wait for each other).

    Decoding a JPEG and encoding a PNG map take milliseconds against hundreds for a forward on
    the CPU, so I/O threads only pay where there is a core to spare for them: with one or two
    threads they get none (files are read and written between forwards, which costs about 1%
    at 320x320), from three threads on one reader and one writer thread take one of them. With
    ``gpu`` (the model runs on a GPU, and torch's CPU threads mostly wait for it), 2 reader and
    2 writer threads come on top. Raises ValueError for a negative ``threads``.
    """
    if threads is not None and threads < 0:
        raise ValueError(f"threads must be {THREADS_RULE}, got {threads}")
    cores = cores or usable_cores()
    total = min(threads or cores, cores)  # more threads than cores only wait for each other
    if gpu:
        return ThreadLayout(cores=cores, compute=total, io=2)
    io = 1 if total >= 3 else 0
    return ThreadLayout(cores=cores, compute=total - io, io=io)


def threads_option_error(threads: int | None) -> str | None:
    """The message for a command line's ``--threads`` value (None when it is valid or absent),
    for ``parser.error``."""
    if threads is not None and threads < 0:
        return f"--threads must be {THREADS_RULE}, got {threads}"
    return None


def apply_threads(threads: int | None = None, gpu: bool = False) -> ThreadLayout:
    """Apply :func:`thread_layout` to this process and return it (see
    :func:`set_compute_threads`)."""
    layout = thread_layout(threads, gpu=gpu)
    set_compute_threads(layout.compute)
    return layout


def set_compute_threads(compute: int) -> None:
    """Give this process ``compute`` torch intra-op threads, one inter-op thread (nothing here
    runs operators concurrently) and a single-threaded OpenCV (it decodes and resizes one image
    at a time; a pool of its own would compete with torch's threads)."""
    import cv2
    import torch

    torch.set_num_threads(compute)
    if torch.get_num_interop_threads() != 1:
        # possible only before the process's first inter-op work: otherwise kept as it is
        with contextlib.suppress(RuntimeError):
            torch.set_num_interop_threads(1)
    cv2.setNumThreads(1)


def local_processes() -> int:
    """How many training processes share this machine's cores: torchrun's
    ``LOCAL_WORLD_SIZE`` (its processes on this node, all with the same affinity mask), else 1
    (one process; an ``srun`` task of SLURM has its own ``--cpus-per-task`` affinity mask)."""
    try:
        return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        return 1


@dataclass(frozen=True)
class TrainingLayout:
    """How a training process uses its ``share`` of the ``cores``: ``compute`` torch intra-op
    threads beside ``loader_workers`` DataLoader worker processes."""

    cores: int
    share: int
    compute: int
    loader_workers: int

    def describe(self) -> str:
        """The log line, e.g. ``threads: 2 compute, 1 loader worker (2 of 2 cores)``."""
        return (
            f"threads: {self.compute} compute, {counted(self.loader_workers, 'loader worker')} "
            f"({self.share} of {self.cores} cores)"
        )


def training_layout(
    threads: int = 0, loader_workers: int = 0, processes: int = 1, cores: int | None = None
) -> TrainingLayout:
    """The layout of one of ``processes`` training processes that together use ``threads``
    cores (0: every usable core), each with ``loader_workers`` DataLoader workers.

    Each process gets its share, ``threads // processes`` cores (at least 1; ``threads`` is
    capped at the usable cores: more threads than cores only wait for each other). Loader workers
    take cores from the compute threads only from a share of 3 cores on, and at most half of
    them: a worker decodes and augments the next batch while the step runs and sleeps most of
    the time. On 2 idle cores a demo epoch (whole process) took 34-38 s with 2 compute threads
    beside 1 worker and 48 s with 1; with a spinning process beside, 51 s and 45 s (see
    ``bench/threads.py`` and the README). Raises ValueError for a negative ``threads`` or
    ``loader_workers`` or fewer than 1 ``processes``.
    """
    if threads < 0 or loader_workers < 0 or processes < 1:
        raise ValueError(
            "threads and loader_workers must be 0 or more and processes at least 1, got "
            f"threads={threads}, loader_workers={loader_workers}, processes={processes}"
        )
    cores = cores or usable_cores()
    share = max(1, min(threads or cores, cores) // processes)  # more would only wait
    taken = min(loader_workers, share // 2) if share >= 3 else 0
    return TrainingLayout(cores, share, share - taken, loader_workers)


def apply_training_threads(threads: int = 0, loader_workers: int = 0) -> TrainingLayout:
    """Apply :func:`training_layout` (for :func:`local_processes` processes) to this process
    (see :func:`set_compute_threads`) and return it."""
    layout = training_layout(threads, loader_workers, local_processes())
    set_compute_threads(layout.compute)
    return layout
