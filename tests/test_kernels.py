"""The MaxSim kernels ship as package data that the export-side generator reproduces byte for byte."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx", reason="regenerating the kernels needs onnx ([export] extra)")

import colbert_onnx.scoring as scoring  # noqa: E402
from colbert_onnx.export import kernels  # noqa: E402


def test_shipped_kernel_files_equal_the_regenerated_ones():
    assert kernels.stale_kernels() == [], "run python -m colbert_onnx.export.kernels --write and commit"


@pytest.mark.parametrize("kind", scoring.KERNEL_KINDS)
def test_runtime_reads_the_generated_graph_bytes(kind: str):
    assert scoring._graph(kind) == kernels.kernel_model(kind)


def test_check_reports_a_stale_kernel_file(tmp_path: Path, capsys):
    kernels.write_kernels(tmp_path)
    assert kernels.main(["--check", "--dir", str(tmp_path)]) == 0
    kernels.kernel_file("float16", tmp_path).write_text(kernels.kernel_text("float32"), encoding="ascii")
    assert kernels.main(["--check", "--dir", str(tmp_path)]) == 1
    assert "float16" in capsys.readouterr().err


def test_missing_kernel_file_names_the_file(monkeypatch, tmp_path: Path):
    monkeypatch.setattr(scoring, "_KERNEL_DIR", tmp_path)
    monkeypatch.setattr(scoring, "_SESSIONS", {})
    with pytest.raises(RuntimeError, match=r"maxsim_float32\.b64"):
        scoring.maxsim(np.ones((2, 8), np.float32), [np.ones((3, 8), np.float32)])
