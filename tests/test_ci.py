"""CI's contract: `.ci/run` runs the README's test command, and its constraints pin every package the project and its
tests require, at versions that satisfy pyproject's ranges (a new dependency without a refreshed pin fails here)."""
from __future__ import annotations

import re
import tomllib

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from repro import REPO_ROOT


def _pins() -> dict[str, Version]:
    lines = (REPO_ROOT / ".ci" / "constraints.txt").read_text().splitlines()
    pins = {}
    for line in lines:
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"not an exact pin: {line!r}"
            pins[canonicalize_name(name)] = Version(version)
    return pins


def test_ci_runs_the_readme_test_command():
    readme = (REPO_ROOT / "README.md").read_text()
    commands = re.findall(r"^python3 -m venv .* -m pytest .*$", readme, flags=re.MULTILINE)
    assert len(commands) == 1, commands
    assert commands[0] in (REPO_ROOT / ".ci" / "run").read_text()
    assert "-c .ci/constraints.txt" in commands[0]


def test_constraints_pin_every_requirement_within_its_range():
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    required = [Requirement(r) for r in [*project["dependencies"], *extras["test"], *extras["inception"]]]
    pins = _pins()
    for req in required:
        if req.name == project["name"]:  # repro[inception]: listed above
            continue
        pinned = pins.get(canonicalize_name(req.name))
        assert pinned is not None, f"{req.name} is required but not pinned in .ci/constraints.txt"
        assert req.specifier.contains(pinned, prereleases=True), f"{req.name}=={pinned} is outside {req.specifier}"
    readme = (REPO_ROOT / "README.md").read_text()
    assert pins["torch"] == Version(re.search(r"torch==([\d.]+) ", readme).group(1))
