"""Token-budget batching, threads, progress and session options of ColbertEncoder."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from colbert_onnx import ColbertEncoder, InvalidInputError
from colbert_onnx.encoder import plan_batches
from colbert_onnx.session import SessionConfig, cuda_provider_options

TEXTS = [f"Dokument {i}: " + "Berlin Paris Tokyo " * (i % 7) for i in range(40)]


def test_plan_batches_respects_sizes_and_token_budget():
    lengths = np.array([5, 50, 7, 30, 30, 2, 49])
    batches = plan_batches(lengths, batch_size=3, max_batch_tokens=100)
    assert sorted(int(i) for b in batches for i in b) == list(range(7))
    for batch in batches:
        assert len(batch) <= 3
        assert lengths[batch].max() * len(batch) <= 100
    assert list(batches[0]) == [1, 6], "longest sequences first"


def test_max_batch_tokens_smaller_than_a_sequence_is_a_clear_error_saying_what_to_change():
    with pytest.raises(InvalidInputError, match="smaller than one sequence of 50 tokens: raise it to at least 50, or "
                                                "lower document_max_length"):
        plan_batches(np.array([50, 3]), batch_size=4, max_batch_tokens=10)


@pytest.mark.parametrize("kwargs", [{"batch_size": 0}, {"batch_size": -1}, {"max_batch_tokens": 0},
                                    {"document_max_length": 0}, {"threads": 0}, {"window_stride": -3}])
def test_non_positive_sizes_are_rejected(toy_model_dir, kwargs):
    with pytest.raises(InvalidInputError):
        ColbertEncoder(toy_model_dir, **kwargs)


def test_tiny_token_budget_gives_same_vectors_as_default(toy_model_dir):
    default = ColbertEncoder(toy_model_dir).encode_documents(TEXTS)
    tiny = ColbertEncoder(toy_model_dir, batch_size=3, max_batch_tokens=200).encode_documents(TEXTS)
    for a, b in zip(default, tiny, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_batched_queries_equal_one_at_a_time(toy_model_dir):
    encoder = ColbertEncoder(toy_model_dir, batch_size=8)
    batched = encoder.encode_queries(TEXTS[:10])
    for text, vectors in zip(TEXTS[:10], batched, strict=True):
        np.testing.assert_allclose(encoder.encode_queries([text])[0], vectors, atol=1e-5)


@pytest.mark.parametrize(("batch_size", "budget", "rows"), [(32, 100, 3), (32, 64, 2), (2, 10_000, 2), (32, 32, 1),
                                                         (32, None, 32)])
def test_queries_run_within_the_token_budget_too(toy_model_dir, batch_size, budget, rows):
    encoder = ColbertEncoder(toy_model_dir, batch_size=batch_size, max_batch_tokens=budget)
    runs = []
    real_run = encoder._run
    encoder._run = lambda ids, mask: runs.append(ids.shape) or real_run(ids, mask)
    got = encoder.encode_queries(TEXTS[:20])
    assert max(r for r, _ in runs) == min(rows, 20) and sum(r for r, _ in runs) == 20
    for a, b in zip(got, ColbertEncoder(toy_model_dir).encode_queries(TEXTS[:20]), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_a_token_budget_under_the_query_length_is_refused_naming_both(toy_model_dir):
    with pytest.raises(InvalidInputError, match="max_batch_tokens=31 is smaller than one query of 32 tokens"):
        ColbertEncoder(toy_model_dir, max_batch_tokens=31).encode_queries(["q"])


def test_concurrent_threads_give_serial_results(toy_model_dir):
    encoder = ColbertEncoder(toy_model_dir, threads=1)
    serial = [encoder.encode_documents([t])[0] for t in TEXTS]
    with ThreadPoolExecutor(max_workers=8) as pool:
        parallel = list(pool.map(lambda t: encoder.encode_documents([t])[0], TEXTS))
        queries = list(pool.map(lambda t: encoder.encode_queries([t])[0], TEXTS[:8]))
    for a, b in zip(serial, parallel, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)
    for text, q in zip(TEXTS[:8], queries, strict=True):
        np.testing.assert_allclose(encoder.encode_queries([text])[0], q, atol=1e-6)


def test_progress_reports_to_stderr(toy_model_dir, capsys):
    ColbertEncoder(toy_model_dir).encode_documents(TEXTS[:5], progress=True)
    assert "encoding" in capsys.readouterr().err


def test_session_options_are_applied_and_validated(toy_model_dir):
    config = SessionConfig(enable_cpu_mem_arena=False, graph_optimization_level="basic")
    encoder = ColbertEncoder(toy_model_dir, session_options=config)
    assert encoder.session.get_session_options().enable_cpu_mem_arena is False
    with pytest.raises(InvalidInputError, match="graph_optimization_level"):
        ColbertEncoder(toy_model_dir, session_options=SessionConfig(graph_optimization_level="max"))


def test_cuda_provider_options_carry_the_gpu_arena_settings():
    config = SessionConfig(gpu_mem_limit=2**30, arena_extend_strategy="kSameAsRequested")
    assert cuda_provider_options(config) == {"arena_extend_strategy": "kSameAsRequested", "gpu_mem_limit": str(2**30)}
    assert cuda_provider_options(SessionConfig()) == {"arena_extend_strategy": "kNextPowerOfTwo"}


@pytest.mark.parametrize("bad", [{"arena_extend_strategy": "grow"}, {"gpu_mem_limit": 0}, {"gpu_mem_limit": "1GB"}])
def test_bad_gpu_arena_options_are_refused_even_on_cpu(toy_model_dir, bad):
    with pytest.raises(InvalidInputError, match=next(iter(bad))):
        ColbertEncoder(toy_model_dir, session_options=SessionConfig(**bad))
