"""The installed package itself: what it requires, what it ships, and what it never imports.

Runs in every clean venv (runtime, server, openvino, floor, latest); importing the runtime loads openvino nowhere, not
even where it is installed. In the development venv the checks that are about
a clean install are skipped (that venv has the [export] extra by design).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
from installs import install_kind, require_install
from packaging.requirements import Requirement  # pytest's and onnxruntime's dependency
from packaging.utils import canonicalize_name

import colbert_onnx
from colbert_onnx.scoring import KERNEL_KINDS, kernel_file

FORBIDDEN = ("torch", "onnx", "safetensors", "optimum", "transformers", "openvino", "nncf")
EXTRAS = {"": {"numpy", "onnxruntime", "tokenizers"}, "server": {"fastapi", "uvicorn", "orjson", "pydantic"},
          "qdrant": {"qdrant-client"}, "hub": {"huggingface-hub"}, "openvino": {"openvino"},
          # the exporter writes the OpenVINO engine's graphs by default (docs/engines.md): openvino comes with it
          "export": {"torch", "safetensors", "onnx", "huggingface-hub", "onnx-ir", "openvino", "nncf"}}


def test_forbidden_packages_are_not_installed():
    require_install()
    allowed = {"openvino"} if install_kind() == "openvino" else set()  # what that install is for
    found = {name: importlib.util.find_spec(name).origin for name in FORBIDDEN
             if name not in allowed and importlib.util.find_spec(name)}
    assert not found, f"a clean `pip install .` venv must not hold these: {found}"


def test_openvino_is_installed_exactly_where_its_extra_was_asked_for():
    require_install()
    assert (importlib.util.find_spec("openvino") is not None) == (install_kind() == "openvino")


def test_package_is_installed_from_a_built_wheel_not_the_checkout():
    require_install()
    location = Path(colbert_onnx.__file__).resolve()
    assert "site-packages" in location.parts, f"colbert_onnx comes from {location}, not the venv's site-packages"


def test_maxsim_kernels_ship_as_package_data():
    for kind in KERNEL_KINDS:
        path = kernel_file(kind)
        assert path.is_file() and path.parent.parent == Path(colbert_onnx.__file__).parent, path


def _requirements(extra: str) -> set[str]:
    """Distribution names colbert-onnx requires with `extra` ('' for the base install), normalized."""
    names = set()
    for spec in importlib.metadata.requires("colbert-onnx") or []:
        req = Requirement(spec)
        if (req.marker is None) if not extra else (req.marker is not None and req.marker.evaluate({"extra": extra})):
            names.add(canonicalize_name(req.name))
    return names


@pytest.mark.parametrize("extra", sorted(EXTRAS), ids=lambda e: e or "base")
def test_install_requires_exactly_the_documented_packages(extra):
    assert _requirements(extra) == EXTRAS[extra]


def test_importing_the_runtime_and_server_loads_none_of_the_forbidden_modules():
    web = importlib.util.find_spec("fastapi") is not None  # with the [server] extra: the app module too
    code = (
        "import sys, colbert_onnx, colbert_onnx.cli, colbert_onnx.qdrant, colbert_onnx.hub, colbert_onnx.server\n"
        + ("import colbert_onnx.server.app\n" if web else "")
        + f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r})\n"
        + "assert not bad, bad\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
