"""constraints.txt pins every dependency pyproject.toml names (squall's and squall[dev]'s),
each at a version inside pyproject.toml's range, and the image and CI install from it."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)$")


def pins() -> dict[str, Version]:
    found: dict[str, Version] = {}
    for number, line in enumerate((REPO / "constraints.txt").read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = PIN.match(line)
        assert match, f"constraints.txt:{number}: {line!r} is not NAME==VERSION"
        name = canonicalize_name(match.group(1))
        assert name not in found, f"constraints.txt:{number}: {name} pinned twice"
        found[name] = Version(match.group(2))
    return found


def test_every_dependency_is_pinned_inside_its_range() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = [*project["dependencies"], *project["optional-dependencies"]["dev"]]
    pinned = pins()
    problems = []
    for text in wanted:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        if name not in pinned:
            problems.append(f"{name}: not in constraints.txt")
        elif not requirement.specifier.contains(pinned[name], prereleases=True):
            problems.append(f"{name}: pinned {pinned[name]}, pyproject.toml asks {text!r}")
    assert not problems, ("run scripts/refresh-constraints:\n  " + "\n  ".join(problems))


def test_the_image_and_ci_install_from_the_constraints() -> None:
    dockerfile = (REPO / "deploy" / "Dockerfile").read_text()
    assert "-c /src/constraints.txt" in dockerfile
    assert "!constraints.txt" in (REPO / ".dockerignore").read_text()
    assert "-c constraints.txt" in (REPO / ".ci" / "run").read_text()
