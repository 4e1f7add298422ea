"""Trainer for salient object detection: one training epoch and one validation epoch."""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from base.base_trainer import BaseTrainer
from utils.io.run_dir import LAST_CHECKPOINT
from utils.io.run_lock import Terminated, signals_deferred
from utils.metrics import SODMetrics, with_defaults
from utils.metrics.groups import TileScores, WithGroups, base_metric
from utils.metrics.sod import all_reduce_arrays
from utils.runtime.distributed import all_reduce_sum_, broadcast_buffers_
from utils.runtime.execution import unwrap
from utils.runtime.logs import format_duration, interactive_console
from utils.runtime.prefetcher import DataPrefetcher
from utils.training.tensorboard import comparison_grid

TB_PR_POINTS = 127  # the most points TensorBoard's PR-curve summary stores


def _kept(flags: torch.Tensor, keys: list[Any]) -> torch.Tensor | None:
    """Which samples of a batch (its sampler ``keys``: ``(index, seed, epoch)`` or indices) were
    read, as a bool tensor, by their ``skipped`` flags; None when all were. A worker sets a
    sample's flag before it hands over the batch, so the flags are complete when it arrives."""
    skipped = flags[_indices(keys)]
    return None if not skipped.any() else skipped == 0


def _indices(keys: list[Any]) -> list[int]:
    """The sample indices of a batch's sampler ``keys`` (``(index, seed, epoch)`` or indices)."""
    return [key[0] if isinstance(key, tuple) else key for key in keys]


def tile_scores(loader: DataLoader) -> TileScores | None:
    """Per-tile and per-group building scores for a validation loader whose dataset knows the
    tile of each sample (``tile_of``, ``tile_names``, ``tile_groups``: building tiles), else
    None."""
    dataset = loader.dataset
    if not hasattr(dataset, "tile_of") or getattr(loader, "batch_sampler", None) is None:
        return None
    return TileScores(dataset.tile_names(), dataset.tile_groups())


@dataclass
class EpochTotals:
    """The running totals of a training epoch on this process: summed loss and samples, the
    first step whose loss was not finite (-1: none; kept on the device, no sync per step), the
    steps done, the start time (``time.perf_counter``), and the samples and steps that a
    mid-epoch resume started from (done before ``start``)."""

    loss_sum: torch.Tensor
    seen: int
    first_bad: torch.Tensor
    done: int
    start: float
    resumed_seen: int = 0
    resumed_done: int = 0

    def add(self, loss: torch.Tensor, samples: int) -> None:
        """Count one more step of ``samples`` samples and its (detached) mean ``loss``."""
        self.done += 1
        bad = (self.first_bad < 0) & ~loss.isfinite()
        self.first_bad = torch.where(bad, self.done, self.first_bad)
        self.loss_sum += loss * samples
        self.seen += samples

    def partial(self) -> dict[str, float]:
        """This process's loss sum and sample count, for ``checkpoint-last.pth``."""
        return {"loss_sum": self.loss_sum.item(), "seen": self.seen}

    def summed(self) -> dict[str, float]:
        """The loss sum and sample count of every process (a collective: all must call it)."""
        totals = [self.loss_sum.clone(), torch.tensor(float(self.seen), dtype=torch.float64)]
        totals[1] = totals[1].to(self.loss_sum.device)
        all_reduce_sum_(totals)
        return {"loss_sum": totals[0].item(), "seen": int(totals[1].item())}


class Trainer(BaseTrainer):
    """Deep-supervised U2Net training; validation scores the fused probability map."""

    higher_is_better = SODMetrics.HIGHER_IS_BETTER

    def metric_directions(self) -> WithGroups:
        """The SOD and building metrics, and for building tiles their per-tile and per-group
        names (``IoU/austin``, ``IoU/austin3``: :func:`tile_scores`), so that
        ``trainer.monitor`` and ``trainer.print_metrics`` may name them."""
        dataset = getattr(self.val_loader, "dataset", None)
        if self.val_loader is None or not hasattr(dataset, "tile_of"):
            return WithGroups(self.higher_is_better, places=())
        groups = [group for group in dict.fromkeys(dataset.tile_groups()) if group is not None]
        places = [*dataset.tile_names(), *groups]
        return WithGroups(self.higher_is_better, places, groups)

    def _progress(self, loader: DataLoader, kind: str, epoch: int) -> tqdm:
        """The loader's batches on the device (prefetched on CUDA), in a transient tqdm bar:
        drawn by the main process only, when stdout and stderr are terminals (else training
        logs a progress line instead, see :meth:`_report_progress`)."""
        batches = DataPrefetcher(loader, self.device, enabled=self.prefetch)
        desc = f"{kind} {epoch}/{self.epochs}"
        disable = not (self.is_main and interactive_console())
        return tqdm(batches, desc=desc, leave=False, dynamic_ncols=True, disable=disable)

    def _train_epoch(self, epoch: int) -> dict[str, float]:
        """One training epoch (the rest of it after a mid-epoch resume). With
        ``save_every_iters``, a termination signal lets the current step finish, the main
        process writes ``checkpoint-last.pth`` at that position, and then the run ends."""
        self.model.train()
        self._start_pass(self.train_loader)
        totals = self._epoch_totals()
        bar = self._progress(self.train_loader, "train", epoch)
        guard = signals_deferred if self.save_every_iters else nullcontext
        try:
            for images, masks in bar:
                with guard():
                    loss = self.train_step(images, masks)
                    if self.lr_scheduler is not None:
                        self.lr_scheduler.step()
                    totals.add(loss, images.shape[0])
                self._after_step(epoch, loss, totals, bar)
        except Terminated:
            if self.save_every_iters and self.is_main and totals.done > self.resume_iteration:
                self._save_iteration(epoch, totals.done, totals.partial())
                self.logger.info(
                    "saved %s after step %d of epoch %d", LAST_CHECKPOINT, totals.done, epoch
                )
            raise
        summed = totals.summed()  # the mean over every process's images
        return {
            "loss": summed["loss_sum"] / max(summed["seen"], 1),
            "lr": self.optimizer.param_groups[0]["lr"],
            "bad_files": self._finish_pass("train", self.train_loader, totals.seen, epoch),
        }

    def _epoch_totals(self) -> EpochTotals:
        """The running totals of a new epoch, or those of the resumed one's steps done (their
        loss and samples summed over every process, held by the main process)."""
        partial = self.resume_partial if self.is_main else {}
        loss_sum = torch.tensor(partial.get("loss_sum", 0.0), dtype=torch.float64)
        seen = int(partial.get("seen", 0))
        return EpochTotals(
            loss_sum=loss_sum.to(self.device),
            seen=seen,
            first_bad=torch.full((), -1, dtype=torch.int64, device=self.device),
            done=self.resume_iteration,
            start=time.perf_counter(),
            resumed_seen=seen,
            resumed_done=self.resume_iteration,
        )

    def _after_step(self, epoch: int, loss: torch.Tensor, totals: EpochTotals, bar: tqdm) -> None:
        """Every ``log_per_iter`` steps (and at the end): the finite-loss check and the progress
        report; every ``save_every_iters`` steps: ``checkpoint-last.pth``."""
        step = totals.done
        if step % self.log_per_iter == 0 or step == len(self.train_loader):
            self._check_finite(totals.first_bad, epoch)
            self._report_progress(epoch, loss.item(), totals, bar)
        if self.save_every_iters and self._global_step(epoch, step) % self.save_every_iters == 0:
            summed = totals.summed()  # every process's share of the epoch so far
            if self.is_main:
                self._save_iteration(epoch, step, summed)

    def _report_progress(
        self, epoch: int, loss_value: float, totals: EpochTotals, bar: tqdm
    ) -> None:
        """The step's loss, the lr and the images per second (of every process, since the epoch
        started or resumed) on the progress bar, or, when the bar is hidden (the output is not a
        terminal: nohup, SLURM, a pipe), in a log line of the main process with the ETA of the
        epoch's training; and the loss and lr to TensorBoard."""
        step, steps = totals.done, len(self.train_loader)
        lr = self.optimizer.param_groups[0]["lr"]
        elapsed = max(time.perf_counter() - totals.start, 1e-9)
        rate = (totals.seen - totals.resumed_seen) * self.execution.world_size / elapsed
        if not bar.disable:
            bar.set_postfix(loss=f"{loss_value:.4f}", lr=f"{lr:.3g}", img_s=f"{rate:.1f}")
        elif self.is_main:
            left = (steps - step) * elapsed / max(step - totals.resumed_done, 1)
            self.logger.info(
                "train %d/%d  iter %d/%d  loss %.4f  lr %.3g  %.1f img/s  epoch ETA %s",
                epoch, self.epochs, step, steps, loss_value, lr, rate, format_duration(left),
            )  # fmt: skip
        if self.writer is not None:
            self.writer.add_scalar("train/loss", loss_value, self._tb_step(epoch, step))
            self.writer.add_scalar("train/lr", lr, self._tb_step(epoch, step))

    @torch.no_grad()
    def _valid_epoch(self, epoch: int) -> dict[str, float]:
        """Score the validation images in float32 (whatever ``amp``) with the bare model, on the
        default metrics plus the monitored and ``trainer.print_metrics`` ones: under
        DDP each process scores its share with rank 0's BatchNorm statistics and the metric
        state is summed over processes. Samples that cannot be read are left out of the metrics
        (their replacements are not scored) and counted in ``val_bad_files``. Building tiles
        are also scored per tile and per group (:func:`tile_scores`): ``IoU/austin``, ..."""
        model = unwrap(self.model).eval()
        broadcast_buffers_(model)  # the BatchNorm statistics rank 0 saves in its checkpoint
        shown = [self.monitor_metric, *self.print_metrics]
        names = with_defaults(*(name and base_metric(name) for name in shown))
        metrics = SODMetrics(self.device, metrics=names)
        tiles = tile_scores(self.val_loader)
        shown: list[tuple[torch.Tensor, ...]] = []
        flags = self._start_pass(self.val_loader)
        keyed = flags is not None or tiles is not None
        batch_keys = iter(self.val_loader.batch_sampler) if keyed else None
        samples = 0
        for images, masks in self._progress(self.val_loader, "val", epoch):
            samples += images.shape[0]
            keys = _indices(next(batch_keys)) if batch_keys is not None else []
            keep = None if flags is None else _kept(flags, keys)
            if keep is not None:
                if not keep.any():
                    continue
                keys = [key for key, kept in zip(keys, keep.tolist(), strict=True) if kept]
                keep = keep.to(images.device)
                images, masks = images[keep], masks[keep]
            probs = model(images.contiguous(memory_format=self.train_step.memory_format))
            metrics.update(probs, masks)
            if tiles is not None:
                tile_ids = [self.val_loader.dataset.tile_of(key) for key in keys]
                tiles.add(np.array(tile_ids), metrics.confusion(probs, masks))
            if self.writer is not None and sum(len(t[0]) for t in shown) < self.vis_samples:
                shown.append((images, masks, probs))
        bad_files = self._finish_pass("val", self.val_loader, samples, epoch)
        metrics.all_reduce()
        if self.writer is not None:
            self._log_validation(epoch, metrics, shown)
        scores = metrics.compute()
        if tiles is not None:
            all_reduce_arrays(tiles.state_arrays(), self.device)
            scores.update(tiles.compute())
            if tiles.table():
                self.logger.info("epoch %d, validation per group:\n%s", epoch, tiles.table())
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
