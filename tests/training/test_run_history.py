"""A run's history survives failures: torn metrics lines, stale temporary files, a full disk, the
error that ends a run in train.log, and no run folder left by a run that saved nothing."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
import torch

import train
from base.base_trainer import NonFiniteLossError
from tests.helpers import poison_loss_after, tiny_config
from utils.io import atomic
from utils.io.atomic import DiskFullError, remove_stale_temporaries, write_text
from utils.io.checkpoint import load_checkpoint, save_checkpoint
from utils.io.run_dir import MetricsLog


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_resume_drops_a_torn_metrics_line_and_stale_temporaries(tmp_path):
    run = train.main(["-c", str(tiny_config(tmp_path, epochs=1)), "-d", "cpu"])
    metrics = run / "metrics.jsonl"
    metrics.write_text(metrics.read_text() + '{"epoch": 2, "train_loss": 0.5, "l')  # disk full
    stale = [run / ".checkpoint-epoch2.pth.abc_1234.tmp", run / ".best_model.pth.zz9x8y7w.tmp"]
    for p in stale:
        p.write_bytes(b"partial")
    keep = run / ".notes.tmp"  # not a name atomic_write makes
    keep.write_text("mine")

    more = tmp_path / "more.json"
    more.write_text(json.dumps({"trainer": {"epochs": 2}}))
    train.main(["-r", str(run / "checkpoint-epoch1.pth"), "-c", str(more), "-d", "cpu"])

    assert [r["epoch"] for r in records(run)] == [1, 2]
    assert not any(p.exists() for p in stale) and keep.exists()
    log = (run / "train.log").read_text()
    assert "metrics.jsonl line 2 is torn or unreadable" in log
    assert "removed 2 temporary file(s) of interrupted saves" in log
    assert ".checkpoint-epoch2.pth.abc_1234.tmp" in log


def test_truncate_after_reports_unreadable_lines(tmp_path):
    log = MetricsLog(tmp_path / "metrics.jsonl")
    for epoch in (1, 2, 3):
        log.append({"epoch": epoch, "train_loss": 0.1})
    with log.path.open("a") as f:
        f.write('{"epoch": 4, "tr')
    assert log.truncate_after(2) == [4]
    assert [json.loads(line)["epoch"] for line in log.path.read_text().splitlines()] == [1, 2]
    assert remove_stale_temporaries(tmp_path) == []


def fill_disk_after(monkeypatch, n_bytes: int) -> None:
    """Make writes of atomic_write's temporary files fail with ENOSPC after ``n_bytes``."""
    real_fdopen = os.fdopen

    class FullFile:
        def __init__(self, f):
            self.f, self.left = f, n_bytes

        def write(self, data):
            if len(data) > self.left:
                self.f.write(bytes(data[: self.left]))
                self.left = 0
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            self.left -= len(data)
            return self.f.write(data)

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return self.f.__exit__(*exc)

    monkeypatch.setattr(atomic.os, "fdopen", lambda *a, **k: FullFile(real_fdopen(*a, **k)))


def test_full_disk_during_a_checkpoint_save_is_one_clear_error(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint-epoch1.pth"
    save_checkpoint({"epoch": 1, "w": torch.ones(1000)}, path)
    fill_disk_after(monkeypatch, 200)
    with pytest.raises(OSError, match="no space left") as caught:
        save_checkpoint({"epoch": 2, "w": torch.zeros(1000)}, path)
    err = caught.value
    assert isinstance(err, DiskFullError) and err.errno == errno.ENOSPC
    message = str(err)
    assert str(tmp_path) in message and "checkpoint-epoch1.pth" in message
    assert "free" in message and "to write" in message and "Errno" not in message
    assert train.error_message(err) == message
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint-epoch1.pth"]


def test_full_disk_while_writing_json_names_the_size(tmp_path, monkeypatch):
    path = tmp_path / "config.json"
    write_text(path, "old\n")
    fill_disk_after(monkeypatch, 3)
    with pytest.raises(DiskFullError, match=r"config\.json \(.* free, 11 B to write\)"):
        write_text(path, "0123456789\n")
    assert path.read_text() == "old\n"


def test_full_disk_while_appending_metrics_leaves_complete_lines(tmp_path, monkeypatch):
    log = MetricsLog(tmp_path / "metrics.jsonl")
    log.append({"epoch": 1})
    real_write = os.write

    def short_write(fd, data):
        return real_write(fd, data[:5])  # the disk filled after 5 bytes

    monkeypatch.setattr(os, "write", short_write)
    with pytest.raises(DiskFullError, match=r"metrics\.jsonl") as caught:
        log.append({"epoch": 2, "train_loss": 0.25})
    assert caught.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert log.path.read_text() == '{"epoch": 1}\n'


def run_folders(tmp_path: Path) -> list[Path]:
    runs = tmp_path / "saved" / "runs"
    return [r for name in runs.iterdir() for r in name.iterdir()] if runs.exists() else []


def test_a_run_that_fails_before_saving_leaves_no_run_folder(tmp_path, capsys):
    config = json.loads(tiny_config(tmp_path).read_text())
    args = config["train_loader"]["args"]
    for key in ("num_train", "num_test"):
        del args[key]
    args["data_dir"] = str(tmp_path / "no-such-data")
    config["train_loader"]["type"] = "DUTS"
    path = tmp_path / "missing.json"
    path.write_text(json.dumps(config))
    with pytest.raises(OSError, match="no-such-data"):
        train.main(["-c", str(path), "-d", "cpu"])
    assert run_folders(tmp_path) == []
    assert "removed the run folder" in capsys.readouterr().out


def test_the_error_that_ends_a_run_is_in_train_log(tmp_path, monkeypatch, capsys):
    poison_loss_after(monkeypatch, steps=2)  # epoch 1 of tiny_config has 2 steps
    with pytest.raises(NonFiniteLossError):
        train.main(["-c", str(tiny_config(tmp_path, epochs=3)), "-d", "cpu"])
    (run,) = run_folders(tmp_path)
    log = (run / "train.log").read_text()
    assert "error: the training loss became NaN or infinite in epoch 2" in log
    assert "NaN or infinite" not in capsys.readouterr().out  # the console gets it on stderr
