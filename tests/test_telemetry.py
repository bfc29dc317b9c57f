"""onnxruntime's own telemetry is off by default in every process that imports colbert_onnx (runtime/__init__.py)."""

from __future__ import annotations

import os
import subprocess
import sys


def _after_import(env: dict[str, str]) -> str:
    code = "import os, colbert_onnx; print(os.environ.get('ORT_DISABLE_TELEMETRY'))"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def test_importing_the_package_opts_out_of_onnxruntime_telemetry():
    env = {k: v for k, v in os.environ.items() if k != "ORT_DISABLE_TELEMETRY"}
    assert _after_import(env) == "1"


def test_a_telemetry_setting_of_the_user_is_kept():
    assert _after_import({**os.environ, "ORT_DISABLE_TELEMETRY": "0"}) == "0"
