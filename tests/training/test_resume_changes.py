"""What a resumed run changes: the schedule policy when the run's length changed, config diffs."""

from __future__ import annotations

import json

import pytest
import torch

import train
from tests.helpers import tiny_config
from utils.config import config_changes
from utils.training.lr_scheduler import Poly, WarmupCosine


def finished_schedule(total: int = 10, cls: type = WarmupCosine) -> tuple[dict, float]:
    """The state of a schedule stepped to its end, and its base lr."""
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1e-3)
    schedule = cls(optimizer, total_iters=total, warmup_iters=2)
    for _ in range(total):
        optimizer.step()
        schedule.step()
    return schedule.state_dict(), 1e-3


def resumed(total: int, policy: str, cls: type = WarmupCosine) -> tuple[object, str | None]:
    state, _ = finished_schedule(cls=cls)
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1e-3)
    schedule = cls(optimizer, total_iters=total, warmup_iters=2, on_resume=policy)
    return schedule, schedule.resume(state)


@pytest.mark.parametrize("cls", [WarmupCosine, Poly])
def test_a_longer_run_follows_the_on_resume_policy_and_says_so(cls):
    stretched, message = resumed(20, "stretch", cls)
    assert "was 10" in message and "'stretch'" in message
    assert stretched.factor(10) > 0.3  # halfway through the stretched decay: the lr rises again

    restarted, message = resumed(20, "restart", cls)
    assert restarted.factor(10) == pytest.approx(1 / 3)  # the first warmup step of a new schedule
    assert restarted.factor(12) == pytest.approx(1.0)
    assert "'restart'" in message

    final, message = resumed(20, "continue_final", cls)
    assert final.factor(10) == final.factor(19)  # stays at the end value
    assert final.factor(15) < 1e-6 and "lr 0 -> 0" in message


def test_an_unchanged_length_resumes_silently_and_exactly():
    schedule, message = resumed(10, "restart")
    state, _ = finished_schedule()
    assert message is None and schedule.last_epoch == state["last_epoch"]


def test_a_warmup_as_long_as_the_run_is_shortened_with_a_log_line(caplog):
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1e-3)
    schedule = WarmupCosine(optimizer, total_iters=20, warmup_iters=20)
    assert schedule.warmup_iters == 19
    assert "warmup_iters 20 is not shorter than the run (20 iterations)" in caplog.text


def test_an_unknown_policy_is_refused():
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1e-3)
    with pytest.raises(ValueError, match=r"on_resume must be one of stretch, restart"):
        WarmupCosine(optimizer, total_iters=10, on_resume="again")


def test_config_changes_lists_every_changed_key():
    old = {"trainer": {"epochs": 8, "monitor": "max maxF"}, "seed": 1, "arch": {"type": "U2Net"}}
    new = {"trainer": {"epochs": 12, "monitor": "max maxF"}, "seed": 1, "name": "x"}
    assert config_changes(old, new) == [
        'arch.type: "U2Net" -> (absent)',
        'name: (absent) -> "x"',
        "trainer.epochs: 8 -> 12",
    ]
    assert config_changes(old, old) == []


def test_a_resume_logs_what_it_changes_and_a_new_monitor_starts_afresh(tmp_path):
    run = train.main(["-c", str(tiny_config(tmp_path, epochs=2)), "-d", "cpu"])
    train.main(
        ["-r", str(run / "checkpoint-epoch2.pth"), "-d", "cpu", "--opt", "trainer.epochs=3",
         "trainer.monitor=max Sm", "lr_scheduler.args.on_resume=continue_final"]
    )  # fmt: skip
    log = (run / "train.log").read_text()
    assert "config changed on resume: trainer.epochs: 2 -> 3" in log
    assert 'config changed on resume: trainer.monitor: "max maxF" -> "max Sm"' in log
    assert "on_resume 'continue_final'" in log and "(was 4)" in log
    assert "trainer.monitor changed from 'max maxF'" in log
    best = torch.load(run / "best_model.pth", weights_only=True)
    assert best["epoch"] == 3  # the first Sm validation after the change is the best so far
    assert (
        best["monitor_best"]
        == json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["Sm"]
    )
