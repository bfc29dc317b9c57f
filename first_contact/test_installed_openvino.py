"""`pip install '.[openvino]'` alone runs the OpenVINO engine (issue 25): no torch, no NNCF, only openvino beside
the runtime. Runs in the clean openvino venv (COLBERT_ONNX_INSTALL=openvino) against the folder that
build_references.py exported in the full environment, which has openvino, so the folder holds OpenVINO's graphs.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import reference_cases as rc
from installs import require_install

from colbert_onnx import ColbertEncoder, EngineUnavailableError, verify_folder
from colbert_onnx.engines import selection
from colbert_onnx.engines.choice import cpu_features
from colbert_onnx.manifest import read_manifest, write_manifest
from colbert_onnx.model_folder import open_model_folder

SCRIPT = Path(sys.executable).parent / "colbert-onnx"
TORCH_ATOL = 1e-4  # the export's parity gate, as for onnxruntime's fp32 graph (test_installed_runtime.py)
# the units on which auto sends a precision to OpenVINO (docs/engines.md, "engine=auto: the rule")
UNITS = {"int8": {"amx_int8", "avx512_vnni"}, "fp16": {"amx_bf16", "avx512_bf16"}}


def _openvino_encoder(model_dir: Path, dim: int, precision: str) -> ColbertEncoder:
    return ColbertEncoder(model_dir, dim=dim, precision=precision, engine="openvino", threads=1)


@pytest.mark.parametrize("dim", rc.HEADS)
def test_forced_openvino_fp32_matches_the_pytorch_checkpoint(dim: int, model_dir: Path, torch_references):
    require_install("openvino")
    encoder = _openvino_encoder(model_dir, dim, "fp32")
    assert encoder.describe()["engine"] == "openvino"
    want = torch_references[str(dim)]
    documents = encoder.encode_documents(rc.DOCUMENTS)
    np.testing.assert_array_equal([d.shape[0] for d in documents], want["documents.lengths"])
    np.testing.assert_allclose(np.stack(encoder.encode_queries(rc.QUERIES)), want["queries"], atol=TORCH_ATOL, rtol=0)
    np.testing.assert_allclose(np.concatenate(documents), want["documents"], atol=TORCH_ATOL, rtol=0)


def test_every_openvino_graph_that_passed_at_export_passes_verify_here(model_dir: Path):
    """The fixtures are exported on this CPU, so the export's verdicts must hold in the clean install."""
    require_install("openvino")
    verdicts = verify_folder(model_dir, engines=["openvino"])
    assert {v.precision for v in verdicts} >= {"fp32", "fp16"}, [v.line() for v in verdicts]
    for verdict in verdicts:
        assert verdict.error is None, verdict.line()
        if verdict.passed_at_export:
            assert verdict.passed, verdict.line()


@pytest.mark.parametrize("precision", sorted(UNITS))
def test_auto_runs_openvino_exactly_where_the_cpu_has_its_units_and_its_graph_passed(precision: str, model_dir: Path):
    require_install("openvino")
    folder = open_model_folder(model_dir)
    passed = any(g.passed_gates(128) for g in folder.engine_graphs_for("openvino", 128, precision))
    graph = selection.openvino_graph(folder, 128, precision)
    # and where the CPU plugin fuses that graph's attention here (what auto reads besides the flags)
    fused = graph is not None and selection.engine_for(folder, graph, threads=None).attention_fused
    expected = "openvino" if passed and UNITS[precision] & cpu_features() and fused else "onnxruntime"
    encoder = ColbertEncoder(model_dir, precision=precision)
    assert encoder.describe()["engine"] == expected, encoder.describe()
    assert encoder.encode_queries(["q"])[0].shape == (32, 128)


def test_installed_verify_cli_measures_the_openvino_graphs(model_dir: Path):
    require_install("openvino")
    proc = subprocess.run([str(SCRIPT), "verify", str(model_dir), "--engine", "openvino", "--precision", "fp32"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("PASS  openvino    fp32") == len(rc.HEADS), proc.stdout


def test_installed_verify_record_lets_this_cpu_run_a_graph_the_export_could_not_measure(model_dir: Path,
                                                                                        tmp_path: Path):
    """As a folder exported where OpenVINO could not measure an entry (a bf16 hint on a CPU without bf16 units):
    refused, then `verify --record` here measures it and this CPU runs it."""
    require_install("openvino")
    folder = shutil.copytree(model_dir, tmp_path / "unmeasured")
    manifest = read_manifest(folder)
    graphs = tuple(dataclasses.replace(g, fidelity=None) if g.precision == "fp32" else g
                   for g in manifest.engine_graphs)
    write_manifest(folder, dataclasses.replace(manifest, engine_graphs=graphs))
    with pytest.raises(EngineUnavailableError, match="not measured"):
        _openvino_encoder(folder, 128, "fp32")
    proc = subprocess.run([str(SCRIPT), "verify", str(folder), "--engine", "openvino", "--precision", "fp32",
                           "--record"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "recorded in" in proc.stdout, proc.stdout + proc.stderr
    described = _openvino_encoder(folder, 128, "fp32").describe()
    assert (described["engine"], described["gates_verified_here"]) == ("openvino", True), described
