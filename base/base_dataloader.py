"""DataLoader whose shuffling and augmentation depend only on the run seed, epoch and index."""

from __future__ import annotations

import copy
import math
import os
import signal
from collections.abc import Iterator, Sequence
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from utils.imagery import Imagery
from utils.preprocessing import NORMALISATIONS, check_normalisation
from utils.runtime.distributed import get_rank, get_world_size
from utils.runtime.logs import get_logger


class SeededSampler(Sampler):
    """Yields ``(index, seed, epoch)`` keys; call ``set_epoch`` before each epoch.

    The order is a permutation drawn from ``(seed, epoch)`` and the dataset seeds each sample's
    augmentation from the whole key, so an epoch is reproducible on its own: a resumed run sees
    exactly the samples and augmentations of an uninterrupted one, whatever the worker count.

    Under DDP (``world_size`` > 1) each process takes every ``world_size``-th key of that order
    from ``rank`` on. For training the order is first padded cyclically to a multiple of
    ``world_size`` (as ``DistributedSampler`` does), so every process runs the same number of
    steps; with ``evaluation`` there is no padding: every image goes to exactly one process and
    the processes' shares differ by at most one.
    """

    def __init__(
        self,
        indices: Sequence[int],
        shuffle: bool,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        evaluation: bool = False,
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, {world_size})")
        self.indices = list(indices)
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.evaluation = evaluation
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Draw the order of ``epoch``; ``start`` keys of this process's share are left out
        (a run resumed in the middle of an epoch continues with exactly the keys that were
        left; ``len`` stays the whole epoch's)."""
        self.epoch = epoch
        self.start = start

    def __len__(self) -> int:
        n = len(self.indices)
        if self.evaluation:
            return len(range(self.rank, n, self.world_size))
        return math.ceil(n / self.world_size)

    def __iter__(self) -> Iterator[tuple[int, int, int]]:
        order = self.indices
        if self.shuffle:
            rng = np.random.default_rng([self.seed, self.epoch])
            order = [self.indices[i] for i in rng.permutation(len(self.indices))]
        if self.world_size > 1:
            if not self.evaluation and order:
                total = len(self) * self.world_size
                order = (order * math.ceil(total / len(order)))[:total]
            order = order[self.rank :: self.world_size]
        return iter((index, self.seed, self.epoch) for index in order[self.start :])


def split_indices(n: int, val_split: float, seed: int) -> tuple[list[int], list[int]]:
    """Split ``range(n)`` into sorted (train, val) index lists, drawn from ``(seed, n)``.

    ``val_split`` is a fraction ``0 < val_split < 1`` of the samples (rounded; e.g. 0.1) or a
    whole count of them (an int, e.g. 50) between 1 and ``n - 1``. Raises ValueError naming
    ``val_split`` for anything else (1.0 and 1.5 included: neither a fraction nor a count)
    and for a fraction that leaves no training or no validation sample."""
    is_count = isinstance(val_split, int) and not isinstance(val_split, bool)
    is_fraction = isinstance(val_split, float) and 0 < val_split < 1
    n_val = val_split if is_count else round(n * val_split) if is_fraction else 0
    if not 0 < n_val < n:
        held = f"holds out {n_val} of the {n} samples" if is_fraction else "is out of range"
        raise ValueError(
            f"val_split={val_split!r} {held}: expected a fraction 0 < val_split < 1 of the {n} "
            f"samples (e.g. 0.1) or a whole count between 1 and {n - 1} (an integer, e.g. 2)"
        )
    order = np.random.default_rng([seed, n]).permutation(n)
    return sorted(order[n_val:].tolist()), sorted(order[:n_val].tolist())


def loader_images(loader: DataLoader) -> set[str]:
    """The image files ``loader`` reads (:meth:`SeededDataSet.image_files` of the samples of its
    :class:`SeededSampler`, or of all its samples); empty for a dataset that does not name them."""
    dataset = loader.dataset
    indices = getattr(loader.sampler, "indices", None)
    if not hasattr(dataset, "image_files"):
        return set()
    return dataset.image_files(range(len(dataset)) if indices is None else indices)


def warn_shared_images(train_loader: DataLoader, val_loader: DataLoader | None) -> int:
    """Log a warning when validation reads images that training reads too (the same files, e.g.
    a ``VOCBinary`` folder without split files, or a ``val_loader`` on the training folder);
    returns how many of the validation images are shared (0 without ``val_loader``)."""
    if val_loader is None:
        return 0
    val_images = loader_images(val_loader)
    shared = sorted(val_images & loader_images(train_loader))
    if shared:
        get_logger().warning(
            "validation reads %d of its %d images from the training images too (the same "
            "files, e.g. %s): its scores say how well the model fits images it trains on, not "
            "how it does on new ones. Give validation other images (another split or data_dir; "
            "VOCBinary: ImageSets/Segmentation/train.txt and val.txt list the images of each "
            "split) or hold some out with train_loader.args.val_split where the loader allows it",
            len(shared),
            len(val_images),
            shared[0],
        )
    return len(shared)


def _track_skipped(dataset: Dataset, indices: Sequence[int]) -> None:
    """Have a ``SeededDataSet`` record its skipped (unreadable) samples for the trainer, with
    replacements drawn from ``indices``, the loader's samples (see ``track_skipped``)."""
    if hasattr(dataset, "track_skipped"):
        dataset.track_skipped(indices)


def _worker_init(_: int) -> None:
    cv2.setNumThreads(0)  # one OpenCV thread per worker: the workers already run in parallel
    # SIGTERM / SIGHUP sent to the whole process group (a scheduler, torchrun, a terminal) are
    # for the main process, which ends the run cleanly. A worker killed by them would make the
    # main process fail at once with "DataLoader worker is killed by signal" (even inside a
    # checkpoint save); a worker that exits with status 0 does not, and it still ends when the
    # main process stops it (with SIGTERM). SIGINT: PyTorch's workers already exit quietly.
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _exit_quietly)


def _exit_quietly(signum: int, frame: object) -> None:
    """End a loader worker with status 0 (see ``_worker_init``)."""
    os._exit(0)


def _loader_kwargs(
    dataset: Dataset,
    indices: Sequence[int],
    batch_size: int,
    shuffle: bool,
    num_workers: int,
    seed: int,
    evaluation: bool,
) -> dict[str, Any]:
    sampler = SeededSampler(indices, shuffle, seed, get_rank(), get_world_size(), evaluation)
    return {
        "dataset": dataset,
        "batch_size": batch_size,
        "sampler": sampler,
        "num_workers": num_workers,
        "pin_memory": torch.cuda.is_available(),
        # no 1-image batches for BatchNorm (training shards have equal lengths under DDP)
        "drop_last": not evaluation and shuffle and len(sampler) > batch_size,
        "persistent_workers": num_workers > 0,
        "worker_init_fn": _worker_init,
        "generator": torch.Generator().manual_seed(seed),  # leaves the global torch RNG alone
    }


class BaseDataLoader(DataLoader):
    """Builds ``dataset_class(**dataset_args)`` and loads it with seeded, epoch-aware sampling.

    Subclasses only name their dataset: ``class DUTS(BaseDataLoader): dataset_class = DUTSDataset``.
    ``val_split`` holds out part of the dataset; ``split_validation()`` returns a loader over it
    that uses the deterministic validation transform. Under DDP each process loads its share
    (see :class:`SeededSampler`); ``evaluation`` (set by ``train.py`` for the validation loader)
    shards without padding, so each image is scored exactly once; ``normalisation`` and
    ``imagery`` (set by ``train.py`` from the config; see :mod:`utils.imagery`) are handed to the
    dataset, ``imagery`` only to one that reads rasters (``reads_rasters``; ValueError
    otherwise). A sample whose files cannot be
    read is replaced by the next readable one of the loader's samples and flagged in
    ``dataset.skipped`` (see ``SeededDataSet.track_skipped``) for the trainer to count.
    """

    dataset_class: type[Dataset]
    supports_val_split = True  # False where the dataset's items are not a list of images

    def __init__(
        self,
        batch_size: int,
        shuffle: bool = False,
        num_workers: int = 0,
        val_split: float = 0.0,
        seed: int = 0,
        evaluation: bool = False,
        normalisation: str = NORMALISATIONS[0],
        imagery: Imagery | None = None,
        **dataset_args: Any,
    ) -> None:
        check_normalisation(normalisation)
        if imagery is not None:
            if not getattr(self.dataset_class, "reads_rasters", False):
                raise ValueError(
                    f"the config's 'imagery' section (band selection and scaling of rasters) "
                    f"applies to the building tile loaders; {type(self).__name__} reads 8-bit RGB "
                    "images: remove 'imagery'"
                )
            dataset_args["imagery"] = imagery
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if val_split and not self.supports_val_split:
            raise ValueError(
                f"val_split is not supported by {type(self).__name__}: configure a val_loader "
                "on the validation split instead"
            )
        dataset = self.dataset_class(**dataset_args)
        dataset.normalisation = normalisation
        indices: list[int] = list(range(len(dataset)))
        self.val_indices: list[int] = []
        if val_split:
            indices, self.val_indices = split_indices(len(dataset), val_split, seed)
            dataset.subset = (
                f"{len(indices)} of {len(dataset)} ({len(self.val_indices)} held out for "
                f"validation by val_split={val_split})"
            )
        self._val_settings = (batch_size, num_workers, seed)
        _track_skipped(dataset, indices)
        super().__init__(
            **_loader_kwargs(dataset, indices, batch_size, shuffle, num_workers, seed, evaluation)
        )

    def split_validation(self) -> DataLoader | None:
        """Loader over the ``val_split`` images without augmentation, or None without a split."""
        if not self.val_indices:
            return None
        val_set = copy.copy(self.dataset)
        val_set.augment = False
        val_set.subset = (
            f"{len(self.val_indices)} of {len(val_set)} (held out from training by val_split)"
        )
        _track_skipped(val_set, self.val_indices)  # its own flags, not the training set's
        batch_size, num_workers, seed = self._val_settings
        return DataLoader(
            **_loader_kwargs(val_set, self.val_indices, batch_size, False, num_workers, seed, True)
        )
