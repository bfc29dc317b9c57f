"""tests/cpu_class.py, the plugin of `make test-cpu-classes`: the flags it gives each class, read by the rule."""

from __future__ import annotations

import pytest
from cpu_class import _flags

from colbert_onnx.engines.choice import choose_engine

ZEN4 = frozenset({"fpu", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "avx512_vbmi"})
ALLOWED = {"openvino": None}.get


def test_the_avx2_class_reads_no_avx512_vnni_or_bf16_flag_so_the_rule_keeps_onnxruntime() -> None:
    flags = _flags("avx2", ZEN4)
    assert {"avx2", "fma"} <= flags and not any(f.startswith(("avx512", "amx")) for f in flags)
    assert {choose_engine(flags, p, ALLOWED).engine for p in ("int8", "fp16")} == {"onnxruntime"}


def test_the_amx_class_adds_the_amx_flags_so_the_rule_takes_its_amx_branches() -> None:
    flags = _flags("amx", ZEN4)
    assert flags >= ZEN4 | {"amx_int8", "amx_bf16"}
    assert "amx_int8" in choose_engine(flags, "int8", ALLOWED).reason
    assert "amx_bf16" in choose_engine(flags, "fp16", ALLOWED).reason


def test_the_amx_class_is_refused_on_a_cpu_without_the_units_its_kernels_need() -> None:
    with pytest.raises(pytest.UsageError, match="avx512_bf16, avx512_vnni"):
        _flags("amx", frozenset({"avx2", "fma"}))
