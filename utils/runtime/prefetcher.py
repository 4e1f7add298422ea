"""DataPrefetcher: batches copied to the GPU on a side CUDA stream while the current step runs."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch

Batch = tuple[torch.Tensor, ...]


class DataPrefetcher:
    """Iterate ``loader`` with its batches (tuples of tensors) already on ``device``.

    On CUDA with ``enabled``, the copy of batch ``i + 1`` is issued on a side stream (from the
    pinned memory the loaders use when CUDA is available) before batch ``i`` is handed out, so
    it overlaps with step ``i``. The compute stream waits for the copy before using a batch, and
    each tensor is marked with ``record_stream`` so the caching allocator does not reuse its
    memory while the compute stream may still read it. Otherwise (CPU, or disabled) each batch is
    moved with ``.to(device, non_blocking=True)`` when it is needed: on the CPU, a pass-through.
    """

    def __init__(self, loader: Iterable[Batch], device: torch.device, enabled: bool = True) -> None:
        self.loader = loader
        self.device = device
        self.enabled = enabled and device.type == "cuda"

    def __len__(self) -> int:
        return len(self.loader)  # type: ignore[arg-type]

    @property
    def sampler(self) -> Any:
        return getattr(self.loader, "sampler", None)

    def __iter__(self) -> Iterator[Batch]:
        if not self.enabled:
            for batch in self.loader:
                yield tuple(t.to(self.device, non_blocking=True) for t in batch)
            return
        stream = torch.cuda.Stream(self.device)
        compute = torch.cuda.current_stream(self.device)
        batches = iter(self.loader)

        def copy_next() -> Batch | None:
            batch = next(batches, None)
            if batch is None:
                return None
            with torch.cuda.stream(stream):
                return tuple(t.to(self.device, non_blocking=True) for t in batch)

        upcoming = copy_next()
        while upcoming is not None:
            compute.wait_stream(stream)
            batch = upcoming
            for tensor in batch:
                tensor.record_stream(compute)
            upcoming = copy_next()
            yield batch
