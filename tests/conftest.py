"""Shared fixtures: the toy 128/96/64 checkpoint trio and its exported model folder, built once per run."""

from __future__ import annotations

import os
from pathlib import Path

# Before any onnxruntime session of the test process (colbert_onnx sets the same on import): no telemetry
# traffic off this machine (runtime/__init__.py).
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

import pytest


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
