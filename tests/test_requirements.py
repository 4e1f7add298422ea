"""One environment for both README commands: installing requirements-dev.txt after
requirements.txt must not change a runtime package, so the demo and the tests run on the same
library versions.

pip installs the newest version a requirement allows, and keeps an installed one that satisfies
it. So for every runtime package (named in requirements.txt) that a development-only package
constrains (requirements-dev.txt's own lines and, from the installed metadata, everything they
pull in that the runtime does not), the runtime range must lie inside each such constraint's:
an upper bound no higher, a lower bound no lower. Then whatever version the first command
installs or keeps already satisfies the second.
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


def dev_only_constraints() -> list[tuple[str, Requirement]]:
    """(who, requirement) for each constraint that requirements-dev.txt adds on a runtime
    package."""
    runtime = {canonicalize_name(r.name) for r in read_requirements(ROOT / "requirements.txt")}
    dev = read_requirements(ROOT / "requirements-dev.txt")
    runtime_closure = closure(sorted(runtime))
    dev_closure = closure([r.name for r in dev])
    found = [("requirements-dev.txt", r) for r in dev]
    for who, requirements in dev_closure.items():
        if who not in runtime_closure:
            found += [(who, r) for r in requirements]
    return [(who, r) for who, r in found if canonicalize_name(r.name) in runtime]


def test_installing_the_test_requirements_keeps_every_runtime_version():
    runtime = {canonicalize_name(r.name): r for r in read_requirements(ROOT / "requirements.txt")}
    problems = []
    for who, constraint in dev_only_constraints():
        ours = runtime[canonicalize_name(constraint.name)]
        theirs_upper = upper_bound(constraint.specifier)
        ours_upper = upper_bound(ours.specifier)
        if theirs_upper is not None and (ours_upper is None or ours_upper > theirs_upper):
            problems.append(f"{who} needs {constraint}: requirements.txt allows {ours}")
        theirs_lower, ours_lower = lower_bound(constraint.specifier), lower_bound(ours.specifier)
        if theirs_lower is not None and (ours_lower is None or ours_lower < theirs_lower):
            problems.append(f"{who} needs {constraint}: requirements.txt allows {ours}")
    assert not problems, "\n".join(problems)


def test_the_check_sees_a_range_the_test_tools_would_narrow():
    # pysodmetrics 1.6.2 caps numpy (<2.3.5): an uncapped numpy would be downgraded
    assert upper_bound(SpecifierSet(">=1.24")) is None
    assert upper_bound(SpecifierSet(">=1.24,<2.3.5")) == (Version("2.3.5"), False)
    constraints = {str(r) for _, r in dev_only_constraints()}
    assert any(c.startswith("numpy") and "<" in c for c in constraints), constraints
