"""What a benchmark scores: methods, datasets and the prediction folder of every pair of them,
from ``NAME=DIR`` command-line entries or a JSON file.

The layout researchers keep: one ground-truth folder per dataset, one folder per method holding
one prediction folder per dataset, ``<method_dir>/<dataset>/``. A JSON file
(``evaluate.py --config bench.json``) says the same, and may give a method's folders one by one::

    {
      "datasets": {"ECSSD": "data/ECSSD/masks", "DUTS-TE": "data/DUTS-TE/masks"},
      "methods": {
        "U2Net": "predictions/u2net",
        "BASNet": {"ECSSD": "other/basnet_ecssd", "DUTS-TE": "other/basnet_duts"}
      }
    }

Relative paths in the file are relative to the file's folder. Names become file names of the
outputs, so they are letters, digits and ``_ . + -`` (not starting with ``.``).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

NAME_PATTERN = re.compile(r"[A-Za-z0-9_+-][A-Za-z0-9_.+-]*")
"""A method or dataset name: it names output files (``tables/NAME.md``, ``cache/M/D.json``)."""
OVERALL = "overall"
"""The name of the table of all datasets together (``tables/overall.md``): no dataset's name."""


class BenchmarkSpecError(ValueError):
    """A ``NAME=DIR`` entry or a benchmark JSON file is malformed."""


@dataclass
class BenchmarkSpec:
    """``datasets``: name to ground-truth folder; ``predictions``: method name to (dataset name
    to prediction folder, None where the configuration gives none), every dataset of
    ``datasets`` present. Both keep their order (that of the tables, plots and legends)."""

    datasets: dict[str, Path] = field(default_factory=dict)
    predictions: dict[str, dict[str, Path | None]] = field(default_factory=dict)

    @property
    def methods(self) -> list[str]:
        """The method names, in order."""
        return list(self.predictions)


def check_name(name: str, what: str) -> str:
    """Return ``name`` if it matches :data:`NAME_PATTERN` (and, for a ``what`` of
    ``"dataset"``, is not :data:`OVERALL`); else raise :class:`BenchmarkSpecError` naming it as a
    ``what`` name."""
    if not NAME_PATTERN.fullmatch(name):
        raise BenchmarkSpecError(
            f"{what} name {name!r} is not usable as a file name: use letters, digits and "
            "_ . + - (not starting with .)"
        )
    if what == "dataset" and name == OVERALL:
        raise BenchmarkSpecError(
            f"dataset name {OVERALL!r} names the table of all datasets together: choose another"
        )
    return name


def parse_entries(entries: Iterable[str], option: str) -> dict[str, Path]:
    """``NAME=DIR`` entries (of the command-line ``option``) to ``{NAME: Path(DIR)}``; raises
    :class:`BenchmarkSpecError` for an entry without ``=``, a bad or repeated name."""
    parsed: dict[str, Path] = {}
    for entry in entries:
        name, sep, folder = entry.partition("=")
        if not sep or not folder:
            raise BenchmarkSpecError(f"{option} takes NAME=DIR entries, got {entry!r}")
        if check_name(name, option.lstrip("-").rstrip("s")) in parsed:
            raise BenchmarkSpecError(f"{option}: {name!r} is given twice")
        parsed[name] = Path(folder).expanduser()
    return parsed


def _folders(value: Any, key: str, base: Path) -> dict[str, Path] | Path:
    """A method's entry of the JSON file: a folder, or ``{dataset: folder}``."""
    if isinstance(value, str):
        return base / Path(value).expanduser()
    if isinstance(value, dict) and all(isinstance(v, str) for v in value.values()):
        return {name: base / Path(folder).expanduser() for name, folder in value.items()}
    raise BenchmarkSpecError(
        f"{key} must be a folder or an object of dataset: folder, got {json.dumps(value)}"
    )


def read_config(path: str | os.PathLike) -> tuple[dict[str, Path], dict[str, Any]]:
    """The ``datasets`` (name to GT folder) and ``methods`` (name to folder, or to dataset-name
    to folder) of a benchmark JSON file, paths resolved against its folder. Raises
    :class:`BenchmarkSpecError` naming the file and key for anything malformed."""
    path = Path(path)
    if path.suffix.lower() != ".json":
        raise BenchmarkSpecError(f"{path}: the benchmark configuration must be a .json file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise BenchmarkSpecError(f"cannot read the benchmark configuration {path}: {err}") from err
    if not isinstance(data, dict) or set(data) - {"datasets", "methods"}:
        raise BenchmarkSpecError(
            f"{path}: expected an object with the keys 'datasets' and 'methods' only"
        )
    base = path.parent
    datasets = data.get("datasets", {})
    methods = data.get("methods", {})
    if not isinstance(datasets, dict) or not all(isinstance(v, str) for v in datasets.values()):
        raise BenchmarkSpecError(f"{path}: 'datasets' must be an object of name: GT folder")
    if not isinstance(methods, dict):
        raise BenchmarkSpecError(f"{path}: 'methods' must be an object of name: folder")
    for name in datasets:
        check_name(name, "dataset")
    for name in methods:
        check_name(name, "method")
    gt = {name: base / Path(folder).expanduser() for name, folder in datasets.items()}
    return gt, {name: _folders(v, f"{path}: methods.{name}", base) for name, v in methods.items()}


def build_spec(datasets: dict[str, Path], methods: dict[str, Any]) -> BenchmarkSpec:
    """The spec of ``datasets`` and ``methods`` (a method's folder holds ``<dataset>/``
    sub-folders, or is a dict of dataset name to folder; a dataset missing from such a dict
    gets None, reported as missing). Raises :class:`BenchmarkSpecError` when there
    is no method or no dataset, or a dict names an unknown dataset."""
    if not datasets or not methods:
        raise BenchmarkSpecError(
            "benchmark mode needs at least one method and one dataset "
            "(--methods NAME=DIR ... --datasets NAME=GT_DIR ..., or --config FILE)"
        )
    spec = BenchmarkSpec(datasets=dict(datasets))
    for method, folders in methods.items():
        if isinstance(folders, dict):
            unknown = sorted(set(folders) - set(datasets))
            if unknown:
                raise BenchmarkSpecError(
                    f"method {method!r} names unknown dataset(s) {unknown}; datasets: "
                    f"{', '.join(datasets)}"
                )
            spec.predictions[method] = {name: folders.get(name) for name in datasets}
        else:
            spec.predictions[method] = {name: Path(folders) / name for name in datasets}
    return spec
