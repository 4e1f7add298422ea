"""Trainer for salient object detection: one training epoch and one validation epoch."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from base.base_trainer import BaseTrainer
from utils.metrics import SODMetrics
from utils.runtime.distributed import all_reduce_sum_, broadcast_buffers_
from utils.runtime.execution import unwrap
from utils.runtime.prefetcher import DataPrefetcher
from utils.training.tensorboard import comparison_grid

TB_PR_POINTS = 127  # the most points TensorBoard's PR-curve summary stores


def _kept(flags: torch.Tensor, keys: list[Any]) -> torch.Tensor | None:
    """Which samples of a batch (its sampler ``keys``: ``(index, seed, epoch)`` or indices) were
    read, as a bool tensor, by their ``skipped`` flags; None when all were. A worker sets a
    sample's flag before it hands over the batch, so the flags are complete when it arrives."""
    indices = [key[0] if isinstance(key, tuple) else key for key in keys]
    skipped = flags[indices]
    return None if not skipped.any() else skipped == 0


class Trainer(BaseTrainer):
    """Deep-supervised U2Net training; validation scores the fused probability map."""

    higher_is_better = SODMetrics.HIGHER_IS_BETTER

    def _progress(self, loader: DataLoader, kind: str, epoch: int) -> tqdm:
        """The loader's batches on the device (prefetched on CUDA), in a transient tqdm bar:
        drawn by the main process only, and hidden when the output is not a terminal."""
        batches = DataPrefetcher(loader, self.device, enabled=self.prefetch)
        desc = f"{kind} {epoch}/{self.epochs}"
        disable = None if self.is_main else True
        return tqdm(batches, desc=desc, leave=False, dynamic_ncols=True, disable=disable)

    def _train_epoch(self, epoch: int) -> dict[str, float]:
        self.model.train()
        self._start_pass(self.train_loader)
        # a run resumed mid-epoch: its steps done so far, their loss and samples (on rank 0)
        done = self.resume_iteration
        partial = self.resume_partial if self.is_main else {}
        loss_sum = torch.tensor(partial.get("loss_sum", 0.0), dtype=torch.float64)
        loss_sum = loss_sum.to(self.device)
        first_bad = torch.full((), -1, dtype=torch.int64, device=self.device)
        seen = int(partial.get("seen", 0))
        steps = len(self.train_loader)
        start = time.perf_counter()
        bar = self._progress(self.train_loader, "train", epoch)
        for i, (images, masks) in enumerate(bar, start=done):
            loss = self.train_step(images, masks)
            if self.lr_scheduler is not None:
                self.lr_scheduler.step()
            # no host sync per step: the first non-finite step is recorded on the device
            first_bad = torch.where((first_bad < 0) & ~loss.isfinite(), i + 1, first_bad)
            loss_sum += loss * images.shape[0]
            seen += images.shape[0]
            if (i + 1) % self.log_per_iter == 0 or i + 1 == steps:
                self._check_finite(first_bad, epoch)
                lr = self.optimizer.param_groups[0]["lr"]
                loss_value = loss.item()
                bar.set_postfix(
                    loss=f"{loss_value:.4f}",
                    lr=f"{lr:.3g}",
                    img_s=f"{seen / (time.perf_counter() - start):.1f}",
                )
                if self.writer is not None:
                    step = self._tb_step(epoch, i + 1)
                    self.writer.add_scalar("train/loss", loss_value, step)
                    self.writer.add_scalar("train/lr", lr, step)
            if self.save_every_iters and self._tb_step(epoch, i + 1) % self.save_every_iters == 0:
                self._save_position(epoch, i + 1, loss_sum, seen)
        totals = [loss_sum, torch.tensor(float(seen), dtype=torch.float64, device=self.device)]
        all_reduce_sum_(totals)  # the mean over every process's images
        return {
            "loss": (totals[0] / totals[1].clamp(min=1)).item(),
            "lr": self.optimizer.param_groups[0]["lr"],
            "bad_files": self._finish_pass("train", self.train_loader, seen, epoch),
        }

    def _save_position(self, epoch: int, iteration: int, loss_sum: torch.Tensor, seen: int) -> None:
        """``checkpoint-last.pth`` after step ``iteration`` of ``epoch`` (every process sums its
        share of the epoch's loss and samples; the main process writes)."""
        totals = [
            loss_sum.clone(),
            torch.tensor(float(seen), dtype=torch.float64, device=self.device),
        ]
        all_reduce_sum_(totals)
        if self.is_main:
            partial = {"loss_sum": totals[0].item(), "seen": int(totals[1].item())}
            self._save_iteration(epoch, iteration, partial)

    @torch.no_grad()
    def _valid_epoch(self, epoch: int) -> dict[str, float]:
        """Score the validation images in float32 (whatever ``amp``) with the bare model: under
        DDP each process scores its share with rank 0's BatchNorm statistics and the metric
        state is summed over processes. Samples that cannot be read are left out of the metrics
        (their replacements are not scored) and counted in ``val_bad_files``."""
        model = unwrap(self.model).eval()
        broadcast_buffers_(model)  # the BatchNorm statistics rank 0 saves in its checkpoint
        metrics = SODMetrics(self.device)
        shown: list[tuple[torch.Tensor, ...]] = []
        flags = self._start_pass(self.val_loader)
        batch_sampler = getattr(self.val_loader, "batch_sampler", None)
        batch_keys = None if flags is None or batch_sampler is None else iter(batch_sampler)
        samples = 0
        for images, masks in self._progress(self.val_loader, "val", epoch):
            samples += images.shape[0]
            if batch_keys is not None:
                keep = _kept(flags, next(batch_keys))
                if keep is not None:
                    if not keep.any():
                        continue
                    keep = keep.to(images.device)
                    images, masks = images[keep], masks[keep]
            probs = model(images.contiguous(memory_format=self.train_step.memory_format))
            metrics.update(probs, masks)
            if self.writer is not None and sum(len(t[0]) for t in shown) < self.vis_samples:
                shown.append((images, masks, probs))
        bad_files = self._finish_pass("val", self.val_loader, samples, epoch)
        metrics.all_reduce()
        if self.writer is not None:
            self._log_validation(epoch, metrics, shown)
        scores = metrics.compute()
        if bad_files:
            scores["val_bad_files"] = bad_files
        return scores

    def _log_validation(
        self, epoch: int, metrics: SODMetrics, shown: list[tuple[torch.Tensor, ...]]
    ) -> None:
        """TensorBoard: the dataset PR curve and the input | ground truth | prediction grid."""
        curves = metrics.curves()  # index i is threshold 255 - i; TensorBoard wants ascending
        points = np.round(np.linspace(255, 0, TB_PR_POINTS)).astype(int)
        zeros = np.zeros(TB_PR_POINTS)  # the curves are means over images, not pixel counts
        self.writer.add_pr_curve_raw(
            "val/pr_curve", zeros, zeros, zeros, zeros, curves["precision"][points],
            curves["recall"][points], global_step=self._tb_step(epoch),
            num_thresholds=TB_PR_POINTS,
        )  # fmt: skip
        if shown:
            parts = (torch.cat(p)[: self.vis_samples] for p in zip(*shown, strict=True))
            self.writer.add_image(
                "val/input_gt_pred", comparison_grid(*parts), self._tb_step(epoch)
            )
