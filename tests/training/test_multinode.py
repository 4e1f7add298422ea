"""Two torchrun "nodes" on this machine, started with the README's two-node command (c10d
rendezvous on 127.0.0.1, gloo, one process each): one run folder written by rank 0 alone, and
validation equal to one process's."""

from __future__ import annotations

import re
import shlex
import socket
import subprocess
import sys

import pytest

from tests.helpers import ROOT, tiny_config
from tests.training.test_distributed_training import (
    clean_env,
    records,
    run_folders,
    single_process_validation,
)


def readme_two_node_command() -> list[str]:
    """The README's two-node torchrun command, as words (``--node_rank=0``, ``HOST:29500``)."""
    text = (ROOT / "README.md").read_text()
    (line,) = re.findall(r"^torchrun --nnodes=2 .*$", text, flags=re.MULTILINE)
    return shlex.split(line)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def node_command(words: list[str], node_rank: int, port: int, *train_args: str) -> list[str]:
    """The README command for ``node_rank`` on this machine: one process per node, the
    rendezvous on 127.0.0.1:``port``, ``train_args`` instead of ``-c config.json``."""
    replaced = {
        "--node_rank=0": f"--node_rank={node_rank}",
        "--nproc_per_node=8": "--nproc_per_node=1",
        "--rdzv_endpoint=HOST:29500": f"--rdzv_endpoint=127.0.0.1:{port}",
    }
    options = [replaced.get(word, word) for word in words[1 : words.index("train.py")]]
    assert set(replaced.values()) <= set(options), f"README command changed: {words}"
    return [sys.executable, "-m", "torch.distributed.run", *options, "train.py", *train_args]


def test_two_nodes_write_one_run_and_validate_like_one_process(tmp_path):
    config = tiny_config(tmp_path, epochs=2)
    words, port = readme_two_node_command(), free_port()
    nodes = [
        subprocess.Popen(
            node_command(words, rank, port, "-c", str(config)),
            cwd=ROOT,
            env=clean_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in (0, 1)
    ]
    outputs = []
    for node in nodes:
        try:
            outputs.append(node.communicate(timeout=600)[0])
        except subprocess.TimeoutExpired:
            for other in nodes:
                other.kill()
            pytest.fail("the two nodes did not finish within 600 s")
    assert [node.returncode for node in nodes] == [0, 0], "\n".join(o[-3000:] for o in outputs)
    (run,) = run_folders(tmp_path)  # one run folder for both nodes
    assert "DDP, 2 processes" in "".join(outputs)
    assert "".join(outputs).count("epoch 2/2") == 1  # rank 0 alone prints and writes
    assert len(list(run.glob("events.out.tfevents.*"))) == 1
    assert [r["epoch"] for r in records(run)] == [1, 2]
    expected = single_process_validation(run / "config.json", run / "checkpoint-epoch2.pth")
    for name, value in expected.items():
        assert records(run)[-1][name] == pytest.approx(value, abs=1e-9), name
