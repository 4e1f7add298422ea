"""Batch prediction of image files: listing inputs, reading ahead, predicting, writing outputs."""

from __future__ import annotations

import functools
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple, TypeVar

import numpy as np
import torch
from tqdm import tqdm

from utils.imagery import Imagery
from utils.inference.outputs import OUTPUT_KINDS, OUTPUT_MARKER, write_outputs
from utils.inference.predictor import Predictor
from utils.io.images import IMAGE_EXTENSIONS, find_images
from utils.io.rasters import read_model_input
from utils.metrics.prepare import prob_to_uint8

T = TypeVar("T")
R = TypeVar("R")


def list_inputs(source: Path, output: Path) -> list[tuple[str, Path]]:
    """``(key, path)`` of every input image; ``key`` is the output name without extension.

    Outputs are never read as inputs: an output folder inside the input folder is skipped (this
    run's, and every earlier one's: they hold :data:`OUTPUT_MARKER`), and
    ValueError refuses an output folder equal to the input folder (its maps/, masks/, ... would
    be read back on the next run) or an input inside one of the output's kind folders (its
    images would be overwritten by their own outputs).
    """
    check_not_overlapping(source, output)
    if source.is_file():
        return [(source.stem, source)]
    if not source.is_dir():
        raise FileNotFoundError(f"input {source} does not exist")
    found = find_images(source, skip=output.resolve())
    earlier = [marker.parent.resolve() for marker in source.rglob(OUTPUT_MARKER)]
    found = {
        key: path
        for key, path in found.items()
        if not any(folder in path.resolve().parents for folder in earlier)
    }
    if not found:
        raise FileNotFoundError(f"{source} holds no image file ({', '.join(IMAGE_EXTENSIONS)})")
    return sorted(found.items())


def check_not_overlapping(source: Path, output: Path) -> None:
    """ValueError when the output folder ``output`` is the input folder ``source``, or when
    ``source`` lies in one of the folders that :data:`OUTPUT_KINDS` write under ``output``."""
    source, output = source.resolve(), output.resolve()
    if source == output:
        raise ValueError(
            f"the output folder {output} is the input folder: its outputs "
            f"({', '.join(f'{folder}/' for folder, _ in OUTPUT_KINDS.values())}) would be read "
            "back as inputs by the next run; choose another output folder, for example a new "
            f"sub-folder {output / 'pred'} (an output folder inside the input folder is skipped)"
        )
    for folder, _ in OUTPUT_KINDS.values():
        kind_folder = output / folder
        if source == kind_folder or kind_folder in source.parents:
            raise ValueError(
                f"the input {source} lies in the output folder {kind_folder}, where its images "
                "would be overwritten by their own outputs; choose another output folder"
            )


class InlineExecutor(Executor):
    """An executor without threads: ``submit`` runs the call at once in the calling thread and
    returns its settled future (for a layout without I/O threads)."""

    def submit(self, fn: Callable[..., R], /, *args: object, **kwargs: object) -> Future[R]:
        future: Future[R] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except Exception as err:  # delivered by future.result(), as a pool would
            future.set_exception(err)
        return future


def executor(threads: int) -> Executor:
    """A pool of ``threads`` threads, or an :class:`InlineExecutor` for 0."""
    return ThreadPoolExecutor(threads) if threads > 0 else InlineExecutor()


def read_ahead(
    function: Callable[[T], R], items: Iterable[T], pool: Executor, depth: int
) -> Iterator[R]:
    """``map(function, items)`` computed in ``pool`` at most ``depth`` items ahead, in order."""
    pending: deque[Future[R]] = deque()
    iterator = iter(items)
    for item in iterator:
        pending.append(pool.submit(function, item))
        if len(pending) >= depth:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


class InputImage(NamedTuple):
    """An input as read: ``image`` (HxWxC uint8: RGB, or the bands of an ``imagery`` section),
    or None and the ``error`` message."""

    key: str
    path: Path
    image: np.ndarray | None
    error: str = ""


def read_input(item: tuple[str, Path], imagery: Imagery | None = None) -> InputImage:
    """Read the ``(key, path)`` input as the model's ``imagery`` says (None: 8-bit RGB; see
    :func:`utils.io.rasters.read_model_input`); a file that cannot be read gives its error
    message."""
    key, path = item
    try:
        return InputImage(key, path, read_model_input(path, imagery))
    except OSError as err:
        return InputImage(key, path, None, str(err))


def batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def predict_files(
    predictor: Predictor,
    inputs: list[tuple[str, Path]],
    out_dir: Path,
    kinds: tuple[str, ...],
    threshold: float = 0.5,
    workers: int = 2,
    write: Callable[..., None] = write_outputs,
) -> tuple[int, list[str]]:
    """Predict every ``(key, path)`` input and write its ``kinds`` of outputs (see
    :mod:`utils.inference.outputs`; the mask is ``probability >= threshold``) with ``write``,
    which takes the arguments of :func:`~utils.inference.outputs.write_outputs` (default; for
    GeoTIFF and polygon outputs: :class:`utils.inference.geo_outputs.GeoOutputs`).

    ``workers`` threads read the next images and ``workers`` more write the outputs while the
    model runs (0: the calling thread reads and writes between forwards). An image that cannot
    be read or written, or that runs out of GPU memory, is skipped. Returns ``(images written,
    failure messages naming the files)``.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / OUTPUT_MARKER).touch()
    per_batch = 1 if predictor.options.mode == "sliding" else predictor.options.batch_size
    failures: list[str] = []
    written = 0
    writes: deque[tuple[Path, Future[None]]] = deque()

    def settle(limit: int) -> None:
        nonlocal written
        while len(writes) > limit:
            path, future = writes.popleft()
            try:
                future.result()
                written += 1
            except OSError as err:
                failures.append(f"{path}: cannot write the outputs: {err}")

    with (
        executor(workers) as readers,
        executor(workers) as writers,
        tqdm(total=len(inputs), unit="img", desc=predictor.options.mode, disable=None) as bar,
    ):
        read = functools.partial(read_input, imagery=predictor.imagery)
        loaded = read_ahead(read, inputs, readers, depth=per_batch + workers)
        for batch in batched(loaded, per_batch):
            good = [item for item in batch if item.image is not None]
            failures += [item.error for item in batch if item.image is None]
            if good:
                try:
                    probs = predict_with_progress(predictor, [item.image for item in good])
                except torch.cuda.OutOfMemoryError:
                    torch.cuda.empty_cache()
                    advice = "out of GPU memory; use --mode sliding or a smaller --batch-size"
                    failures += [f"{item.path}: {advice}" for item in good]
                    probs = []
                for (key, path, image, _), prob in zip(good, probs, strict=False):
                    saliency = prob_to_uint8(prob).cpu().numpy()
                    mask = (
                        (prob >= threshold).to(torch.uint8).mul_(255).cpu().numpy()
                        if {"mask", "overlay", "polygons"} & set(kinds)
                        else None
                    )
                    future = writers.submit(write, out_dir, key, kinds, image, saliency, mask)
                    writes.append((path, future))
            settle(limit=2 * workers)
            bar.update(len(batch))
        settle(limit=0)
    return written, failures


def predict_with_progress(predictor: Predictor, images: list[np.ndarray]) -> list[torch.Tensor]:
    """Predict a batch; in sliding mode a big image gets its own progress bar over windows."""
    if predictor.options.mode != "sliding":
        return predictor.predict_tensors(images)
    windows = predictor.count_windows(*images[0].shape[:2])
    with tqdm(
        total=windows,
        unit="win",
        desc="windows",
        leave=False,
        disable=None if windows > predictor.options.batch_size else True,
    ) as bar:
        return predictor.predict_tensors(images, on_windows=bar.update)
