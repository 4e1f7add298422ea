"""The run's log: one logger, written by the main process to stdout and ``train.log``."""

from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path

LOGGER_NAME = "u2seg"


def get_logger() -> logging.Logger:
    """The logger of U2Seg runs (configured by :func:`setup_logging`)."""
    return logging.getLogger(LOGGER_NAME)


def setup_logging(run_dir: Path, main_process: bool = True) -> None:
    """Log to stdout and ``train.log`` in the main process; other processes stay silent."""
    logger = get_logger()
    logger.setLevel(logging.INFO)
    logger.handlers.clear()
    logger.propagate = main_process
    if not main_process:
        logger.addHandler(logging.NullHandler())
        warnings.simplefilter("ignore")  # rank 0 shows the same warnings
        return
    for handler in (logging.StreamHandler(sys.stdout), logging.FileHandler(run_dir / "train.log")):
        handler.setFormatter(logging.Formatter("%(asctime)s  %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)


def interactive_console() -> bool:
    """Whether both stdout and stderr are terminals: then progress is a tqdm bar, else (nohup,
    SLURM, a pipe, a file) periodic log lines."""
    return all(getattr(stream, "isatty", lambda: False)() for stream in (sys.stdout, sys.stderr))


def format_duration(seconds: float) -> str:
    """A duration for a log line: ``41s``, ``4m06s``, ``2h05m`` (negative counts as 0)."""
    whole = max(0, round(seconds))
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def counted(number: int, noun: str) -> str:
    """``number`` and ``noun``, plural unless it is 1: ``1 image``, ``3 images``."""
    return f"{number} {noun}{'' if number == 1 else 's'}"


def log_to_file(level: int, message: str, exc_info: BaseException | None = None) -> None:
    """Write ``message`` to ``train.log`` only (not the console): for the error that ends a run,
    which the script prints on stderr itself. Does nothing before :func:`setup_logging`, or in a
    process that does not log."""
    logger = get_logger()
    error_info = None if exc_info is None else (type(exc_info), exc_info, exc_info.__traceback__)
    record = logger.makeRecord(logger.name, level, "", 0, message, (), error_info)
    for handler in logger.handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def close_log_file() -> None:
    """Close and detach the ``train.log`` handler (before the run folder is removed); the console
    handler stays."""
    logger = get_logger()
    for handler in list(logger.handlers):
        if isinstance(handler, logging.FileHandler):
            handler.close()
            logger.removeHandler(handler)
