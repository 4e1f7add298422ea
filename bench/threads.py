"""Thread settings of training and inference on a shared CPU, idle and with busy processes
beside: torch's compute threads, how OpenMP threads wait, DataLoader workers and inter-op
threads, measured on a demo epoch and on a 320x320 forward of the lite U2Net.

``python bench/threads.py [--all] [--repeats N] [--busy N]`` (or ``python -m bench.threads``).
Candidates, each a whole process started with its environment (OpenMP reads it when torch
loads):

- compute threads: every usable core, one less, 1;
- waiting: ``spin`` (``GOMP_SPINCOUNT=300000``, GNU OpenMP's default, which torch's wheels use
  unless told otherwise), ``short`` (``GOMP_SPINCOUNT=1000``, this project's default:
  ``utils.runtime.threads.wait_policy``), ``passive`` (``OMP_WAIT_POLICY=PASSIVE``: sleep at
  once);
- loader workers (epoch): 0 or 1 DataLoader worker processes, for training and validation;
- inter-op threads (forward): 1 (this project's setting) or 2 (torch's default on 2 cores).

Demo epoch: ``train.py -c config.json --opt trainer.epochs=1`` (no TensorBoard, checkpoints in
a temporary folder), seconds of the whole process: what a user waits for, start and validation
included. ``--threads`` is chosen so that ``train.py``'s layout
(:func:`~utils.runtime.threads.training_layout`) gives the candidate's compute threads, which the
bench checks in the run's log. Forward: the median of ``--calls`` forwards (after one untimed)
of ``U2Net("lite")`` in eval mode on one 320x320 image, in a fresh process.

Every candidate is measured idle and with ``--busy`` spinning processes beside
(:func:`bench.load.busy`), ``--repeats`` times, interleaved (round after round), so that a
change of the machine's load hits all of them; the tables list every run. On a shared machine
each run waits (``--settle`` seconds at most) for a quiet second, and the tables give, beside
each run, the cores that other processes kept busy meanwhile (:class:`Others`); the ratio to
the best compares the fastest idle run of each candidate, the least disturbed. The default run
measures a subset of the epoch candidates (every waiting at every core, the others with
``short``); ``--all`` measures every combination.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make the repository's packages importable
    sys.path.insert(0, str(ROOT))

from bench.load import busy  # imports no torch
from utils.runtime.threads import training_layout, usable_cores  # imports no torch

WAITS = {
    "spin": {"GOMP_SPINCOUNT": "300000"},
    "short": {"GOMP_SPINCOUNT": "1000"},
    "passive": {"OMP_WAIT_POLICY": "PASSIVE"},
}
"""Each way of waiting and the environment that selects it (see the module docstring)."""
THREAD_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS", "LOCAL_WORLD_SIZE")
"""Variables removed from each candidate's environment before its own are added."""
SIZE = 320
LOGGED = re.compile(r"threads: (\d+) compute")
CONDITIONS = ("idle", "busy")
QUIET_CORES = 0.3


@dataclass(frozen=True)
class Candidate:
    """A setting: ``threads`` torch compute threads, OpenMP waiting ``wait`` (a key of
    :data:`WAITS`), ``workers`` loader workers (epoch) or ``interop`` inter-op threads
    (forward)."""

    threads: int
    wait: str
    workers: int = 0
    interop: int = 1

    def environment(self) -> dict[str, str]:
        """This process's environment without :data:`THREAD_VARIABLES`, plus the wait's."""
        env = {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES}
        return env | WAITS[self.wait]


def thread_counts(cores: int) -> list[int]:
    """Compute threads to try on ``cores`` cores: every core, one less, 1 (without repeats)."""
    return list(dict.fromkeys(n for n in (cores, cores - 1, 1) if n >= 1))


def epoch_candidates(cores: int, every: bool) -> list[Candidate]:
    """Epoch candidates: with ``every``, each compute thread count x wait x 1 or 0 workers;
    else every wait at all ``cores`` with 1 worker, and ``short`` for the rest."""
    combos = itertools.product(thread_counts(cores), WAITS, (1, 0))
    return [
        Candidate(threads, wait, workers)
        for threads, wait, workers in combos
        if every or wait == "short" or (threads == cores and workers == 1)
    ]


def forward_candidates(cores: int) -> list[Candidate]:
    """Forward candidates: each compute thread count x wait, and every core with 2 inter-op
    threads (``short``)."""
    found = [Candidate(t, w) for t, w in itertools.product(thread_counts(cores), WAITS)]
    return [*found, Candidate(cores, "short", interop=2)] if cores > 1 else found


def threads_option(compute: int, workers: int, cores: int | None = None) -> int:
    """The smallest ``train.py --threads`` whose layout on ``cores`` (default: the usable ones)
    has ``compute`` compute threads beside ``workers`` loader workers; raises ValueError when
    no value has (``--threads`` is capped at the cores, and from 3 cores on workers take some)."""
    cores = cores or usable_cores()
    for threads in range(compute, cores + 1):
        if training_layout(threads, workers, cores=cores).compute == compute:
            return threads
    raise ValueError(f"no --threads gives {compute} compute threads beside {workers} workers")


def epoch_seconds(candidate: Candidate, save_dir: Path) -> float:
    """Wall seconds of a one-epoch demo run of ``train.py`` with ``candidate``'s setting.
    Raises RuntimeError when the run fails or logs another layout."""
    workers = candidate.workers
    command = [
        sys.executable,
        "train.py",
        "-c",
        "config.json",
        "--threads",
        str(threads_option(candidate.threads, workers)),
        "--opt",
        "trainer.epochs=1",
        f"trainer.save_dir={json.dumps(str(save_dir))}",
        "trainer.tensorboard=false",
        f"train_loader.args.num_workers={workers}",
        f"val_loader.args.num_workers={workers}",
    ]
    start = time.perf_counter()
    done = subprocess.run(
        command, cwd=ROOT, env=candidate.environment(), capture_output=True, text=True
    )
    seconds = time.perf_counter() - start
    logged = LOGGED.search(done.stdout + done.stderr)
    if done.returncode != 0 or logged is None or int(logged[1]) != candidate.threads:
        raise RuntimeError(f"{' '.join(command)} failed or ran another layout:\n{done.stderr}")
    return seconds


def forward_seconds(candidate: Candidate, calls: int) -> float:
    """Median seconds of a 320x320 forward in a fresh process with ``candidate``'s setting."""
    command = [sys.executable, str(Path(__file__).resolve()), "--forward-child"]
    command += [str(candidate.threads), str(candidate.interop), str(calls)]
    done = subprocess.run(
        command, cwd=ROOT, env=candidate.environment(), capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"forward of {candidate} failed:\n{done.stderr}")
    return float(done.stdout.split()[-1])


def forward_child(threads: int, interop: int, calls: int) -> None:
    """In the child process: print the median seconds of ``calls`` forwards (one untimed first)
    with ``threads`` intra-op and ``interop`` inter-op threads."""
    import torch

    from models import U2Net
    from utils.runtime.cpu_memory import keep_freed_memory

    keep_freed_memory()  # as the CLIs do
    torch.set_num_threads(threads)
    torch.set_num_interop_threads(interop)
    model = U2Net("lite").eval()
    image = torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    times = []
    with torch.inference_mode():
        for _ in range(calls + 1):
            start = time.perf_counter()
            model(image)
            times.append(time.perf_counter() - start)
    print(statistics.median(times[1:]))


def machine_cpu_seconds() -> float:
    """CPU seconds the machine has run anything since boot (``/proc/stat``: every state but
    idle and iowait)."""
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    """CPU seconds of this process's children: those waited for (with their own descendants),
    and the live ones (the spinning processes of :func:`bench.load.busy`)."""
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    live = 0
    for children in Path(f"/proc/{os.getpid()}/task").glob("*/children"):
        for pid in children.read_text().split():
            with contextlib.suppress(OSError):  # ended meanwhile
                live += sum(int(v) for v in Path(f"/proc/{pid}/stat").read_text().split()[13:15])
    return used.ru_utime + used.ru_stime + live / os.sysconf("SC_CLK_TCK")


class Others:
    """The cores other processes of the machine kept busy during a block (``cores``: their
    CPU seconds / the block's wall seconds), as the machine's CPU time less this bench's."""

    def __enter__(self) -> Others:
        self._start = (time.perf_counter(), machine_cpu_seconds(), own_cpu_seconds())
        return self

    def __exit__(self, *exc: object) -> None:
        wall, machine, own = self._start
        self.seconds = time.perf_counter() - wall
        foreign = machine_cpu_seconds() - machine - (own_cpu_seconds() - own)
        self.cores = max(0.0, foreign) / self.seconds


def wait_for_quiet(limit_s: float) -> None:
    """Wait, ``limit_s`` seconds at most, until other processes keep less than
    :data:`QUIET_CORES` cores busy over one second (the machine is shared)."""
    deadline = time.perf_counter() + limit_s
    while time.perf_counter() < deadline:
        with Others() as others:
            time.sleep(1)
        if others.cores < QUIET_CORES:
            return


Run = tuple[float, float]
"""One run: seconds, and the cores other processes kept busy meanwhile (:class:`Others`)."""
Results = dict[tuple[str, Candidate, str], list[Run]]
"""Every run, by (``"epoch"`` or ``"forward"``, candidate, condition)."""


def measure_round(
    epochs: list[Candidate], forwards: list[Candidate], args: argparse.Namespace, out: Results
) -> None:
    """One run of every candidate idle, then one with ``args.busy`` spinning processes."""
    with tempfile.TemporaryDirectory(prefix="bench_threads_") as scratch:
        for condition in CONDITIONS:
            with busy(args.busy if condition == "busy" else 0):
                for candidate in epochs:
                    wait_for_quiet(args.settle)
                    with Others() as others:
                        seconds = epoch_seconds(candidate, Path(scratch))
                    out["epoch", candidate, condition].append((seconds, others.cores))
                    print(
                        f"  epoch {candidate} {condition}: {seconds:.1f} s "
                        f"(others {others.cores:.2f} cores)",
                        file=sys.stderr,
                    )
                for candidate in forwards:
                    wait_for_quiet(args.settle)
                    with Others() as others:
                        seconds = forward_seconds(candidate, args.calls)
                    out["forward", candidate, condition].append((seconds, others.cores))


def runs(values: list[Run], digits: int) -> str:
    """``values`` as ``a [x], b [y]``: seconds with ``digits`` decimals [others' cores]."""
    return ", ".join(f"{v:.{digits}f} [{cores:.1f}]" for v, cores in values)


def fastest(values: list[Run]) -> float:
    """The seconds of the fastest run: the one least disturbed by the rest of the machine."""
    return min(seconds for seconds, _ in values)


def epoch_table(candidates: list[Candidate], results: Results, default: Candidate) -> list[str]:
    """The Markdown rows of the epoch table; ratio = fastest idle run / the fastest of all."""
    best = min(fastest(results["epoch", c, "idle"]) for c in candidates)
    rows = [
        "| compute threads | waiting | loader workers | idle s | busy s | idle / best |",
        "|---|---|---|---|---|---|",
    ]
    for c in candidates:
        idle, loaded = results["epoch", c, "idle"], results["epoch", c, "busy"]
        mark = "**" if c == default else ""
        rows.append(
            f"| {mark}{c.threads}{mark} | {mark}{c.wait}{mark} | {c.workers} | {runs(idle, 1)} "
            f"| {runs(loaded, 1)} | {fastest(idle) / best:.2f} |"
        )
    return rows


def forward_table(candidates: list[Candidate], results: Results) -> list[str]:
    """The Markdown rows of the forward table."""
    rows = ["| compute threads | inter-op | waiting | idle s | busy s |", "|---|---|---|---|---|"]
    for c in candidates:
        idle, loaded = results["forward", c, "idle"], results["forward", c, "busy"]
        rows.append(
            f"| {c.threads} | {c.interop} | {c.wait} | {runs(idle, 3)} | {runs(loaded, 3)} |"
        )
    return rows


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--all", action="store_true", help="every epoch candidate (about 2x)")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each (default 1)")
    parser.add_argument(
        "--busy", type=int, default=1, help="spinning processes in the busy runs (default 1)"
    )
    parser.add_argument("--calls", type=int, default=5, help="timed forwards (default 5)")
    parser.add_argument(
        "--settle",
        type=float,
        default=20,
        help="seconds to wait at most, before each run, for other processes to quieten "
        "(default 20)",
    )
    parser.add_argument("--forward-child", nargs=3, type=int, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.forward_child:
        forward_child(*args.forward_child)
        return 0
    cores = usable_cores()
    epochs, forwards = epoch_candidates(cores, args.all), forward_candidates(cores)
    demo_workers = json.loads((ROOT / "config.json").read_text())["train_loader"]["args"]
    workers = demo_workers["num_workers"]
    default = Candidate(training_layout(0, workers).compute, "short", workers)
    if not (ROOT / "data" / "demo").is_dir():  # the first run writes the demo images: untimed
        with tempfile.TemporaryDirectory() as scratch:
            epoch_seconds(default, Path(scratch))
    results: Results = defaultdict(list)
    for round_ in range(args.repeats):
        print(f"round {round_ + 1} of {args.repeats}", file=sys.stderr)
        measure_round(epochs, forwards, args, results)
    print(
        f'{cores} usable cores; busy: {args.busy} `python -c "while True: pass"` beside; '
        f"{args.repeats} run(s) each, in rounds; [cores other processes of the machine kept "
        "busy during the run]; bold: the default\n"
    )
    print("Demo epoch (`train.py -c config.json --opt trainer.epochs=1`, whole process, s):\n")
    print("\n".join(epoch_table(epochs, results, default)))
    print(f"\nU2Net lite forward at {SIZE}x{SIZE}, median of {args.calls}, s:\n")
    print("\n".join(forward_table(forwards, results)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
