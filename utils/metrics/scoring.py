"""Reading and scoring (prediction, ground truth) file pairs, in this process or in a pool of
single-threaded worker processes.

Pairs are scored in chunks of ``batch_size`` pairs: each chunk is read (predictions with
:func:`utils.io.images.read_grey`, masks with :func:`utils.io.images.read_mask_flagged`) and fed
to a fresh metric set (:func:`metric_set`), whose state (sums and image counts) is then added
to the running total in chunk order. The result is therefore the same, bit for bit, whatever
the number of processes, and equal (up to float64 summation order) to one
:class:`~utils.metrics.sod.SODMetrics` fed every pair.

On the CPU with the default metrics (or some of them), nothing here imports torch
(:class:`~utils.metrics.metric_set.MetricSet`): a torch import costs a second of CPU time per
process, as much as scoring hundreds of pairs. The optional metrics and a GPU use
:class:`~utils.metrics.sod.SODMetrics`; both give the same numbers.

Why processes: on the CPU the metrics are many small operators per image, and splitting each
operator over torch's threads costs a barrier per operator (on a busy machine, a wait for a
sibling thread that is not running). Independent single-threaded processes, each reading and
scoring whole chunks, share nothing but the result and scale with the idle cores. They are
forked (Linux, macOS: cheap, the imported modules are inherited), before this process starts
any thread or torch thread pool of its own; where ``fork`` does not exist, chunks are scored
here.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from utils.io.images import read_grey, read_mask_flagged
from utils.metrics.metric_set import DEFAULT_METRICS, MetricSet

Pair = tuple[Path, Path]
"""``(prediction path, ground-truth path)``."""


@dataclass
class ChunkScore:
    """What scoring a chunk of pairs gave: the :meth:`MetricSet.state_arrays` of the chunk
    (empty when nothing could be read),
    ``num_images`` scored, ``resized`` predictions (size unlike their GT's), ``binary_01`` masks
    (0/1-encoded, read as 0/255), the ``unreadable`` messages (one per skipped pair, naming
    the file) and, when asked for, the level-128 ``confusion`` counts (TP, FP, FN, TN) of each
    pair scored."""

    state: list[np.ndarray] = field(default_factory=list)
    confusion: dict[Pair, np.ndarray] = field(default_factory=dict)
    num_images: int = 0
    resized: int = 0
    binary_01: int = 0
    unreadable: list[str] = field(default_factory=list)


@dataclass
class PairScores:
    """The merged result of :meth:`PairScorer.score`: the ``scorer`` holding the state of every
    pair scored (``scorer.compute()``, ``scorer.curves()``), and the counts and messages of
    :class:`ChunkScore` summed over the chunks."""

    scorer: MetricSet
    resized: int = 0
    binary_01: int = 0
    unreadable: list[str] = field(default_factory=list)
    confusion: dict[Pair, np.ndarray] = field(default_factory=dict)

    def add(self, chunk: ChunkScore) -> None:
        """Add the state and counts of ``chunk`` (chunks must be added in a fixed order for
        reproducible float64 sums)."""
        if chunk.state:
            self.scorer.add_state(chunk.state)
        self.resized += chunk.resized
        self.binary_01 += chunk.binary_01
        self.unreadable += chunk.unreadable
        self.confusion.update(chunk.confusion)


def metric_set(metrics: Sequence[str] | None, device: Any = "cpu") -> MetricSet:
    """A fresh metric set of ``metrics`` (None: the defaults) on ``device`` (a string or a
    ``torch.device``): :class:`MetricSet` (no torch) on the CPU for default metrics,
    :class:`~utils.metrics.sod.SODMetrics` otherwise (the same state layout and numbers).
    Raises ValueError naming an unknown metric."""
    if str(device) == "cpu" and set(metrics or DEFAULT_METRICS) <= set(DEFAULT_METRICS):
        return MetricSet(metrics)
    from utils.metrics.sod import SODMetrics

    return SODMetrics(device, metrics)


def read_pair(pair: Pair) -> tuple[np.ndarray, np.ndarray, bool]:
    """The 8-bit prediction and mask of a pair and whether the mask was 0/1-encoded; raises
    OSError (naming the file) when one of the two files cannot be read."""
    pred = read_grey(pair[0])
    gt, binary_01 = read_mask_flagged(pair[1])
    return pred, gt, binary_01


def score_chunk(
    chunk: Sequence[Pair],
    metrics: Sequence[str] | None,
    device: Any = "cpu",
    executor: ThreadPoolExecutor | None = None,
    per_pair: bool = False,
) -> ChunkScore:
    """Read the pairs of ``chunk`` (in ``executor``'s threads, or in this one when ``None``) and
    score them with a fresh :func:`metric_set` of ``metrics`` on ``device`` (a string or a
    ``torch.device``), with each pair's confusion counts if ``per_pair``; unreadable pairs are
    skipped and reported in the result."""
    reads: list[Callable[[], tuple[np.ndarray, np.ndarray, bool]]] = (
        [executor.submit(read_pair, pair).result for pair in chunk]
        if executor
        else [partial(read_pair, pair) for pair in chunk]
    )
    result = ChunkScore()
    preds: list[np.ndarray] = []
    gts: list[np.ndarray] = []
    scored: list[Pair] = []
    for pair, read in zip(chunk, reads, strict=True):
        try:
            pred, gt, flagged = read()
        except OSError as err:
            result.unreadable.append(str(err))
            continue
        scored.append(pair)
        preds.append(pred)
        gts.append(gt)
        result.binary_01 += flagged
        result.resized += pred.shape != gt.shape
    if preds:
        scorer = metric_set(metrics, device)
        scorer.update(preds, gts)
        result.state = scorer.state_arrays()
        if per_pair:
            result.confusion = {
                pair: scorer.confusion(pred, gt)[0]
                for pair, pred, gt in zip(scored, preds, gts, strict=True)
            }
        result.num_images = scorer.num_images
    return result


_worker_metrics: Sequence[str] | None = None
_worker_per_pair = False


def _init_worker(metrics: Sequence[str] | None, per_pair: bool) -> None:
    """Initialise a worker process: one OpenCV thread, one torch thread (also if torch is
    imported later, for a chunk that needs it), the metric names."""
    global _worker_metrics, _worker_per_pair
    import cv2

    os.environ["OMP_NUM_THREADS"] = "1"
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)
    cv2.setNumThreads(1)
    _worker_metrics, _worker_per_pair = metrics, per_pair


def _score_in_worker(chunk: Sequence[Pair]) -> ChunkScore:
    return score_chunk(chunk, _worker_metrics, per_pair=_worker_per_pair)


class PairScorer:
    """Scores lists of pairs (:meth:`score`); a context manager that owns its worker processes
    (``processes > 1``) or its reader threads (``workers > 0``, used when scoring in this
    process).

    ``metrics``: metric names (None: the defaults); ``device``: where the metrics are computed
    (a string or a ``torch.device``); ``batch_size``: pairs per chunk (>= 1); ``processes``:
    worker processes, used on the CPU where ``fork`` exists (elsewhere chunks are scored in this
    process); ``per_pair``: also count each pair's level-128 confusion
    (:attr:`PairScores.confusion`). Raises ValueError for a ``batch_size`` or ``processes``
    below 1 or negative ``workers``. A worker process that dies (e.g. killed for memory) makes
    :meth:`score` raise ``concurrent.futures.process.BrokenProcessPool``.
    """

    def __init__(
        self,
        metrics: Sequence[str] | None = None,
        device: Any = "cpu",
        batch_size: int = 16,
        processes: int = 1,
        workers: int = 0,
        per_pair: bool = False,
    ) -> None:
        if batch_size < 1 or processes < 1 or workers < 0:
            raise ValueError(
                f"need batch_size >= 1, processes >= 1 and workers >= 0; got {batch_size}, "
                f"{processes}, {workers}"
            )
        self.metrics = None if metrics is None else tuple(metrics)
        self.device = device
        self.batch_size = batch_size
        forkable = "fork" in multiprocessing.get_all_start_methods()
        self.processes = processes if forkable and str(device) == "cpu" else 1
        self._workers = workers
        self.per_pair = per_pair
        self._pool: ProcessPoolExecutor | None = None
        self._readers: ThreadPoolExecutor | None = None

    def __enter__(self) -> PairScorer:
        if self.processes > 1:
            context = multiprocessing.get_context("fork")
            self._pool = ProcessPoolExecutor(
                self.processes,
                context,
                initializer=_init_worker,
                initargs=(self.metrics, self.per_pair),
            )
            self._pool.submit(int).result()  # fork the workers now, before any thread starts
        elif self._workers:
            self._readers = ThreadPoolExecutor(self._workers)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None
        if self._readers is not None:
            self._readers.shutdown(cancel_futures=True)
            self._readers = None

    def _chunk_scores(self, pairs: Sequence[Pair]) -> Iterator[tuple[int, ChunkScore]]:
        """``(pairs in the chunk, its score)`` of every chunk of ``pairs``, in order."""
        chunks = [
            pairs[start : start + self.batch_size]
            for start in range(0, len(pairs), self.batch_size)
        ]
        if self._pool is not None:
            scores: Iterator[ChunkScore] = self._pool.map(_score_in_worker, chunks)
        else:
            scores = (
                score_chunk(chunk, self.metrics, self.device, self._readers, self.per_pair)
                for chunk in chunks
            )
        yield from zip((len(chunk) for chunk in chunks), scores, strict=True)

    def score(
        self, pairs: Sequence[Pair], progress: Callable[[int], object] | None = None
    ) -> PairScores:
        """Read and score ``pairs``; ``progress(n)`` is called after each chunk of ``n`` pairs.

        The merged scorer may hold no image (``scorer.num_images == 0``) when none could be read.
        """
        merged = PairScores(metric_set(self.metrics, self.device))
        for size, chunk in self._chunk_scores(pairs):
            merged.add(chunk)
            if progress is not None:
                progress(size)
        return merged
