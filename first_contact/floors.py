"""Constraint lines that hold colbert-onnx's declared requirements at their floors: `numpy>=1.24` -> `numpy==1.24.*`.

first_contact/run.sh installs a venv with them (the `floor` job), so the lowest versions pyproject.toml claims are
run by the same first-contact tests as the development venv's versions: a floor nobody ran is not a claim.
Read from the installed colbert-onnx's metadata (the development venv's editable install of this pyproject.toml).

    python first_contact/floors.py [EXTRA ...] > floors.txt
    python first_contact/floors.py --python      # the lowest Python declared (Requires-Python), e.g. 3.11
"""

from __future__ import annotations

import importlib.metadata
import sys

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version


def floor_constraints(extras: list[str]) -> list[str]:
    """`name==X.Y.*` (the floor's minor release, newest patch) for every base requirement and every requirement of
    `extras` that declares a `>=` floor."""
    lines = []
    for spec in importlib.metadata.requires("colbert-onnx") or []:
        req = Requirement(spec)
        wanted = req.marker is None or any(req.marker.evaluate({"extra": extra}) for extra in extras)
        floor = minor_floor(req.specifier)
        if wanted and floor:
            lines.append(f"{req.name}=={floor}.*")
    return sorted(set(lines))


def python_floor() -> str:
    """The lowest Python minor release `Requires-Python` admits (`>=3.11` -> `3.11`): the floor job's interpreter."""
    spec = importlib.metadata.metadata("colbert-onnx")["Requires-Python"]
    floor = minor_floor(SpecifierSet(spec))
    if floor is None:
        raise SystemExit(f"Requires-Python {spec!r} declares no >= floor")
    return floor


def minor_floor(specifiers: SpecifierSet) -> str | None:
    """`X.Y` of the highest `>=` bound in `specifiers` (`>=1.24.2` -> `1.24`), None without one."""
    floors = [Version(s.version) for s in specifiers if s.operator == ">="]
    if not floors:
        return None
    major, minor = (max(floors).release + (0,))[:2]
    return f"{major}.{minor}"


if __name__ == "__main__":
    if sys.argv[1:] == ["--python"]:
        print(python_floor())
    else:
        print("\n".join(floor_constraints(sys.argv[1:])))
