"""Execution modes: DDP under torchrun (gloo, 2 CPU processes), resume across modes, DataParallel
fallback, sharded sampling, the prefetcher, bf16 autocast and the NaN-loss stop."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import train
from base.base_dataloader import SeededSampler
from base.base_trainer import NonFiniteLossError
from models import U2Net
from tests.helpers import ROOT, poison_loss_after, tiny_config
from train import registries
from utils import config as cfg
from utils.io.checkpoint import load_checkpoint
from utils.metrics import SODMetrics
from utils.runtime.prefetcher import DataPrefetcher

LAUNCH_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "SLURM_PROCID")

REGISTRIES = registries()


def clean_env() -> dict[str, str]:
    """The environment of a fresh shell: no launcher variables, one thread per process."""
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARS and k != "SLURM_NTASKS"}
    env["OMP_NUM_THREADS"] = "1"
    return env


def torchrun(*args: str | Path, nproc: int = 2) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += [f"--nproc_per_node={nproc}", "train.py", *map(str, args)]
    done = subprocess.run(
        command, cwd=ROOT, env=clean_env(), capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def run_folders(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "saved" / "runs" / "tiny").iterdir())


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@torch.no_grad()
def single_process_validation(config_path: Path, checkpoint: Path) -> dict[str, float]:
    """The validation metrics of ``checkpoint`` on the config's validation set, one process."""
    config = cfg.validate_config(cfg.load_config(config_path), REGISTRIES)
    model = U2Net("lite")
    model.load_state_dict(load_checkpoint(checkpoint)["state_dict"])
    model.eval()
    loader = cfg.build(
        config, "val_loader", REGISTRIES["val_loader"], seed=config["seed"], evaluation=True
    )
    metrics = SODMetrics("cpu")
    for images, masks in loader:
        metrics.update(model(images), masks)
    return metrics.compute()


def test_ddp_two_processes_write_one_run_and_validate_each_image_once(tmp_path):
    config = tiny_config(tmp_path, epochs=2)
    odd = ["val_loader.args.num_test=5", "train_loader.args.num_test=5"]  # 5: not divisible by 2
    done = torchrun("-c", config, "--opt", "distributed.mode=ddp", *odd)
    (run,) = run_folders(tmp_path)
    names = sorted(p.name for p in run.iterdir() if p.suffix in (".pth", ".json", ".jsonl"))
    assert names == [
        "best_model.pth",
        "checkpoint-epoch1.pth",
        "checkpoint-epoch2.pth",
        "config.json",
        "metrics.jsonl",
    ]
    assert len(list(run.glob("events.out.tfevents.*"))) == 1
    assert done.stdout.count("epoch 2/2") == 1  # only rank 0 prints
    assert done.stdout.count("train 2/2  iter 1/1") == 1  # its progress line too (not a tty)
    assert "DDP, 2 processes" in done.stdout
    last = records(run)[-1]
    assert [r["epoch"] for r in records(run)] == [1, 2]
    expected = single_process_validation(run / "config.json", run / "checkpoint-epoch2.pth")
    for name, value in expected.items():
        assert last[name] == pytest.approx(value, abs=1e-9), name


def test_resume_from_ddp_in_one_process_and_back(tmp_path):
    config = tiny_config(tmp_path, epochs=1)
    # 8 images on 2 processes in batches of 4: one step per epoch, so no warmup
    torchrun("-c", config, "--opt", "distributed.mode=ddp", "lr_scheduler.args.warmup_iters=0")
    (ddp_run,) = run_folders(tmp_path)
    train.main(["-r", str(ddp_run / "checkpoint-epoch1.pth"), "--opt", "trainer.epochs=2",
                "distributed.mode=none"])  # fmt: skip
    assert [r["epoch"] for r in records(ddp_run)] == [1, 2]

    single_run = train.main(["-c", str(config), "--opt", "trainer.epochs=1"])
    torchrun("-r", single_run / "checkpoint-epoch1.pth", "--opt", "trainer.epochs=2",
             "distributed.mode=ddp")  # fmt: skip
    assert [r["epoch"] for r in records(single_run)] == [1, 2]
    assert load_checkpoint(single_run / "checkpoint-epoch2.pth")["epoch"] == 2


def test_ddp_without_a_launcher_shows_the_torchrun_command(tmp_path):
    config = tiny_config(tmp_path)
    done = subprocess.run(
        [sys.executable, "train.py", "-c", str(config), "--opt", "distributed.mode=ddp"],
        cwd=ROOT, env=clean_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 2
    assert "not started by torchrun or SLURM" in done.stderr
    assert f"torchrun --nproc_per_node=2 train.py -c {config}" in done.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the fallback without GPUs")
def test_data_parallel_without_gpus_warns_and_trains_on_the_cpu(tmp_path):
    config = tiny_config(tmp_path, epochs=1)
    with pytest.warns(UserWarning, match="no GPU is available: training on the CPU"):
        run = train.main(["-c", str(config), "--opt", "distributed.mode=dp", "n_gpu=2"])
    assert (run / "checkpoint-epoch1.pth").is_file()


def test_config_rejects_bad_execution_values(tmp_path):
    config = tiny_config(tmp_path)
    with pytest.raises(cfg.ConfigError, match="'amp' must be one of 'off', 'fp16', 'bf16'"):
        train.main(["-c", str(config), "--opt", "amp=fp32"])
    with pytest.raises(cfg.ConfigError, match=r"'distributed\.mode' must be one of"):
        train.main(["-c", str(config), "--opt", "distributed.mode=deepspeed"])
    with pytest.raises(cfg.ConfigError, match=r"n_gpu is 2 but distributed\.mode is 'none'"):
        train.main(["-c", str(config), "--opt", "n_gpu=2"])


@pytest.mark.parametrize("n", [5, 8, 1])
def test_sharded_sampler_scores_each_image_once_and_trains_in_equal_steps(n):
    indices = list(range(10, 10 + n))
    shards = [SeededSampler(indices, True, 3, rank, 2, evaluation=True) for rank in range(2)]
    keys = [list(s) for s in shards]
    assert sorted(k[0] for shard in keys for k in shard) == indices
    assert [len(s) for s in shards] == [len(k) for k in keys]
    train_shards = [list(SeededSampler(indices, True, 3, rank, 2)) for rank in range(2)]
    assert len(train_shards[0]) == len(train_shards[1]) == -(-n // 2)
    assert set(indices) <= {k[0] for shard in train_shards for k in shard}


def test_prefetcher_yields_exactly_the_loader_batches(tmp_path):

    config = cfg.validate_config(cfg.load_config(tiny_config(tmp_path)), REGISTRIES)
    loader = cfg.build(config, "train_loader", REGISTRIES["train_loader"], seed=1)
    loader.sampler.set_epoch(2)
    plain = list(loader)
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    for device in devices:
        for enabled in (True, False):
            fetched = list(DataPrefetcher(loader, device, enabled=enabled))
            assert len(fetched) == len(plain) == len(DataPrefetcher(loader, device))
            for got, want in zip(fetched, plain, strict=True):
                assert all(g.device.type == device.type for g in got)
                assert all(torch.equal(g.cpu(), w) for g, w in zip(got, want, strict=True))


def test_bf16_autocast_and_channels_last_train_on_the_cpu(tmp_path):
    config = tiny_config(tmp_path, epochs=1)
    opts = ["amp=bf16", "channels_last=true", "trainer.clip_grad_norm=1.0"]
    run = train.main(["-c", str(config), "--opt", *opts])
    (record,) = records(run)
    assert torch.isfinite(torch.tensor(record["train_loss"])) and 0 <= record["MAE"] <= 1


def test_fp16_needs_a_gpu(tmp_path):
    if torch.cuda.is_available():
        run = train.main(["-c", str(tiny_config(tmp_path, epochs=1)), "--opt", "amp=fp16"])
        assert load_checkpoint(run / "checkpoint-epoch1.pth")["scaler"]["scale"] > 0
        return
    with pytest.raises(ValueError, match="amp 'fp16' needs a CUDA GPU"):
        train.main(["-c", str(tiny_config(tmp_path, epochs=1)), "--opt", "amp=fp16"])


def test_nan_loss_stops_the_run_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    config = tiny_config(tmp_path, epochs=3)
    poison_loss_after(monkeypatch, steps=2)  # epoch 1 of tiny_config has 2 steps
    with pytest.raises(NonFiniteLossError, match="NaN or infinite in epoch 2 \\(step 1\\)"):
        train.main(["-c", str(config)])
    (run,) = run_folders(tmp_path)
    assert sorted(p.name for p in run.glob("*.pth")) == ["best_model.pth", "checkpoint-epoch1.pth"]
    assert load_checkpoint(run / "checkpoint-epoch1.pth")["epoch"] == 1
    assert [r["epoch"] for r in records(run)] == [1]
