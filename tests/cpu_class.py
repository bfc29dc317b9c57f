"""pytest plugin: the suite as on another CPU class, for the logic that reads the CPU (rules, records, skips).

    COLBERT_ONNX_CPU_CLASS=amx  PYTHONPATH=tests pytest -p cpu_class    (make test-cpu-classes runs both)
    COLBERT_ONNX_CPU_CLASS=avx2 PYTHONPATH=tests pytest -p cpu_class

- ``amx``: /proc/cpuinfo as on a Sapphire Rapids class Xeon: this CPU's flags plus amx_bf16, amx_int8, amx_tile and
  avx512_fp16 (AMX Xeons have every AVX-512 flag the rule reads). Needs a CPU with avx512_vnni and avx512_bf16.
- ``avx2``: as on AMD Zen 3: no avx512* or avx_vnni flag, and OpenVINO's CPU plugin without bf16 units: every
  compile runs f32 whatever the hint, and ``OPTIMIZATION_CAPABILITIES`` has no BF16.

Only what the code reads about the CPU changes, and only in the pytest process (a subprocess the tests start reads
the real CPU): the kernels, and so the figures and timings, stay this CPU's. It proves that the engine rule, the
export's records and the tests' CPU-dependent branches hold on each class; the figures of a class are measured on
such a machine (docs/engines.md).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

CLASS_ENV = "COLBERT_ONNX_CPU_CLASS"
AMX_FLAGS = {"amx_bf16", "amx_int8", "amx_tile", "avx512_fp16"}


def _flags(cpu_class: str, real: frozenset[str]) -> set[str]:
    if cpu_class == "amx":
        missing = {"avx512_vnni", "avx512_bf16"} - real
        if missing:
            raise pytest.UsageError(f"{CLASS_ENV}=amx needs a CPU with {', '.join(sorted(missing))} (its kernels run)")
        return set(real) | AMX_FLAGS
    if cpu_class == "avx2":
        return {f for f in real if not f.startswith("avx512") and f != "avx_vnni" and not f.startswith("amx")}
    raise pytest.UsageError(f"{CLASS_ENV}={cpu_class!r}: expected amx or avx2")


def _openvino_without_bf16_units() -> None:
    import openvino as ov

    compile_model, get_property = ov.Core.compile_model, ov.Core.get_property

    def compile_f32(self, model, device_name=None, config=None, **kwargs):
        return compile_model(self, model, device_name, {**(config or {}), "INFERENCE_PRECISION_HINT": "f32"}, **kwargs)

    def capabilities_without_bf16(self, *args):
        value = get_property(self, *args)
        if args[-1:] == ("OPTIMIZATION_CAPABILITIES",):
            return [c for c in value if c != "BF16"]
        return value

    ov.Core.compile_model, ov.Core.get_property = compile_f32, capabilities_without_bf16


def pytest_configure(config: pytest.Config) -> None:
    cpu_class = os.environ.get(CLASS_ENV)
    if not cpu_class:
        raise pytest.UsageError(f"-p cpu_class needs {CLASS_ENV}=amx or avx2")
    from colbert_onnx.engines import choice

    flags = _flags(cpu_class, choice.cpu_features())
    fake = Path(tempfile.mkdtemp(prefix="cpu-class-")) / "cpuinfo"
    fake.write_text("processor\t: 0\nflags\t\t: " + " ".join(sorted(flags)) + "\n", encoding="utf-8")
    choice.cpu_features.__defaults__ = (str(fake),)  # every reader calls cpu_features() with its default path
    if cpu_class == "avx2":
        try:
            _openvino_without_bf16_units()
        except ImportError:
            pass  # without openvino its tests skip, saying so


def pytest_report_header(config: pytest.Config) -> str:
    from colbert_onnx.engines.choice import cpu_features, named_features

    return f"{CLASS_ENV}={os.environ.get(CLASS_ENV)}: the CPU reads as {', '.join(named_features(cpu_features()))}"
