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
