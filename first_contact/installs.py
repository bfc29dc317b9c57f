"""Which install a first-contact test runs in, from the environment that first_contact/run.sh sets."""

from __future__ import annotations

import os

import pytest

FIXTURES_ENV = "COLBERT_ONNX_FIRST_CONTACT"
INSTALL_ENV = "COLBERT_ONNX_INSTALL"
# floor: '.[server]' at the lowest versions declared; latest: '.[server]' at the newest releases, unpinned
INSTALLS = ("runtime", "server", "openvino", "floor", "latest")


def install_kind() -> str | None:
    """One of INSTALLS in a CI clean venv; None in the development environment."""
    kind = os.environ.get(INSTALL_ENV)
    if kind is not None and kind not in INSTALLS:
        raise pytest.UsageError(f"{INSTALL_ENV}={kind!r}: expected one of {', '.join(INSTALLS)}")
    return kind


def require_install(*kinds: str) -> None:
    """Skip unless this is a clean venv of one of `kinds` (default: any); in CI such a skip fails (conftest.py)."""
    kind = install_kind()
    if kind is None or (kinds and kind not in kinds):
        pytest.skip(f"checks the clean {' or '.join(kinds or INSTALLS)} venv (make test-install), not this one")
