"""What a run prints: periodic progress lines when the output is not a terminal (nohup, SLURM, a
pipe), the tqdm bar in a terminal, and one short epoch line (``trainer.print_metrics``) per
epoch, the full set of metrics staying in metrics.jsonl."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

import train
import trainer as trainer_module
from tests.helpers import ROOT, tiny_config
from trainer import Trainer
from utils import config as cfg
from utils.metrics import HIGHER_IS_BETTER
from utils.runtime.logs import format_duration

TIME = r"(\d+s|\d+m\d\ds|\d+h\d\dm)"
PROGRESS = re.compile(
    rf"\d\d:\d\d:\d\d  train (\d)/2  iter (\d)/2  loss \d+\.\d{{4}}  lr \S+  "
    rf"\d+\.\d img/s  epoch ETA {TIME}$"
)
EPOCH = re.compile(
    rf"\d\d:\d\d:\d\d  epoch (\d)/2  loss \d+\.\d{{4}}  lr \S+  "
    rf"maxF \d\.\d{{4}} \((new best|best \d\.\d{{4}}, epoch 1)\)  "
    rf"MAE \d\.\d{{4}}  Sm \d\.\d{{4}}  IoU \d\.\d{{4}}  time {TIME}(  ETA {TIME})?$"
)


def test_a_run_piped_to_a_file_prints_progress_lines_and_short_epoch_lines(tmp_path):
    config = tiny_config(tmp_path, epochs=2)  # 2 steps per epoch, log_per_iter 1
    done = subprocess.run(
        [sys.executable, "train.py", "-c", str(config), "-d", "cpu",
         "--opt", "trainer.tensorboard=false"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    progress = [m.groups()[:2] for line in lines if (m := PROGRESS.match(line))]
    assert progress == [("1", "1"), ("1", "2"), ("2", "1"), ("2", "2")], done.stdout
    epochs = [m for line in lines if (m := EPOCH.match(line))]
    assert [m.group(1) for m in epochs] == ["1", "2"], done.stdout
    assert epochs[0].group(2) == "new best" and epochs[0].group(5)  # the run's ETA after epoch 1
    assert not epochs[1].group(5)  # none after the last
    for line in lines:
        assert len(line) <= 160 or "train: " in line or "val: " in line, line
    assert "\r" not in done.stderr and "it/s" not in done.stderr  # no tqdm bar
    (run,) = (tmp_path / "saved" / "runs" / "tiny").iterdir()
    log = (run / "train.log").read_text()
    assert sum(bool(PROGRESS.match(line)) for line in log.splitlines()) == 4
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    assert {"wF", "maxE", "adpF", "F1"} <= set(record)  # the full set stays in metrics.jsonl
    assert " wF " not in done.stdout and " maxE " not in done.stdout


def test_in_a_terminal_the_bar_replaces_the_lines_and_print_metrics_chooses(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.setattr(trainer_module, "interactive_console", lambda: True)
    config = tiny_config(tmp_path, epochs=1)
    options = ["trainer.tensorboard=false", 'trainer.print_metrics=["wF", "meanIoU"]']
    run = train.main(["-c", str(config), "-d", "cpu", "--opt", *options])
    log = (run / "train.log").read_text()
    assert " iter " not in log  # the bar, not lines
    assert "train 1/1" in capsys.readouterr().err  # the bar's description
    (line,) = [line for line in log.splitlines() if "  epoch 1/1  " in line]
    assert " maxF " in line and " wF " in line and " meanIoU " in line  # monitor, then the list
    assert " MAE " not in line and " Sm " not in line
    assert line.index(" maxF ") < line.index(" wF ") < line.index(" meanIoU ")
    record = json.loads((run / "metrics.jsonl").read_text())
    assert "meanIoU" in record and "MAE" in record  # computed for the line, beside the defaults


def epoch_line(print_metrics: list[str], record: dict, improved: bool) -> str:
    """The epoch line of a trainer of 100 epochs whose monitor (max maxF) was best at epoch 98
    and whose epochs took 1 h 2 min, as the log prints it (with its time stamp)."""
    trainer = object.__new__(Trainer)  # the line needs no model or data
    trainer.epochs, trainer.monitor_metric, trainer.print_metrics = 100, "maxF", print_metrics
    trainer.monitor_best, trainer.best_epoch, trainer._epoch_seconds = 0.929, 98, [3720.0]
    return "12:00:00  " + trainer._epoch_line(record, improved)


def test_the_longest_default_epoch_line_fits_in_160_characters():
    record = {"epoch": 99, "train_loss": 12.5548, "lr": 1.2345e-05, "val_bad_files": 3}
    record |= {name: 0.1234 for name in HIGHER_IS_BETTER}  # every metric validation can report
    line = epoch_line(cfg.DEFAULTS["trainer"]["print_metrics"], record, improved=False)
    assert len(line) <= 160, (len(line), line)
    assert "maxF 0.1234 (best 0.9290, epoch 98)  MAE 0.1234  Sm 0.1234  IoU 0.1234" in line
    assert line.endswith("time 1h02m  ETA 1h02m")
    assert " wF " not in line and "bad" not in line  # the bad files have a line of their own
    no_validation = {"epoch": 100, "train_loss": 0.5, "lr": 0.0}
    assert epoch_line(["MAE"], no_validation, False).endswith(
        "epoch 100/100  loss 0.5000  lr 0  time 1h02m"
    )


def test_durations_read_as_seconds_minutes_or_hours():
    assert [format_duration(s) for s in (0.4, 41, 246, 3599.6, 7500)] == [
        "0s", "41s", "4m06s", "1h00m", "2h05m"
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            ["MAE", "maxF1"],
            "'trainer.print_metrics': unknown metric 'maxF1'; validation reports MAE",
        ),
        ("MAE", "'trainer.print_metrics' must be a list, got \"MAE\""),
        (["MAE", 3], "'trainer.print_metrics' must be a list of metric names, got 3 (int)"),
    ],
)
def test_print_metrics_is_checked_with_the_config(tmp_path, value, message):
    config = cfg.load_config(tiny_config(tmp_path))
    config["trainer"]["print_metrics"] = value
    with pytest.raises(cfg.ConfigError) as caught:
        cfg.validate_config(config, train.registries(), HIGHER_IS_BETTER)
    assert message in str(caught.value)
