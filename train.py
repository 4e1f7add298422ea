"""Train U2Net from a JSON config: ``python train.py -c config.json``; ``-r CHECKPOINT`` resumes."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

from utils.runtime.threads import apply_training_threads, threads_option_error, wait_policy

os.environ.update(wait_policy())  # before torch is imported: OpenMP reads it when it loads

from base.base_dataloader import warn_shared_images
from base.base_trainer import NonFiniteLossError
from utils import config as cfg
from utils.imagery import Imagery
from utils.io.checkpoint import load_training_checkpoint
from utils.io.run_dir import (
    has_results,
    new_run_dir,
    newest_checkpoint,
    remove_run_dir,
    run_dirs,
)
from utils.io.run_lock import RunLock, RunLockedError, termination_signals
from utils.metrics import HIGHER_IS_BETTER
from utils.metrics.groups import WithGroups
from utils.runtime.cpu_memory import keep_freed_memory
from utils.runtime.distributed import (
    LaunchError,
    broadcast_object,
    cleanup,
    collective_timeouts,
    is_main_process,
)
from utils.runtime.execution import Execution, setup_execution
from utils.runtime.logs import close_log_file, get_logger, log_to_file, setup_logging
from utils.runtime.seeding import seed_everything

EXPECTED_ERRORS = (
    cfg.ConfigError,
    ValueError,
    OSError,
    LaunchError,
    NonFiniteLossError,
    RunLockedError,
)
"""The errors that end a run with a message (``error: ...``) and no traceback."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "-c",
        "--config",
        help="JSON config file (with -r: values that override the checkpoint's stored config)",
    )
    parser.add_argument(
        "-r",
        "--resume",
        help="checkpoint to continue from, in its run folder; 'auto': the newest checkpoint of "
        "the config's runs (or of --run-dir), else a new run",
    )
    parser.add_argument("--run-dir", help="with -r auto: the run folder to continue")
    parser.add_argument(
        "-d",
        "--device",
        default="auto",
        help="auto (default: as the config's n_gpu and distributed.mode say), cpu, cuda, or "
        "GPU ids such as 0 or 0,1 (several ids: DataParallel); not used under DDP",
    )
    parser.add_argument(
        "--opt",
        nargs="+",
        default=[],
        metavar="KEY.PATH=VALUE",
        help="override config values, e.g. trainer.epochs=5 "
        "train_loader.args.batch_size=4 (values are JSON)",
    )
    parser.add_argument("--seed", type=int, help="random seed (overrides the config's 'seed')")
    parser.add_argument(
        "--threads",
        type=int,
        help="CPU cores to train on (overrides the config's 'threads', as --opt threads=N, "
        "which wins over it; 0: every usable core; under torchrun the processes of a node "
        "share them)",
    )
    args = parser.parse_args(argv)
    if threads_option_error(args.threads):
        parser.error(threads_option_error(args.threads))
    if not args.config and not args.resume:
        parser.error("give a config with -c CONFIG, or a checkpoint to resume with -r CHECKPOINT")
    if args.resume == "auto" and not (args.config or args.run_dir):
        parser.error("-r auto needs -c CONFIG (its save_dir and name) or --run-dir RUN_FOLDER")
    if args.run_dir and args.resume != "auto":
        parser.error("--run-dir goes with -r auto")
    return args


def registries() -> cfg.Registries:
    """The classes each built config section may name (imported here, late: --help stays fast)."""
    import dataloaders
    import models
    from utils.training import LOSSES, LR_SCHEDULERS, OPTIMIZERS

    loaders = cfg.classes_in(dataloaders)
    return {
        "arch": cfg.classes_in(models),
        "train_loader": loaders,
        "val_loader": loaders,
        "loss": LOSSES,
        "optimizer": OPTIMIZERS,
        "lr_scheduler": LR_SCHEDULERS,
    }


def resolve_config(args: argparse.Namespace, known: cfg.Registries) -> dict[str, Any]:
    """The config of the run: stored (resume) <- -c file <- --seed, --threads <- --opt, then
    validated (``trainer.monitor`` included: before any data is built)."""
    config: dict[str, Any] = {}
    if args.resume:
        config = load_training_checkpoint(args.resume)["config"]
        config.get("distributed", {}).pop("mode", None)  # the launcher of this run decides (auto)
    if args.config:
        config = cfg.merge(config, cfg.load_config(args.config))
    if args.seed is not None:
        config["seed"] = args.seed
    if args.threads is not None:
        config["threads"] = args.threads
    return cfg.apply_overrides(config, args.opt, known, WithGroups(HIGHER_IS_BETTER))


def resolve_auto_resume(args: argparse.Namespace, known: cfg.Registries) -> str | None:
    """For ``-r auto`` (or ``trainer.resume: "auto"`` without ``-r``): set ``args.resume`` to the
    newest checkpoint of ``--run-dir``, or of the run folders of the config's ``save_dir`` and
    ``name``, or to None (a new run) when there is none; returns a line saying which. Raises
    ``FileNotFoundError`` for a ``--run-dir`` without checkpoints and no config to start from."""
    if args.resume not in (None, "auto"):
        return None
    auto, args.resume = args.resume == "auto", None
    if args.run_dir:
        folders = [Path(args.run_dir)]
    else:
        config = resolve_config(args, known)
        auto = auto or config["trainer"]["resume"] == "auto"
        folders = run_dirs(config["trainer"]["save_dir"], config["name"])
    if not auto:
        return None
    found = newest_checkpoint(folders)
    if found is None and not args.config:
        raise FileNotFoundError(f"-r auto: no checkpoint-epochN.pth in {args.run_dir}")
    args.resume = None if found is None else str(found)
    if found is None:
        where = ", ".join(str(f) for f in folders)
        return (
            f"resume auto: no checkpoint in {where}: a new run"
            if where
            else ("resume auto: this config has no run yet: a new run")
        )
    return f"resume auto: continuing from {found}"


def without_pretrained(config: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``config`` whose ``arch.args`` has no ``pretrained`` weights file."""
    args = {k: v for k, v in config["arch"].get("args", {}).items() if k != "pretrained"}
    return {**config, "arch": {**config["arch"], "args": args}}


def error_message(err: BaseException) -> str:
    """The message of ``err``; for an error re-raised from a DataLoader worker, its last line."""
    text = str(err).strip()
    return text.splitlines()[-1] if "Original Traceback" in text else text


def main(argv: list[str] | None = None) -> Path:
    """Build everything from the config and train; returns the run folder.

    The error that ends a run is written to ``train.log`` too; a new run that ends before
    anything was saved (no checkpoint, no ``metrics.jsonl`` line) removes its run folder.
    SIGINT, SIGTERM and SIGHUP raise :class:`~utils.io.run_lock.Terminated` (a
    ``KeyboardInterrupt``), after the end of a save in progress. The run folder is locked
    (``run.lock``) while the run trains in it: a second process is refused with
    :class:`~utils.io.run_lock.RunLockedError`.
    """
    with termination_signals():
        return _main(argv)


def _main(argv: list[str] | None) -> Path:
    args = parse_args(argv)
    known = registries()
    auto_resume = resolve_auto_resume(args, known)
    config = resolve_config(args, known)
    keep_freed_memory()  # no page faults on every step (see utils/runtime/cpu_memory.py)
    launch_argv = sys.argv if argv is None else ["train.py", *argv]
    execution = setup_execution(config, args.device, launch_argv)
    run_dir = None
    if args.resume:
        run_dir = Path(args.resume).resolve().parent
    elif execution.is_main:
        run_dir = new_run_dir(config["trainer"]["save_dir"], config["name"])
    run_dir = broadcast_object(run_dir)  # every process writes (if at all) into rank 0's folder
    lock = RunLock(run_dir)
    stale = lock_run_dir(lock, execution.is_main)
    try:
        setup_logging(run_dir, execution.is_main)
        if stale is not None:
            get_logger().info("took over %s of process %d, which is gone", lock.path, stale)
        if auto_resume is not None:
            get_logger().info("%s", auto_resume)
        try:
            with collective_timeouts():  # a stalled DDP process: a message, not a traceback
                return run(args, config, known, execution, run_dir)
        except BaseException as err:
            end_with(err, run_dir, created=not args.resume and execution.is_main)
            raise
    finally:
        lock.release()


def lock_run_dir(lock: RunLock, is_main: bool) -> int | None:
    """Take the run folder's lock in the main process (see :meth:`RunLock.acquire`); returns the
    PID of a stale lock taken over. Raises :class:`RunLockedError` in every process when another
    process holds it."""
    stale, refused = None, None
    if is_main:
        try:
            stale = lock.acquire()
        except RunLockedError as err:
            refused = str(err)
    refused = broadcast_object(refused)
    if refused is not None:
        raise RunLockedError(refused)
    return stale


def end_with(err: BaseException, run_dir: Path, created: bool) -> None:
    """Record the exception that ends a run in ``train.log`` (the console gets it from the
    ``__main__`` handler or the interpreter), and remove the run folder if this process created
    it and nothing was saved there."""
    logger = get_logger()
    remove = created and not has_results(run_dir)
    if isinstance(err, KeyboardInterrupt):
        signum = exit_signal(err)
        how = "interrupted" if signum == signal.SIGINT else f"terminated by {signum.name}"
        if remove:
            logger.info("%s before anything was saved", how)
        else:
            logger.info("%s; the checkpoints in %s are intact", how, run_dir)
    elif isinstance(err, EXPECTED_ERRORS):
        log_to_file(logging.ERROR, f"error: {error_message(err)}")
    else:
        log_to_file(logging.ERROR, f"error: {err!r}", exc_info=err)
    if remove:
        close_log_file()
        remove_run_dir(run_dir)
        logger.info("nothing was saved: removed the run folder %s", run_dir)


def exit_signal(err: KeyboardInterrupt) -> signal.Signals:
    """The signal that ended the run (Ctrl-C's SIGINT for a plain ``KeyboardInterrupt``); the
    script exits with 128 + its number."""
    return signal.Signals(getattr(err, "signum", signal.SIGINT))


def run(
    args: argparse.Namespace,
    config: dict[str, Any],
    known: cfg.Registries,
    execution: Execution,
    run_dir: Path,
) -> Path:
    """Build the model, data, loss and trainer in ``run_dir`` (logging set up) and train."""
    from trainer import Trainer

    logger = get_logger()
    logger.info("run folder: %s", run_dir)
    logger.info("%s", describe(execution, config))
    # BaseDataLoader's default: no workers
    workers = config["train_loader"].get("args", {}).get("num_workers", 0)
    logger.info("%s", apply_training_threads(config["threads"], workers).describe())

    seed = config["seed"]
    seed_everything(seed)
    # A resumed run takes its weights from the checkpoint, not from arch.args.pretrained.
    model = cfg.build(without_pretrained(config) if args.resume else config, "arch", known["arch"])
    logger.info("model: %s", model.summary())
    normalisation = config["normalisation"]
    expected = getattr(model, "pretrained_normalisation", None)
    if expected and expected != normalisation:
        logger.warning(
            "arch.args.pretrained expects %r normalisation but the config's normalisation is %r: "
            'the model starts from inputs it was not trained on (set "normalisation": "%s" to '
            "keep them)",
            expected,
            normalisation,
            expected,
        )
    inputs = {  # the same for training and validation
        "normalisation": normalisation,
        "imagery": Imagery.from_config(config["imagery"]),
    }
    train_loader = cfg.build(config, "train_loader", known["train_loader"], seed=seed, **inputs)
    val_loader = (
        cfg.build(config, "val_loader", known["val_loader"], seed=seed, evaluation=True, **inputs)
        if config["val_loader"]
        else train_loader.split_validation()
    )
    logger.info("train: %r", train_loader.dataset)
    if val_loader is not None:
        logger.info("val: %r", val_loader.dataset)
    if config["trainer"]["val"]:
        warn_shared_images(train_loader, val_loader)
    loss = cfg.build(config, "loss", known["loss"])
    trainer = Trainer(
        model,
        loss,
        config,
        run_dir,
        train_loader,
        val_loader,
        execution=execution,
        resume=args.resume,
    )
    trainer.train()
    logger.info("done; run folder: %s", run_dir)
    return run_dir


def describe(execution: Execution, config: dict[str, Any]) -> str:
    """One line: where the run executes and with which speed settings."""
    if execution.distributed:
        where = f"DDP, {execution.world_size} processes, this one on {execution.device}"
    elif execution.dp_ids:
        where = f"DataParallel on GPUs {execution.dp_ids}"
    else:
        where = f"{execution.device}"
    return (
        f"execution: {where}; amp {config['amp']}, channels_last {config['channels_last']}, "
        f"prefetch {config['trainer']['prefetch']}"
    )


if __name__ == "__main__":
    status = 0
    try:
        main()
    except EXPECTED_ERRORS as err:
        if is_main_process():
            print(f"error: {error_message(err)}", file=sys.stderr)
        status = 1 if isinstance(err, NonFiniteLossError) else 2
    except KeyboardInterrupt as err:
        status = 128 + exit_signal(err)
    finally:
        cleanup()
    sys.exit(status)
