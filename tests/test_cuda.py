"""device="cuda": the CUDA execution provider with IOBinding, checked against the CPU graphs.

These need onnxruntime-gpu and a GPU; everywhere else they are skipped with the reason. They ran on
a lent H100 (docs/gpu.md says when and with which onnxruntime).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnxruntime as ort
import pytest
from test_encoder import TEXTS

from colbert_onnx import ColbertEncoder
from colbert_onnx.export.fidelity import GATES
from colbert_onnx.session import SessionConfig

pytestmark = pytest.mark.skipif(
    "CUDAExecutionProvider" not in ort.get_available_providers(),
    reason="needs onnxruntime-gpu with a CUDA device (this onnxruntime has no CUDAExecutionProvider)",
)
QUERIES = ["Wie hoch ist der Eiffelturm?", "capital of Japan", "¿Dónde está el museo?"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory, toy_trio):
    from colbert_onnx.export import export_model

    return export_model([toy_trio[128], toy_trio[96], toy_trio[64]], tmp_path_factory.mktemp("cuda-onnx"),
                        precisions="fp32,fp16", check_parity=False)


def _cosines(a: list[np.ndarray], b: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([np.sum(x * y, axis=-1) for x, y in zip(a, b, strict=True)])


def test_cuda_session_runs_on_the_cuda_provider(folder):
    enc = ColbertEncoder(folder, device="cuda")
    assert enc.session.get_providers()[0] == "CUDAExecutionProvider"
    assert enc.io_binding is True


def test_cuda_session_gets_the_gpu_arena_options(folder):
    config = SessionConfig(gpu_mem_limit=4 * 2**30, arena_extend_strategy="kSameAsRequested")
    options = ColbertEncoder(folder, device="cuda", session_options=config).session.get_provider_options()
    assert options["CUDAExecutionProvider"]["arena_extend_strategy"] == "kSameAsRequested"
    assert int(options["CUDAExecutionProvider"]["gpu_mem_limit"]) == 4 * 2**30


def test_cuda_fp32_documents_match_cpu_fp32(folder):
    cpu = ColbertEncoder(folder).encode_documents(TEXTS)
    gpu = ColbertEncoder(folder, device="cuda").encode_documents(TEXTS)
    for x, y in zip(cpu, gpu, strict=True):
        assert x.shape == y.shape
        np.testing.assert_allclose(x, y, atol=1e-3)


def test_cuda_fp16_passes_the_fp16_cosine_gate_against_cpu_fp32(folder):
    cpu = ColbertEncoder(folder).encode_documents(TEXTS) + ColbertEncoder(folder).encode_queries(QUERIES)
    gpu16 = ColbertEncoder(folder, precision="fp16", device="cuda")
    got = gpu16.encode_documents(TEXTS) + gpu16.encode_queries(QUERIES)
    cos = _cosines(cpu, got)
    assert np.isfinite(cos).all()
    assert cos.mean() >= GATES["fp16"]["mean_token_cosine"]


def test_cuda_iobinding_gives_the_same_vectors_as_a_plain_run(folder):
    bound = ColbertEncoder(folder, device="cuda", io_binding=True, batch_size=2).encode_documents(TEXTS)
    plain = ColbertEncoder(folder, device="cuda", io_binding=False, batch_size=2).encode_documents(TEXTS)
    for x, y in zip(bound, plain, strict=True):
        np.testing.assert_allclose(x, y, atol=1e-5)


def test_cuda_concurrent_threads_give_the_serial_results(folder):
    enc = ColbertEncoder(folder, device="cuda", batch_size=2)
    serial = [enc.encode_documents([t]) for t in TEXTS]
    with ThreadPoolExecutor(4) as pool:
        concurrent = list(pool.map(lambda t: enc.encode_documents([t]), TEXTS))
    for x, y in zip(serial, concurrent, strict=True):
        np.testing.assert_allclose(x[0], y[0], atol=1e-5)


def test_cuda_rerank_scores_match_cpu(folder):
    cpu = ColbertEncoder(folder).rerank("capital of Japan", TEXTS)
    gpu = ColbertEncoder(folder, device="cuda").rerank("capital of Japan", TEXTS)
    by_index = {r["index"]: r["relevance_score"] for r in gpu}
    np.testing.assert_allclose([r["relevance_score"] for r in cpu], [by_index[r["index"]] for r in cpu], atol=1e-3)
