"""Fixtures of the first-contact tests: the prebuilt model folder and its references.

In CI (`make test-install`) they run in venvs holding only `pip install .` or `pip install '.[server]'`
(plus pytest), with COLBERT_ONNX_FIRST_CONTACT pointing at the folder that build_references.py
wrote in the full environment, and COLBERT_ONNX_INSTALL naming the install (runtime or server).
There a skipped test counts as a failure: nothing may pass by not running. Run by hand in the
development venv without those variables, the folder is built into a temporary directory instead.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import reference_cases as rc
from installs import FIXTURES_ENV, INSTALL_ENV, install_kind


def pytest_configure(config: pytest.Config) -> None:
    if install_kind() is not None and not os.environ.get(FIXTURES_ENV):
        raise pytest.UsageError(f"{INSTALL_ENV} is set but {FIXTURES_ENV} (the prebuilt fixtures folder) is not")


def _fail_if_skipped(report: pytest.TestReport | pytest.CollectReport) -> None:
    if install_kind() is not None and report.skipped:
        reason = report.longrepr[-1] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped in the {install_kind()} install, where every first-contact test must run: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    _fail_if_skipped(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector):
    outcome = yield
    _fail_if_skipped(outcome.get_result())  # a module-level importorskip


@pytest.fixture(scope="session")
def fixtures_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder build_references.py wrote: prebuilt in CI, built here on demand otherwise."""
    prebuilt = os.environ.get(FIXTURES_ENV)
    if prebuilt:
        folder = Path(prebuilt)
        if not (folder / rc.REFERENCES).is_file():
            raise pytest.UsageError(f"{FIXTURES_ENV}={prebuilt}: no {rc.REFERENCES}; run build_references.py first")
        return folder
    pytest.importorskip("torch", reason=f"building the fixtures needs the [export] extra; or set {FIXTURES_ENV}")
    from build_references import build

    return build(tmp_path_factory.mktemp("first-contact"))


@pytest.fixture(scope="session")
def model_dir(fixtures_dir: Path) -> Path:
    return fixtures_dir / rc.MODEL_FOLDER


def _grouped(path: Path) -> dict[str, dict[str, np.ndarray]]:
    """An .npz of "<group>/<name>" keys as {group: {name: array}}."""
    groups: dict[str, dict[str, np.ndarray]] = {}
    with np.load(path) as data:
        for key in data.files:
            group, name = key.split("/", 1)
            groups.setdefault(group, {})[name] = data[key]
    return groups


@pytest.fixture(scope="session")
def references(fixtures_dir: Path) -> dict[str, dict[str, np.ndarray]]:
    """case name -> its arrays as computed in the full environment."""
    return _grouped(fixtures_dir / rc.REFERENCES)


@pytest.fixture(scope="session")
def torch_references(fixtures_dir: Path) -> dict[str, dict[str, np.ndarray]]:
    """head (as str) -> PyTorch fp32 vectors of the reference queries and documents."""
    return _grouped(fixtures_dir / rc.TORCH_REFERENCES)


@pytest.fixture(scope="session")
def cli_references(fixtures_dir: Path) -> dict[str, dict]:
    return json.loads((fixtures_dir / rc.CLI_REFERENCES).read_text(encoding="utf-8"))
