"""Shared test data: the config of a tiny lite-U2Net run on a few demo images (CPU, seconds)."""

import json
from pathlib import Path


def tiny_config(tmp_path: Path, epochs: int = 2) -> Path:
    loader = {
        "data_dir": str(tmp_path / "demo"),
        "num_train": 8,
        "num_test": 4,
        "base_size": 48,
        "num_workers": 0,
    }
    config = {
        "name": "tiny",
        "seed": 3,
        "arch": {"type": "U2Net", "args": {"variant": "lite"}},
        "train_loader": {
            "type": "DemoSOD",
            "args": {
                **loader,
                "split": "train",
                "batch_size": 4,
                "crop_size": 40,
                "augment": True,
                "scale_range": [0.9, 1.2],
                "rotate": 10,
                "shuffle": True,
            },
        },
        "val_loader": {"type": "DemoSOD", "args": {**loader, "split": "test", "batch_size": 2}},
        "loss": {"type": "DeepSupervisionLoss", "args": {"mode": "bce_iou"}},
        "optimizer": {"type": "AdamW", "args": {"lr": 0.003}},
        "lr_scheduler": {"type": "WarmupCosine", "args": {"warmup_iters": 1}},
        "trainer": {
            "epochs": epochs,
            "save_dir": str(tmp_path / "saved"),
            "keep_last": 5,
            "log_per_iter": 1,
            "vis_samples": 2,
            "deterministic": True,
        },
    }
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    return path
