"""Export a U2Net to ONNX (the eval-mode fused probability map) and check it with onnxruntime.

``python tools/export_onnx.py -m CHECKPOINT -o model.onnx [--size N] [--dynamic]``

CHECKPOINT is one of ours or any file ``models.load_pretrained`` reads (official ``u2net.pth`` /
``u2netp.pth``, the config-driven port). With onnxruntime installed, the ONNX model and the PyTorch
model then run on the same random inputs (two sizes with ``--dynamic``) and the export fails when
their largest absolute difference exceeds the tolerance (1e-4; 1e-2 with ``--half``). The file
is written to a temporary name and renamed to the output only once the export and its check
succeed, so a failure (or a full disk) never leaves a broken file nor replaces a good one.

The graph holds the model only: its input is the normalised RGB image. How to normalise
(``imagenet``: x / 255, or ``official``: x / max(x), then the ImageNet mean/std) is that of the
weights (a checkpoint's ``normalisation``; ``official`` for the official files), printed and
recorded in the file's metadata (``normalisation``), where ``load_pretrained`` reads it back. So
is the input size (``input_size``; by default the checkpoint's validation size, else 320), which
``inference.py -m model.onnx`` then predicts at, like with the checkpoint, and the checkpoint's
``imagery`` section, if any (``imagery``, JSON: which bands of a raster the channels are and how
they are scaled), which ``inference.py`` then reads its inputs with.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make the repository's packages importable
    sys.path.insert(0, str(ROOT))

from utils.runtime.threads import (  # noqa: E402  (imports no torch)
    apply_threads,
    threads_option_error,
    wait_policy,
)

os.environ.update(wait_policy())  # before torch is imported: OpenMP reads it when it loads

import numpy as np  # noqa: E402
import torch  # noqa: E402

from models import U2Net, read_pretrained  # noqa: E402
from models.onnx_weights import IMAGERY_KEY, INPUT_SIZE_KEY, NORMALISATION_KEY  # noqa: E402
from u2seg import input_size  # noqa: E402
from utils.io.atomic import atomic_path  # noqa: E402

INPUT, OUTPUT = "image", "mask"
MIN_SIZE = 32  # tracing below 17 px would skip resizes that larger inputs need


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-m", "--model", required=True, help="checkpoint or pretrained weights")
    parser.add_argument("-o", "--output", required=True, help="ONNX file to write")
    parser.add_argument(
        "--size",
        type=int,
        help="square input size of the export, recorded in the file's metadata (default: the "
        "checkpoint's validation size, else 320)",
    )
    parser.add_argument(
        "--dynamic", action="store_true", help="free batch, height and width (else 1xCxSIZExSIZE)"
    )
    parser.add_argument(
        "--opset", type=int, help="ONNX opset (default 17 with torchscript, 18 with dynamo)"
    )
    parser.add_argument(
        "--exporter",
        choices=("torchscript", "dynamo"),
        default="torchscript",
        help="torch.onnx exporter: torchscript (default, fast) or dynamo (needs onnxscript)",
    )
    parser.add_argument(
        "--half", action="store_true", help="fp16 weights and input/output (needs a CUDA GPU)"
    )
    parser.add_argument(
        "--tolerance",
        type=float,
        help="largest absolute ONNX-vs-PyTorch difference accepted (1e-4, fp16: 1e-2)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="CPU threads for tracing and the check (default 0: every usable core)",
    )
    args = parser.parse_args(argv)
    if threads_option_error(args.threads):
        parser.error(threads_option_error(args.threads))
    if args.size is not None and args.size < MIN_SIZE:
        parser.error(f"--size must be at least {MIN_SIZE}, got {args.size}")
    if args.half and not torch.cuda.is_available():
        parser.error(
            "--half needs a CUDA GPU: the fp16 model is exported and checked on the GPU, "
            "and torch sees none here"
        )
    if args.opset is None:
        args.opset = 18 if args.exporter == "dynamo" else 17
    if args.tolerance is None:
        args.tolerance = 1e-2 if args.half else 1e-4
    return args


def export(
    model: torch.nn.Module,
    path: Path,
    example: torch.Tensor,
    dynamic: bool,
    opset: int = 17,
    exporter: str = "torchscript",
) -> None:
    """Write ``model`` (eval mode) to ``path``, traced on ``example``; with ``dynamic``, batch,
    height and width are free (every resize follows the traced shapes)."""
    axes = {0: "batch", 2: "height", 3: "width"}
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated but fast. It records F.interpolate(size=...) as
        # shape-dependent; U2Net skips a resize only where the shapes always agree (RSU bottoms,
        # RSU-4F, De1's side map) once the traced input has 17 px or more, so the graph holds
        # for every input size.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        common = {"input_names": [INPUT], "output_names": [OUTPUT], "opset_version": opset}
        if exporter == "dynamo":
            dims = {i: torch.export.Dim(name) for i, name in axes.items()}
            shapes = {"dynamic_shapes": (dims,) if dynamic else None, "external_data": False}
        else:
            shapes = {"dynamic_axes": {INPUT: axes, OUTPUT: axes} if dynamic else None}
        dynamo = exporter == "dynamo"
        torch.onnx.export(model, (example,), str(path), dynamo=dynamo, **common, **shapes)


def check(
    model: torch.nn.Module, path: Path, shapes: list[tuple[int, ...]]
) -> list[tuple[tuple[int, ...], float]]:
    """Largest absolute difference between onnxruntime and ``model`` on random inputs of each
    shape (on the model's device and dtype)."""
    import onnxruntime as ort

    param = next(model.parameters())
    wanted = ["CUDAExecutionProvider"] if param.is_cuda else []
    providers = [p for p in wanted if p in ort.get_available_providers()]
    session = ort.InferenceSession(str(path), providers=[*providers, "CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(0)
    results = []
    for shape in shapes:
        x = torch.randn(shape, generator=generator).to(param.device, param.dtype)
        with torch.no_grad():
            expected = model(x).float().cpu().numpy()
        (got,) = session.run([OUTPUT], {INPUT: x.cpu().numpy()})
        results.append((shape, float(np.abs(got.astype(np.float32) - expected).max())))
    return results


def check_shapes(size: int, channels: int, dynamic: bool) -> list[tuple[int, ...]]:
    """The export size, and with ``dynamic`` also batch 2 at odd, non-square sizes."""
    if not dynamic:
        return [(1, channels, size, size)] * 2
    return [(1, channels, size, size), (2, channels, size * 15 // 16 | 1, size * 13 // 16 | 1)]


class CheckFailedError(Exception):
    """The ONNX model differs from PyTorch by more than the tolerance."""


def verify(model: torch.nn.Module, path: Path, args: argparse.Namespace, channels: int) -> None:
    """Compare the ONNX file at ``path`` with ``model`` under onnxruntime (skipped, with a note,
    when it is not installed), printing the difference at each checked shape. Raises
    :class:`CheckFailedError` when the largest exceeds ``args.tolerance``."""
    try:
        import onnxruntime
    except ModuleNotFoundError:
        print("onnxruntime is not installed: skipped the check (pip install onnxruntime)")
        return
    worst = 0.0
    print(f"onnxruntime {onnxruntime.__version__} vs PyTorch, largest absolute difference:")
    for shape, diff in check(model, path, check_shapes(args.size, channels, args.dynamic)):
        print(f"  input {'x'.join(map(str, shape))}: {diff:.3g}")
        worst = max(worst, diff)
    if not worst <= args.tolerance:
        raise CheckFailedError(f"{worst:.3g} exceeds the tolerance {args.tolerance:g}")
    print(f"OK: within {args.tolerance:g}")


def record_metadata(
    path: Path, normalisation: str, size: int, imagery: dict[str, Any] | None = None
) -> None:
    """Add the ``normalisation``, ``input_size`` and (when given) ``imagery`` metadata entries to
    the ONNX file at ``path`` (read back by :func:`models.onnx_weights.onnx_state_dict`)."""
    import onnx

    graph = onnx.load(str(path))
    entries = [(NORMALISATION_KEY, normalisation), (INPUT_SIZE_KEY, str(size))]
    if imagery is not None:
        entries.append((IMAGERY_KEY, json.dumps(imagery)))
    for key, value in entries:
        entry = graph.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(graph, str(path))


def export_checked(
    model: torch.nn.Module,
    output: Path,
    args: argparse.Namespace,
    channels: int,
    normalisation: str = "imagenet",
    imagery: dict[str, Any] | None = None,
) -> None:
    """Export ``model`` to a temporary file beside ``output``, check it (:func:`verify`) and only
    then rename it to ``output``: a failed export or check, or a full disk, leaves a previous
    file at ``output`` untouched and no temporary file (see :func:`utils.io.atomic.atomic_path`).
    """
    param = next(model.parameters())
    example = torch.randn(1, channels, args.size, args.size).to(param.device, param.dtype)
    start = time.perf_counter()
    with atomic_path(output) as tmp:
        try:
            export(model, tmp, example, args.dynamic, args.opset, args.exporter)
            record_metadata(tmp, normalisation, args.size, imagery)
        except ModuleNotFoundError as err:
            raise ModuleNotFoundError(
                f"the {args.exporter} exporter needs {err.name} (pip install {err.name})",
                name=err.name,
            ) from err
        dims = (
            "dynamic batch, height and width" if args.dynamic else "x".join(map(str, example.shape))
        )
        print(
            f"exported {output.name} ({tmp.stat().st_size / 2**20:.1f} MiB, opset {args.opset}, "
            f"{dims}, {'fp16' if args.half else 'fp32'}) in {time.perf_counter() - start:.1f} s"
        )
        verify(model, tmp, args, channels)


def main(argv: list[str] | None = None) -> int:
    """Export and check; returns the exit code (0, or 1 when the check fails)."""
    args = parse_args(argv)
    apply_threads(args.threads)
    weights = read_pretrained(args.model)
    if args.size is None:  # tracing needs MIN_SIZE; a smaller trained size still runs
        args.size = max(MIN_SIZE, input_size(weights.config, weights.input_size))
    model = U2Net.from_weights(weights)
    channels = weights.in_channels
    print(f"loaded {args.model}: U2Net {model.variant!r}, {model.num_parameters():,} parameters")
    print(
        f"inputs (recorded in the file's metadata): size {args.size}, normalisation "
        f"{weights.normalisation!r}: "
        + ("x / max(x)" if weights.normalisation == "official" else "x / 255")
        + ", then the ImageNet mean/std"
        + (f"; imagery {json.dumps(weights.imagery)}" if weights.imagery else "")
    )
    if args.half:
        model = model.cuda().half()
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    try:
        normalisation = weights.normalisation or "imagenet"
        export_checked(model, output, args, channels, normalisation, weights.imagery)
    except CheckFailedError as err:
        kept = f"the previous {output} is kept" if output.exists() else f"{output} is not written"
        print(f"FAILED: {err}; {kept}", file=sys.stderr)
        return 1
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (ValueError, OSError, ImportError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
