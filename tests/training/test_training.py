"""End-to-end training on tiny demo data: artefacts, exact resume, checkpoints, bad input."""

import json
import subprocess
import sys

import pytest
import torch

import train
from tests.helpers import ROOT, tiny_config
from trainer import Trainer
from utils.io.checkpoint import load_checkpoint, save_checkpoint


def test_training_writes_every_artefact(tmp_path):
    run = train.main(["-c", str(tiny_config(tmp_path)), "-d", "cpu"])
    names = {p.name for p in run.iterdir()}
    assert {
        "config.json",
        "checkpoint-epoch1.pth",
        "checkpoint-epoch2.pth",
        "best_model.pth",
        "metrics.jsonl",
        "train.log",
    } <= names
    assert any(n.startswith("events.out.tfevents") for n in names)
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2]
    assert {"train_loss", "lr", "MAE", "maxF"} <= set(lines[0])
    stored = json.loads((run / "config.json").read_text())
    assert stored["trainer"]["epochs"] == 2 and stored["trainer"]["early_stop"] == 0
    for name in ("checkpoint-epoch2.pth", "best_model.pth"):
        state = torch.load(run / name, map_location="cpu", weights_only=True)
        assert not any(k.startswith("module.") for k in state["state_dict"])
        assert state["arch"] == "U2Net" and state["config"]["name"] == "tiny"
        assert {"epoch", "monitor_best", "best_epoch", "version"} <= set(state)
        resumable = {"optimizer", "lr_scheduler", "rng"} <= set(state)
        assert resumable == (name != "best_model.pth")  # best_model.pth: weights, config, score


def test_resume_is_exact(tmp_path, monkeypatch):
    straight = train.main(["-c", str(tiny_config(tmp_path / "a")), "-d", "cpu"])

    original = Trainer._train_epoch

    def interrupted(self, epoch):
        if epoch == 2:
            raise KeyboardInterrupt
        return original(self, epoch)

    monkeypatch.setattr(Trainer, "_train_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train.main(["-c", str(tiny_config(tmp_path / "b")), "-d", "cpu"])
    monkeypatch.setattr(Trainer, "_train_epoch", original)
    run_b = next((tmp_path / "b" / "saved" / "runs" / "tiny").iterdir())
    assert not (run_b / "checkpoint-epoch2.pth").exists()
    resumed = train.main(["-r", str(run_b / "checkpoint-epoch1.pth"), "-d", "cpu"])
    assert resumed == run_b

    a = load_checkpoint(straight / "checkpoint-epoch2.pth")
    b = load_checkpoint(resumed / "checkpoint-epoch2.pth")
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    assert (straight / "metrics.jsonl").read_text() == (resumed / "metrics.jsonl").read_text()


def test_resume_with_config_overrides_stored_values(tmp_path):
    run = train.main(["-c", str(tiny_config(tmp_path, epochs=1)), "-d", "cpu"])
    train.main(["-r", str(run / "checkpoint-epoch1.pth"), "-d", "cpu"])  # a finished run
    assert "the run is complete (epoch 1, trainer.epochs 1)" in (run / "train.log").read_text()
    assert not (run / "checkpoint-epoch2.pth").exists()
    more = tmp_path / "more.json"
    more.write_text(json.dumps({"trainer": {"epochs": 2}}))
    train.main(["-r", str(run / "checkpoint-epoch1.pth"), "-c", str(more), "-d", "cpu"])
    assert (run / "checkpoint-epoch2.pth").exists()
    assert json.loads((run / "config.json").read_text())["trainer"]["epochs"] == 2


def test_resume_refuses_another_architecture(tmp_path):
    run = train.main(["-c", str(tiny_config(tmp_path, epochs=1)), "-d", "cpu"])
    with pytest.raises(ValueError, match="does not fit the configured model"):
        train.main(
            [
                "-r",
                str(run / "checkpoint-epoch1.pth"),
                "-d",
                "cpu",
                "--opt",
                "arch.args.variant=full",
            ]
        )


def test_interrupted_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "ck.pth"
    save_checkpoint({"epoch": 1}, path)

    def broken_save(obj, f):
        f.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({"epoch": 2}, path)
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pth"]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "train.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["-c", "config.json", "--opt", "bogus.key=3"], "bogus.key"),
        (["-c", "config.json", "--opt", "arch.type=U3Net"], "available: U2Net"),
        (
            ["-c", "configs/duts_u2net_lite.json", "--opt", "train_loader.args.data_dir=/no/DUTS"],
            "/no/DUTS/DUTS-TR/DUTS-TR-Image",
        ),
    ],
)
def test_cli_errors_are_clear(args, expected):
    result = run_cli(*args)
    assert result.returncode == 2
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


def test_unreadable_image_stops_with_its_path_when_no_bad_file_is_allowed(tmp_path):
    from dataloaders.demo import ensure_demo_data

    config = tiny_config(tmp_path, epochs=1)
    ensure_demo_data(str(tmp_path / "demo"), 8, 4)
    bad = sorted((tmp_path / "demo" / "DUTS-TR" / "DUTS-TR-Image").iterdir())[0]
    bad.write_bytes(b"not a jpeg")
    opts = ("train_loader.args.num_workers=1", "trainer.max_bad_files=0")
    result = run_cli("-c", str(config), "-d", "cpu", "--opt", *opts)
    assert result.returncode == 2
    assert str(bad) in result.stderr and "trainer.max_bad_files=0" in result.stderr
    assert "Traceback" not in result.stderr
