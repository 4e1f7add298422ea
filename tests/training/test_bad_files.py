"""Unreadable files mid-run: skipped and replaced (training) or left out (validation), named
once in train.log, counted in metrics.jsonl, the same with 0 and 2 workers; over
``trainer.max_bad_files`` the run stops with a clear error."""

import json
from pathlib import Path

import pytest
import torch

import train
from base.base_trainer import BadFilesError
from dataloaders.duts import DUTS, DUTSDataset
from tests.helpers import tiny_config, write_duts

BAD_TRAIN = ("train_003.jpg", "train_011.jpg")  # a truncated JPEG, a text file named .jpg
BAD_VAL = "test_001.png"  # a mask that does not decode


def broken_duts(root: Path) -> Path:
    """20 training and 4 test images in the DUTS layout, with two bad training images and one bad
    test mask."""
    write_duts(root, num_train=20, num_test=4)
    images = root / "DUTS-TR" / "DUTS-TR-Image"
    truncated = images / BAD_TRAIN[0]
    truncated.write_bytes(truncated.read_bytes()[:300])
    (images / BAD_TRAIN[1]).write_text("not an image\n")
    (root / "DUTS-TE" / "DUTS-TE-Mask" / BAD_VAL).write_bytes(b"\x89PNG\r\n\x1a\ngarbage")
    return root


def duts_config(tmp_path: Path, data_dir: Path, num_workers: int, **trainer: object) -> Path:
    """``tiny_config`` on the broken DUTS set (batches of 4: every training image is read)."""
    path = tiny_config(tmp_path)
    config = json.loads(path.read_text())
    for section, split in (("train_loader", "train"), ("val_loader", "test")):
        args = config[section]["args"]
        del args["num_train"], args["num_test"]
        args.update(data_dir=str(data_dir), split=split, num_workers=num_workers)
        config[section]["type"] = "DUTS"
    config["trainer"].update(tensorboard=False, **trainer)
    path.write_text(json.dumps(config))
    return path


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_bad_files_are_skipped_the_same_with_0_and_2_workers(tmp_path):
    data = broken_duts(tmp_path / "duts")
    runs = {}
    for workers in (0, 2):
        config = duts_config(tmp_path / f"w{workers}", data, workers, max_bad_files=2)
        runs[workers] = train.main(["-c", str(config), "-d", "cpu"])
    for workers, run in runs.items():
        lines = records(run)
        assert [r["epoch"] for r in lines] == [1, 2], workers
        assert all(r["train_bad_files"] == 2 and r["val_bad_files"] == 1 for r in lines), lines
        log = (run / "train.log").read_text()
        for name in (*BAD_TRAIN, BAD_VAL):
            assert log.count(name) == 1, (workers, name, log)  # named once, not every epoch
        assert "epoch 2: skipped unreadable samples: train 2, val 1" in log
    assert records(runs[0]) == records(runs[2])  # the same samples and augmentations


def test_a_skipped_sample_is_replaced_by_the_next_one(tmp_path):
    data = broken_duts(tmp_path / "duts")
    dataset = DUTSDataset(str(data), "train", augment=True, base_size=48, crop_size=40)
    names = [Path(image).name for image, _ in dataset.files]
    bad = names.index(BAD_TRAIN[0])
    with pytest.raises(OSError, match=BAD_TRAIN[0]):  # a dataset on its own does not skip
        dataset[(bad, 5, 2)]
    dataset.track_skipped(range(len(dataset)))
    replaced = dataset[(bad, 5, 2)]
    following = dataset[(bad + 1, 5, 2)]  # augmented from its own key
    assert all(torch.equal(a, b) for a, b in zip(replaced, following, strict=True))
    assert dataset.skipped.nonzero().flatten().tolist() == [bad]
    assert BAD_TRAIN[0] in dataset.skip_reason(bad)

    dataset.track_skipped([i for i in range(len(dataset)) if i != bad + 1])  # a split's part
    replaced = dataset[(bad, 5, 2)]
    assert torch.equal(replaced[0], dataset[(bad + 2, 5, 2)][0])


def test_skips_do_not_depend_on_worker_count(tmp_path):
    data = broken_duts(tmp_path / "duts")
    batches, skipped = {}, {}
    for workers in (0, 2):
        loader = DUTS(
            batch_size=4,
            shuffle=True,
            num_workers=workers,
            seed=9,
            data_dir=str(data),
            split="train",
            augment=True,
            base_size=48,
            crop_size=40,
        )
        loader.sampler.set_epoch(3)
        batches[workers] = [batch for batch in loader]
        skipped[workers] = loader.dataset.skipped.nonzero().flatten().tolist()
    assert len(skipped[0]) == 2 and skipped[0] == skipped[2]
    for a, b in zip(batches[0], batches[2], strict=True):
        assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_over_the_limit_the_run_stops(tmp_path):
    data = broken_duts(tmp_path / "duts")
    config = duts_config(tmp_path, data, 0, max_bad_files=0.05)  # 1 of 20 allowed
    with pytest.raises(BadFilesError, match=r"2 of 20 train samples of epoch 1") as info:
        train.main(["-c", str(config), "-d", "cpu"])
    message = str(info.value)
    assert "trainer.max_bad_files=0.05" in message and "at most 1" in message
    assert all(name in message for name in BAD_TRAIN)


@pytest.mark.parametrize("value", [-0.1, 2.5])
def test_max_bad_files_is_validated(tmp_path, value):
    config = duts_config(tmp_path, tmp_path / "duts", 0, max_bad_files=value)
    with pytest.raises(ValueError, match="max_bad_files"):
        train.main(["-c", str(config), "-d", "cpu"])
