"""The training loop: device, optimizer, scheduler, epochs, validation, monitor, checkpoints."""

from __future__ import annotations

import math
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from utils import config as cfg
from utils.io.atomic import remove_stale_temporaries, write_json
from utils.io.checkpoint import (
    CHECKPOINT_VERSION,
    check_state_dict,
    load_checkpoint,
    load_training_checkpoint,
    model_checkpoint,
    save_checkpoint,
)
from utils.io.run_dir import LAST_CHECKPOINT, MetricsLog, periodic_checkpoints
from utils.io.run_lock import signals_deferred
from utils.runtime.distributed import all_reduce_sum_, barrier
from utils.runtime.execution import Execution, prepare_model, unwrap
from utils.runtime.logs import format_duration, get_logger
from utils.runtime.seeding import rng_state, set_rng_state
from utils.training import LR_SCHEDULERS, OPTIMIZERS
from utils.training.train_step import TrainStep


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the run stops without saving."""


class BadFilesError(OSError):
    """More samples of an epoch could not be read than ``trainer.max_bad_files`` allows."""


TRAIN_KEYS = ("train_loss", "lr", "train_bad_files")
"""The keys of a metrics record that the training pass reports (the rest is validation's)."""


def skipped_flags(loader: DataLoader | None) -> torch.Tensor | None:
    """The per-sample ``skipped`` flags of a loader's dataset (``SeededDataSet.track_skipped``),
    or None where its dataset does not record skipped samples."""
    return getattr(getattr(loader, "dataset", None), "skipped", None)


class BaseTrainer(ABC):
    """Owns the epoch loop; subclasses implement ``_train_epoch`` and ``_valid_epoch``.

    ``_train_epoch(epoch)`` returns ``{"loss": float, "lr": float}`` and optionally
    ``"bad_files"``, the count of unreadable samples skipped (recorded as ``train_bad_files`` when
    not 0; see :meth:`_start_pass` and :meth:`_finish_pass`); ``_valid_epoch(epoch)`` returns
    ``{metric name: float}`` (and ``val_bad_files`` when not 0); ``higher_is_better`` names
    what validation reports, so the monitor is checked before training starts. ``execution``
    says where the run executes (see :mod:`utils.runtime.execution`); only its main process
    writes the config, metrics, TensorBoard and checkpoints, the others wait at a barrier while
    it saves.
    """

    higher_is_better: Mapping[str, bool]

    def __init__(
        self,
        model: nn.Module,
        loss: nn.Module,
        config: dict[str, Any],
        run_dir: Path,
        train_loader: DataLoader,
        val_loader: DataLoader | None = None,
        execution: Execution | None = None,
        resume: str | Path | None = None,
    ) -> None:
        self.config = config
        self.run_dir = Path(run_dir)
        self.logger = get_logger()
        trainer = config["trainer"]
        self.epochs: int = trainer["epochs"]
        self.save_period: int = trainer["save_period"]
        self.keep_last: int = trainer["keep_last"]
        self.val_per_epochs: int = trainer["val_per_epochs"]
        self.log_per_iter: int = trainer["log_per_iter"]
        self.early_stop: int = trainer["early_stop"]
        self.vis_samples: int = trainer["vis_samples"]
        self.max_bad_files: float = trainer["max_bad_files"]
        self.save_every_iters: int = trainer["save_every_iters"]
        self.print_metrics: list[str] = trainer["print_metrics"]
        self._epoch_seconds: list[float] = []  # the time of each epoch this process ran
        self.resume_iteration = 0  # training steps of start_epoch already done (mid-epoch resume)
        self.resume_partial: dict[str, float] = {}  # their summed loss and sample count
        self._named_bad: set[tuple[str, int]] = set()  # (pass, sample) already logged
        self.train_loader = train_loader
        self.val_loader = val_loader if trainer["val"] else None

        self.execution = execution or Execution(torch.device("cpu"))
        self.device = self.execution.device
        self.is_main = self.execution.is_main
        self.prefetch: bool = trainer["prefetch"]
        torch.backends.cudnn.benchmark = not trainer["deterministic"]
        if trainer["deterministic"]:
            torch.use_deterministic_algorithms(True, warn_only=True)
        self.model = prepare_model(model, self.execution, config)
        self.loss = loss.to(self.device)

        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = cfg.build(config, "optimizer", OPTIMIZERS, params)
        self.lr_scheduler = None
        if config["lr_scheduler"] is not None:
            total_iters = self.epochs * len(train_loader)
            self.lr_scheduler = cfg.build(
                config, "lr_scheduler", LR_SCHEDULERS, self.optimizer, total_iters=total_iters
            )
        self.train_step = TrainStep(
            self.model,
            self.loss,
            self.optimizer,
            self.device,
            amp=config["amp"],
            channels_last=config["channels_last"],
            clip_grad_norm=trainer["clip_grad_norm"],
        )

        self.higher_is_better = self.metric_directions()
        self.monitor_mode, self.monitor_metric = self._parse_monitor(trainer["monitor"])
        cfg.check_print_metrics(trainer, self.higher_is_better)
        self.monitor_best = -math.inf if self.monitor_mode == "max" else math.inf
        self.best_epoch: int | None = None  # the epoch that reached monitor_best
        self.not_improved = 0
        self.start_epoch = 1
        self.metrics_log = MetricsLog(self.run_dir / "metrics.jsonl")
        if self.is_main:
            stale = remove_stale_temporaries(self.run_dir)
            if stale:
                self.logger.info(
                    "removed %d temporary file(s) of interrupted saves: %s",
                    len(stale),
                    ", ".join(p.name for p in stale),
                )
        if resume is not None:
            self._resume(Path(resume))
        elif self.is_main:
            write_json(self.run_dir / "config.json", config)
        self.writer = None
        if trainer["tensorboard"] and self.is_main:
            from torch.utils.tensorboard import SummaryWriter

            # a resumed run drops the points after its position (steps are images seen)
            purge = (
                self._tb_step(self.start_epoch, self.resume_iteration) + 1
                if resume is not None
                else None
            )
            self.writer = SummaryWriter(log_dir=str(self.run_dir), purge_step=purge)

    def metric_directions(self) -> Mapping[str, bool]:
        """The metrics validation reports (and whether higher is better) for this run's data:
        ``higher_is_better``; a subclass adds names that depend on the validation data."""
        return self.higher_is_better

    def _parse_monitor(self, monitor: str) -> tuple[str, str | None]:
        if monitor == "off":
            return "off", None
        mode, metric = monitor.split()
        if self.val_loader is None:
            raise cfg.ConfigError(
                f"trainer.monitor is {monitor!r} but there is no validation (set val_loader or "
                'train_loader.args.val_split and trainer.val, or monitor "off")'
            )
        if metric not in self.higher_is_better:
            raise cfg.ConfigError(
                f"trainer.monitor: unknown metric {metric!r}; "
                f"validation reports {', '.join(self.higher_is_better)}"
            )
        if self.higher_is_better[metric] != (mode == "max"):
            better = "higher" if self.higher_is_better[metric] else "lower"
            right = "max" if self.higher_is_better[metric] else "min"
            self.logger.warning(
                "trainer.monitor %r keeps the epoch with the worst %s (%s is better): did you "
                "mean %r?", monitor, metric, better, f"{right} {metric}",
            )  # fmt: skip
        return mode, metric

    def _tb_step(self, epoch: int, iteration: int | None = None) -> int:
        """The TensorBoard step of every point: the training images seen, over every process,
        by the end of step ``iteration`` (counted from 1) of ``epoch``, or of the whole epoch.
        Unlike iterations, images do not depend on the number of processes or the batch size,
        so a run resumed in another mode continues its curves where they were."""
        sampler = getattr(self.train_loader, "sampler", None)
        per_epoch = len(getattr(sampler, "indices", None) or self.train_loader.dataset)
        if iteration is None:
            return epoch * per_epoch
        seen = iteration * self.train_loader.batch_size * self.execution.world_size
        return (epoch - 1) * per_epoch + min(seen, per_epoch)

    def _global_step(self, epoch: int, iteration: int) -> int:
        """Training steps done by the end of step ``iteration`` of ``epoch``."""
        return (epoch - 1) * len(self.train_loader) + iteration

    @abstractmethod
    def _train_epoch(self, epoch: int) -> dict[str, float]: ...

    @abstractmethod
    def _valid_epoch(self, epoch: int) -> dict[str, float]: ...

    def train(self) -> None:
        """Run the remaining epochs; stop early once the monitor stalls ``early_stop`` times."""
        try:
            self._train_epochs()
        finally:
            if self.writer is not None:
                self.writer.close()

    def _train_epochs(self) -> None:
        for epoch in range(self.start_epoch, self.epochs + 1):
            started = time.perf_counter()
            for loader in (self.train_loader, self.val_loader):
                if loader is not None and hasattr(loader.sampler, "set_epoch"):
                    loader.sampler.set_epoch(epoch)
            if epoch == self.start_epoch and self.resume_iteration:
                done = self.resume_iteration * self.train_loader.batch_size
                self.train_loader.sampler.set_epoch(epoch, start=done)
            train_log = self._train_epoch(epoch)
            self.resume_iteration, self.resume_partial = 0, {}
            record: dict[str, Any] = {
                "epoch": epoch,
                "train_loss": train_log["loss"],
                "lr": train_log["lr"],
            }
            if train_log.get("bad_files"):
                record["train_bad_files"] = train_log["bad_files"]
            validate = self.val_loader is not None and (
                epoch % self.val_per_epochs == 0 or epoch == self.epochs
            )
            if validate:
                record.update(self._valid_epoch(epoch))
            improved = validate and self._update_monitor(record)
            if self.is_main:
                self.metrics_log.append(record)
                self._log_epoch(record, improved, time.perf_counter() - started)
            if epoch % self.save_period == 0 or epoch == self.epochs or improved:
                if self.is_main:
                    self._save(
                        epoch,
                        periodic=epoch % self.save_period == 0 or epoch == self.epochs,
                        best=improved,
                    )
                barrier()  # the other processes wait until the checkpoint is complete
            if validate and self.early_stop and self.not_improved >= self.early_stop:
                self.logger.info(
                    "no improvement of %s in %d validations: stopping early",
                    self.monitor_metric,
                    self.early_stop,
                )
                break

    def _update_monitor(self, record: dict[str, Any]) -> bool:
        if self.monitor_metric is None:
            return False
        value = record[self.monitor_metric]
        better = (
            value > self.monitor_best if self.monitor_mode == "max" else value < self.monitor_best
        )
        if better:
            self.monitor_best = value
            self.best_epoch = record["epoch"]
            self.not_improved = 0
        else:
            self.not_improved += 1
        return better

    def _log_epoch(self, record: dict[str, Any], improved: bool, seconds: float) -> None:
        """Log the epoch line (:meth:`_epoch_line`) of an epoch that took ``seconds``; every
        value of ``record`` goes to TensorBoard. Unreadable samples skipped in the epoch (see
        :meth:`_finish_pass`) are counted in a warning line after it."""
        self._epoch_seconds.append(seconds)
        self.logger.info("%s", self._epoch_line(record, improved))
        counts = {kind: record.get(f"{kind}_bad_files") for kind in ("train", "val")}
        if any(counts.values()):
            counted = ", ".join(f"{kind} {n}" for kind, n in counts.items() if n)
            self.logger.warning(
                "epoch %d: skipped unreadable samples: %s", record["epoch"], counted
            )
        if self.writer is not None:
            for key, value in record.items():
                if key != "epoch":
                    group = "epoch" if key in TRAIN_KEYS else "val"
                    self.writer.add_scalar(f"{group}/{key}", value, self._tb_step(record["epoch"]))
            self.writer.flush()  # a killed run keeps the events of its finished epochs

    def _epoch_line(self, record: dict[str, Any], improved: bool) -> str:
        """One short line: the epoch, training loss and lr, the monitored metric with the best
        value so far, the other ``trainer.print_metrics`` validation reported, the epoch's time
        and the ETA of the run (the mean epoch time so far times the epochs left). The whole
        record is in ``metrics.jsonl`` and TensorBoard."""
        epoch = record["epoch"]
        parts = [
            f"epoch {epoch}/{self.epochs}",
            f"loss {record['train_loss']:.4f}",
            f"lr {record['lr']:.3g}",
        ]
        for name in dict.fromkeys([self.monitor_metric, *self.print_metrics]):
            if name in record:
                best = self._best_note(improved) if name == self.monitor_metric else ""
                parts.append(f"{name} {record[name]:.4f}{best}")
        parts.append(f"time {format_duration(self._epoch_seconds[-1])}")
        if epoch < self.epochs:
            mean = sum(self._epoch_seconds) / len(self._epoch_seconds)
            parts.append(f"ETA {format_duration(mean * (self.epochs - epoch))}")
        return "  ".join(parts)

    def _best_note(self, improved: bool) -> str:
        """`` (new best)``, or `` (best 0.9290, epoch 3)``: the monitor's best value so far."""
        if improved:
            return " (new best)"
        where = "" if self.best_epoch is None else f", epoch {self.best_epoch}"
        return f" (best {self.monitor_best:.4f}{where})"

    def _checkpoint(self, epoch: int) -> dict[str, Any]:
        scaler = self.train_step.scaler
        return {
            "arch": self.config["arch"]["type"],
            "epoch": epoch,
            "state_dict": unwrap(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "lr_scheduler": None if self.lr_scheduler is None else self.lr_scheduler.state_dict(),
            "scaler": scaler.state_dict() if scaler.is_enabled() else None,
            "monitor_best": self.monitor_best,
            "best_epoch": self.best_epoch,
            "not_improved": self.not_improved,
            "config": self.config,
            "execution": self.execution.record(),  # how this run was launched: a record only
            "rng": rng_state(),
            "version": CHECKPOINT_VERSION,
        }

    def _save(self, epoch: int, periodic: bool, best: bool) -> None:
        """Save ``best_model.pth`` (a model checkpoint: weights, config, epoch and score, see
        :func:`~utils.io.checkpoint.model_checkpoint`) first, then ``checkpoint-epochN.pth`` (the
        whole training state), so that no checkpoint records a best epoch that
        ``best_model.pth`` lacks, and remove the periodic checkpoints beyond ``keep_last``; a
        termination signal waits for the end of the sequence."""
        state = self._checkpoint(epoch)
        with signals_deferred():
            if best:
                save_checkpoint(model_checkpoint(state), self.run_dir / "best_model.pth")
                self.logger.info(
                    "saved best_model.pth (%s %.4f)", self.monitor_metric, self.monitor_best
                )
            if periodic:
                path = self.run_dir / f"checkpoint-epoch{epoch}.pth"
                save_checkpoint(state, path)
                self.logger.info("saved %s", path)
                for old in periodic_checkpoints(self.run_dir)[: -self.keep_last]:
                    old.unlink()

    def _save_iteration(self, epoch: int, iteration: int, partial: dict[str, float]) -> None:
        """Write ``checkpoint-last.pth`` after step ``iteration`` of ``epoch``: the training state
        at that step, ``epoch`` - 1 epochs complete, and ``partial`` (the epoch's summed loss
        and sample count so far, over every process)."""
        state = self._checkpoint(epoch - 1)
        state["iteration"], state["partial"] = iteration, partial
        with signals_deferred():
            save_checkpoint(state, self.run_dir / LAST_CHECKPOINT)

    def _resume(self, path: Path) -> None:
        state = load_training_checkpoint(path)
        model = unwrap(self.model)
        if state.get("arch") != self.config["arch"]["type"]:
            raise ValueError(
                f"checkpoint {path} is for arch {state.get('arch')!r}, but the config builds "
                f"{self.config['arch']['type']!r}"
            )
        saved = state["state_dict"]
        what = f"checkpoint {path} does not fit the configured model {self.config['arch']}"
        check_state_dict(model.state_dict(), saved, what)
        model.load_state_dict(saved)
        self.optimizer.load_state_dict(state["optimizer"])
        if self.lr_scheduler is not None and state["lr_scheduler"] is not None:
            change = self.lr_scheduler.resume(state["lr_scheduler"])  # the epochs may differ
            if change:
                self.logger.info("%s", change)
        if self.train_step.scaler.is_enabled() and state.get("scaler"):
            self.train_step.scaler.load_state_dict(state["scaler"])
        self.monitor_best = state["monitor_best"]
        self.not_improved = state["not_improved"]
        self.best_epoch = state.get("best_epoch")
        self._report_config_changes(state.get("config") or {})
        self.start_epoch = state["epoch"] + 1
        self.resume_iteration = int(state.get("iteration") or 0)
        self.resume_partial = dict(state.get("partial") or {})
        set_rng_state(state["rng"])
        if self.is_main:
            for number in self.metrics_log.truncate_after(state["epoch"]):
                self.logger.warning(
                    "%s line %d is torn or unreadable (an interrupted write): dropped",
                    self.metrics_log.path,
                    number,
                )
            write_json(self.run_dir / "config.json", self.config)
            if self.best_epoch is None and self.monitor_metric is not None:  # an older checkpoint
                self.best_epoch = self.metrics_log.first_epoch_with(
                    self.monitor_metric, self.monitor_best
                )
            self._check_best_model(path)
        if self.start_epoch > self.epochs and not self.resume_iteration:
            self.logger.warning(
                "resumed from %s: the run is complete (epoch %d, trainer.epochs %d): nothing to "
                "train; to train on, raise trainer.epochs (e.g. --opt trainer.epochs=%d)",
                path,
                state["epoch"],
                self.epochs,
                state["epoch"] + 10,
            )
            return
        self.logger.info(
            "resumed from %s: continuing at epoch %d%s",
            path,
            self.start_epoch,
            f", after its step {self.resume_iteration}" if self.resume_iteration else "",
        )

    def _check_best_model(self, resumed: Path) -> None:
        """Make ``best_model.pth`` hold the best epoch that the resumed checkpoint records
        (``best_epoch``): after a crash, or a resume from an earlier checkpoint, it may hold
        another epoch. It is restored (as a model checkpoint) from that epoch's periodic
        checkpoint, with a log line; a warning says so when no checkpoint holds that epoch."""
        if self.best_epoch is None:
            return
        best = self.run_dir / "best_model.pth"
        try:
            held = load_checkpoint(best).get("epoch") if best.exists() else None
        except ValueError:  # unreadable: replaced below
            held = None
        if held == self.best_epoch:
            return
        source = self.run_dir / f"checkpoint-epoch{self.best_epoch}.pth"
        found = f"best_model.pth holds epoch {held}" if held else "best_model.pth is missing"
        recorded = (
            f"{resumed.name} records epoch {self.best_epoch} as the best "
            f"({self.monitor_metric} {self.monitor_best:.4f})"
        )
        if not source.is_file():
            self.logger.warning(
                "%s but %s, whose weights no checkpoint holds: best_model.pth stays as it is "
                "until the run improves on it",
                found,
                recorded,
            )
            return
        if held is not None and held >= self.start_epoch:  # from the epochs now redone
            kept = self.run_dir / f"best_model-epoch{held}.pth"
            os.replace(best, kept)
            self.logger.warning(
                "best_model.pth of epoch %d comes after the resumed checkpoint: kept as %s",
                held,
                kept.name,
            )
        save_checkpoint(model_checkpoint(load_checkpoint(source)), best)
        self.logger.warning("%s but %s: restored best_model.pth from %s", found, recorded, source)

    def _report_config_changes(self, stored: dict[str, Any]) -> None:
        """Log each config value that differs from the checkpoint's; a changed monitor starts
        its best value afresh (comparing a new metric with the old one's best means nothing)."""
        for change in cfg.config_changes(stored, self.config):
            self.logger.info("config changed on resume: %s", change)
        old_monitor = stored.get("trainer", {}).get("monitor", self.config["trainer"]["monitor"])
        if old_monitor != self.config["trainer"]["monitor"]:
            self.monitor_best = -math.inf if self.monitor_mode == "max" else math.inf
            self.best_epoch = None
            self.not_improved = 0
            self.logger.info(
                "trainer.monitor changed from %r: the best value and the early-stop count start "
                "afresh",
                old_monitor,
            )

    def _start_pass(self, loader: DataLoader | None) -> torch.Tensor | None:
        """Clear the skipped flags of ``loader``'s dataset before a pass over it; returns them."""
        flags = skipped_flags(loader)
        if flags is not None:
            flags.zero_()
        return flags

    def _finish_pass(self, kind: str, loader: DataLoader, samples: int, epoch: int) -> int:
        """The number of samples skipped (unreadable) in this ``kind`` pass ("train" or "val"),
        summed over the processes. Logs each skipped sample the first time the run skips it
        (this process's; the main process logs) and raises :class:`BadFilesError` on every
        process when the count is over ``trainer.max_bad_files`` (a fraction of the ``samples``
        read, summed over the processes, or a count)."""
        flags = skipped_flags(loader)
        if flags is None:
            return 0
        local = flags.nonzero().flatten().tolist()
        totals = torch.tensor([len(local), samples], dtype=torch.float64, device=self.device)
        all_reduce_sum_([totals])
        count, total = (int(v) for v in totals.tolist())
        dataset = loader.dataset
        reasons: dict[int, str] = {}
        for index in local:
            if (kind, index) not in self._named_bad:
                self._named_bad.add((kind, index))
                reasons[index] = dataset.skip_reason(index)
                self.logger.warning(
                    "%s epoch %d: skipped sample %d, which cannot be read (%s): %s",
                    kind,
                    epoch,
                    index,
                    "replaced by the next readable sample"
                    if kind == "train"
                    else "left out of the metrics",
                    reasons[index],
                )
        limit = self._bad_files_limit(total)
        if count > limit:
            first = [reasons.get(i) or dataset.skip_reason(i) for i in local[:3]]
            raise BadFilesError(
                f"{count} of {total} {kind} samples of epoch {epoch} cannot be read, more than "
                f"trainer.max_bad_files={self.max_bad_files} allows (at most "
                f"{limit}); first: {'; '.join(first)}. Fix or remove these files, or raise "
                "trainer.max_bad_files"
            )
        return count

    def _bad_files_limit(self, samples: int) -> int:
        """How many unreadable samples a pass over ``samples`` may skip: ``max_bad_files`` as a
        count (>= 1), or as a fraction of the samples rounded down but at least 1 (0: none)."""
        if self.max_bad_files >= 1:
            return int(self.max_bad_files)
        if self.max_bad_files > 0:
            return max(1, math.floor(self.max_bad_files * samples))
        return 0

    def _check_finite(self, first_bad_step: torch.Tensor, epoch: int) -> None:
        """Stop (on every process) if any process saw a NaN or infinite loss.

        ``first_bad_step`` holds this process's first such step of the epoch, or -1.
        """
        flag = (first_bad_step >= 0).to(torch.float64).reshape(1)
        all_reduce_sum_([flag])
        if flag.item() > 0:
            step = int(first_bad_step)
            where = f"step {step}" if step >= 0 else "another process's step"
            raise NonFiniteLossError(
                f"the training loss became NaN or infinite in epoch {epoch} ({where}): stopping "
                f"without saving; the checkpoints already in {self.run_dir} (if any) are "
                "untouched. Lower the learning rate, clip gradients (trainer.clip_grad_norm) or "
                "train without fp16 (amp 'bf16' or 'off')"
            )
