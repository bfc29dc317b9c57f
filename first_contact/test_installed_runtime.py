"""`pip install .` alone encodes, scores and reranks as the full environment does (issue 13, section 1).

Runs in the runtime-only venv (COLBERT_ONNX_INSTALL=runtime) against the folder and references that
build_references.py wrote in the full environment; the `colbert-onnx` script is the installed one.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import reference_cases as rc
from installs import require_install

import colbert_onnx.qdrant
from colbert_onnx import ColbertEncoder, ModelFolderError

SCRIPT = Path(sys.executable).parent / "colbert-onnx"
TORCH_ATOL = 1e-4  # the export's parity gate: ONNX fp32 graph against the PyTorch module


def _run_cli(args: list[str], stdin: str = "") -> subprocess.CompletedProcess:
    assert SCRIPT.is_file(), f"the installed console script {SCRIPT} is missing"
    return subprocess.run([str(SCRIPT), *args], input=stdin, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("case", rc.cases(), ids=lambda c: c.name)
def test_runtime_reproduces_the_full_environment(case: rc.Case, model_dir: Path, references):
    rc.compare(case.compute(model_dir), references[case.name], case.atol)


@pytest.mark.parametrize("dim", rc.HEADS)
def test_fp32_vectors_match_the_pytorch_checkpoint(dim: int, model_dir: Path, torch_references):
    want = torch_references[str(dim)]
    got = rc.encode_case(dim, "fp32")(model_dir)
    np.testing.assert_array_equal(got["documents.lengths"], want["documents.lengths"])
    np.testing.assert_allclose(got["queries"], want["queries"], atol=TORCH_ATOL, rtol=0)
    np.testing.assert_allclose(got["documents"], want["documents"], atol=TORCH_ATOL, rtol=0)


def _numbers(value):
    """A parsed CLI JSON value with every number as a float array leaf, for tolerant comparison."""
    if isinstance(value, dict):
        return {k: _numbers(v) for k, v in value.items()}
    if isinstance(value, list) and value and isinstance(value[0], (dict, str)):
        return [_numbers(v) for v in value]
    if isinstance(value, (list, int, float)) and not isinstance(value, bool):
        return np.asarray(value, dtype=np.float64)
    return value


def _assert_close(got, want, where: str = "") -> None:
    if isinstance(want, dict):
        assert sorted(got) == sorted(want), where
        for key in want:
            _assert_close(got[key], want[key], f"{where}.{key}")
    elif isinstance(want, list):
        assert len(got) == len(want), where
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            _assert_close(g, w, f"{where}[{i}]")
    elif isinstance(want, np.ndarray):
        assert got.shape == want.shape, where
        np.testing.assert_allclose(got, want, atol=2e-6, rtol=0, err_msg=where)  # 6-decimal output, one ulp apart
    else:
        assert got == want, where


def _json_lines(text: str) -> list:
    return [_numbers(json.loads(line)) for line in text.splitlines() if line.strip()]


@pytest.mark.parametrize("name", sorted(rc.CLI_CASES))
def test_installed_cli_prints_what_the_full_environment_printed(name: str, model_dir: Path, cli_references):
    proc = _run_cli(rc.cli_args(name, model_dir), rc.CLI_CASES[name]["stdin"])
    assert proc.returncode == 0, proc.stderr
    want = cli_references[name]["stdout"]
    if name.startswith("rerank"):
        _assert_close(_numbers(json.loads(proc.stdout)), _numbers(json.loads(want)))
    else:
        _assert_close(_json_lines(proc.stdout), _json_lines(want))


def test_cli_encode_output_equals_the_direct_encoder(model_dir: Path, references):
    proc = _run_cli(rc.cli_args("encode-documents-96", model_dir), rc.CLI_CASES["encode-documents-96"]["stdin"])
    assert proc.returncode == 0, proc.stderr
    want = references["encode-fp32-96"]
    lengths = want["documents.lengths"]
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    for i, line in enumerate(lines):
        start = int(lengths[:i].sum())
        np.testing.assert_allclose(np.array(line["embeddings"]), want["documents"][start : start + lengths[i]],
                                   atol=1e-6, rtol=0)


def test_cli_export_explains_that_it_needs_the_export_extra(tmp_path: Path):
    require_install()
    proc = _run_cli(["export", str(tmp_path / "missing"), "--out", str(tmp_path / "out")])
    assert proc.returncode == 2 and "[export] extra" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_serve_explains_that_it_needs_the_server_extra(model_dir: Path):
    require_install("runtime")
    proc = _run_cli(["serve", str(model_dir), "--port", "1"])
    assert proc.returncode == 2 and "[server] extra" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_qdrant_helpers_explain_that_they_need_the_qdrant_extra():
    require_install()
    with pytest.raises(ImportError, match=r"qdrant extra"):
        colbert_onnx.qdrant.vector_params(64)


def test_from_pretrained_loads_a_local_folder_and_explains_an_uncached_hub_id(model_dir: Path, tmp_path: Path):
    # huggingface_hub comes with tokenizers, so the hub path is reachable in the base install too
    assert ColbertEncoder.from_pretrained(model_dir, dim=64).encode_queries(["q"])[0].shape == (32, 64)
    with pytest.raises(ModelFolderError, match="not in the Hugging Face cache"):
        ColbertEncoder.from_pretrained("org/missing", cache_dir=tmp_path, local_files_only=True)


def test_without_openvino_the_default_encoder_runs_onnxruntime(model_dir: Path):
    """`pip install .` has no openvino: the runtime imports, picks onnxruntime and encodes (issue 25)."""
    require_install()
    import importlib.util

    assert importlib.util.find_spec("openvino") is None
    encoder = ColbertEncoder(model_dir)
    assert encoder.describe()["engine"] == "onnxruntime"
    assert encoder.encode_queries(["q"])[0].shape == (32, 128)


def test_forced_openvino_without_the_extra_names_it(model_dir: Path):
    require_install()
    from colbert_onnx import EngineUnavailableError

    with pytest.raises(EngineUnavailableError, match=r"openvino"):
        ColbertEncoder(model_dir, engine="openvino")


def test_installed_verify_measures_the_onnxruntime_graphs(model_dir: Path):
    require_install()
    proc = _run_cli(["verify", str(model_dir), "--precision", "fp32"])
    assert proc.returncode == 0 and "PASS  onnxruntime fp32" in proc.stdout, proc.stdout + proc.stderr
    assert "openvino" not in proc.stdout.split("\n", 1)[1]  # not installed here: not measured
