"""Shared fixtures, built once per run: the toy 128/96/64 checkpoint trio and its exported model folder; the outlier
trio and its default export (its int8 and OpenVINO graphs are what tests/test_quantization.py and
tests/test_openvino_int8.py check)."""

from __future__ import annotations

import os
from pathlib import Path

# Before any onnxruntime session of the test process (colbert_onnx sets the same on import): no telemetry
# traffic off this machine (runtime/__init__.py).
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

import importlib.util

import pytest

if importlib.util.find_spec("openvino") is not None:
    # Tests import openvino directly too: the first import goes through the runtime's guard, so that no test run
    # sends OpenVINO's usage telemetry or writes under ~/intel (runtime/telemetry.py).
    from colbert_onnx.telemetry import import_without_telemetry

    import_without_telemetry("openvino")


@pytest.fixture(scope="session")
def toy_trio(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    """dim -> checkpoint folder in the real jinaai/jina-colbert-v2 layout (bf16, toy size)."""
    pytest.importorskip("torch", reason="generating toy checkpoints needs the [export] extra (torch)")
    from colbert_onnx.export import make_toy_trio

    return make_toy_trio(tmp_path_factory.mktemp("toy-checkpoints"))


@pytest.fixture(scope="session")
def toy_model_dir(toy_trio: dict[int, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The trio exported into one model folder (fp32, shared backbone). Treat it as read-only."""
    from colbert_onnx.export import export_model

    out = tmp_path_factory.mktemp("toy-onnx")
    return export_model([toy_trio[128], toy_trio[96], toy_trio[64]], out)


@pytest.fixture(scope="session")
def toy_encoder(toy_model_dir: Path):
    from colbert_onnx import ColbertEncoder

    return ColbertEncoder(toy_model_dir, dim=128)


@pytest.fixture(scope="session")
def outlier_trio(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    """4 x 512 with 4 activation-outlier channels (x10-30 LayerNorm gains), heads quiet on them, moderate attention."""
    pytest.importorskip("torch", reason="generating toy checkpoints needs the [export] extra (torch)")
    from colbert_onnx.export.fidelity_report import make_outlier_toy_trio

    return make_outlier_toy_trio(tmp_path_factory.mktemp("outlier-checkpoints"))


@pytest.fixture(scope="session")
def outlier_model_dir(outlier_trio: dict[int, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The outlier trio exported with the defaults (fp32, int8, fp16; OpenVINO's graphs too where it is installed),
    the int8 searches included. Treat it as read-only: tests that change it work on a copy."""
    from colbert_onnx.export import export_model

    return export_model([outlier_trio[d] for d in (128, 96, 64)], tmp_path_factory.mktemp("outlier-onnx") / "model")


@pytest.fixture(scope="session")
def fewer_heads_model_dirs(toy_trio: dict[int, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[tuple, Path]:
    """heads -> a folder exported from only those checkpoints of the trio (fp32, onnxruntime): (96, 64), and (64,)
    as a folder exported from jinaai/jina-colbert-v2-64 alone."""
    from colbert_onnx.export import export_model

    return {heads: export_model([toy_trio[d] for d in heads], tmp_path_factory.mktemp("heads"), precisions="fp32",
                                engines="onnxruntime") for heads in ((96, 64), (64,))}
