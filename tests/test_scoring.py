"""MaxSim: vectorized scores equal the per-document loop, for ragged documents and across blocks and shards;
the int8 kernel (and PackedDocuments storing int8) against the exact scores."""

from __future__ import annotations

import numpy as np
import pytest

import colbert_onnx.scoring as scoring
from colbert_onnx import InvalidInputError, maxsim
from colbert_onnx.packed import PackedDocuments
from colbert_onnx.scoring import maxsim_int8
from colbert_onnx.vectors import QuantizedVectors, pack_documents, quantize_vectors


def _unit(rng: np.random.Generator, *shape: int) -> np.ndarray:
    x = rng.standard_normal(shape).astype(np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _naive(query: np.ndarray, docs: list[np.ndarray]) -> np.ndarray:
    return np.array([(query @ d.T).max(axis=1).sum() for d in docs])


def test_maxsim_equals_per_document_loop_on_ragged_documents():
    rng = np.random.default_rng(0)
    query = _unit(rng, 32, 16)
    docs = [_unit(rng, n, 16) for n in (1, 7, 300, 2, 45)]
    np.testing.assert_allclose(maxsim(query, docs), _naive(query, docs), rtol=1e-5, atol=1e-5)


def test_maxsim_with_document_split_across_blocks(monkeypatch):
    monkeypatch.setattr(scoring, "_BLOCK_TOKENS", 5)
    rng = np.random.default_rng(1)
    query = _unit(rng, 4, 8)
    docs = [_unit(rng, n, 8) for n in (3, 11, 1, 6, 5, 2)]
    np.testing.assert_allclose(maxsim(query, docs), _naive(query, docs), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("make_queries", [lambda rng: _unit(rng, 3, 32, 8),
                                          lambda rng: [_unit(rng, 32, 8), _unit(rng, 5, 8)]],
                         ids=["one-array", "different-lengths-one-call-each"])
def test_maxsim_of_several_queries_gives_one_row_per_query(make_queries):
    rng = np.random.default_rng(2)
    queries = make_queries(rng)
    docs = [_unit(rng, n, 8) for n in (4, 9)]
    scores = maxsim(queries, docs)
    assert scores.shape == (len(queries), 2)
    for q in range(len(queries)):
        np.testing.assert_allclose(scores[q], _naive(queries[q], docs), rtol=1e-5, atol=1e-5)


def test_maxsim_rejects_empty_document():
    with pytest.raises(InvalidInputError, match=r"documents_vectors\[1\] has no vectors"):
        maxsim(np.ones((2, 4), np.float32), [np.ones((1, 4), np.float32), np.zeros((0, 4), np.float32)])


def test_maxsim_rejects_dimension_mismatch():
    with pytest.raises(InvalidInputError, match="dim"):
        maxsim(np.ones((2, 4), np.float32), [np.ones((3, 8), np.float32)])


# --- onnxruntime kernels: blocks, shards, float16, int8 ------------------------------------------


def _ragged(rng: np.random.Generator, lengths, dim: int = 16) -> list[np.ndarray]:
    return [_unit(rng, int(n), dim) for n in lengths]


@pytest.mark.parametrize("workers", [1, 3])
def test_packed_scores_equal_loop_across_blocks_and_shards(monkeypatch, workers):
    monkeypatch.setattr(scoring, "_BLOCK_TOKENS", 7)
    monkeypatch.setattr(scoring, "_WORKERS", workers)
    monkeypatch.setattr(scoring, "_POOL", None)
    rng = np.random.default_rng(3)
    docs = _ragged(rng, rng.integers(1, 30, size=40))
    queries = _unit(rng, 2, 5, 16)
    packed, offsets = pack_documents(docs)
    scores = scoring.maxsim_packed(queries, packed, offsets)
    for q in range(2):
        np.testing.assert_allclose(scores[q], _naive(queries[q], docs), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(maxsim(queries, docs), scores, rtol=1e-5, atol=1e-5)  # list path, groups


def test_float16_documents_are_scored_exactly_for_their_stored_values():
    rng = np.random.default_rng(4)
    docs = [d.astype(np.float16) for d in _ragged(rng, (5, 40, 1, 17))]
    query = _unit(rng, 32, 16)
    expected = _naive(query, [d.astype(np.float32) for d in docs])
    np.testing.assert_allclose(maxsim(query, docs), expected, rtol=1e-5, atol=1e-5)
    packed = PackedDocuments.from_list(docs, dtype=np.float16)
    np.testing.assert_allclose(packed.scores(query)[0], expected, rtol=1e-5, atol=1e-5)


def test_concurrent_calls_from_threads_agree():
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(5)
    docs = _ragged(rng, rng.integers(50, 400, size=60), dim=32)
    packed = PackedDocuments.from_list(docs)
    packed8 = PackedDocuments.from_list(docs, dtype=np.int8)
    queries = [_unit(rng, 32, 32) for _ in range(8)]
    with ThreadPoolExecutor(4) as pool:
        exact = list(pool.map(lambda q: packed.scores(q)[0], queries))
        approx = list(pool.map(lambda q: packed8.scores(q)[0], queries))
    for q, e, a in zip(queries, exact, approx, strict=True):
        np.testing.assert_allclose(e, _naive(q, docs), rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(a, packed8.scores(q)[0])


def test_int8_packed_documents_score_like_the_int8_document_list(monkeypatch):
    monkeypatch.setattr(scoring, "_BLOCK_TOKENS", 9)  # int8 blocks and shards cut documents too
    rng = np.random.default_rng(6)
    docs = _ragged(rng, rng.integers(1, 25, size=30), dim=32)
    quantized = [quantize_vectors(d) for d in docs]
    queries = _unit(rng, 3, 8, 32)
    packed8 = PackedDocuments.from_list(docs, dtype=np.int8)
    assert packed8.storage == "int8" and packed8.vectors.dtype == np.uint8
    assert packed8.nbytes == sum(q.nbytes for q in quantized)
    expected = maxsim_int8(queries, quantized, exact=False)
    np.testing.assert_allclose(packed8.scores(queries), expected, rtol=1e-6, atol=1e-6)
    for i in (0, 7, len(docs) - 1):  # stores exactly the codes and scales of quantize_vectors
        np.testing.assert_array_equal(packed8[i].codes, quantized[i].codes)
        np.testing.assert_array_equal(packed8[i].scales, quantized[i].scales)
    repacked = PackedDocuments.from_list(quantized)  # QuantizedVectors pack as int8 without requantizing
    np.testing.assert_array_equal(repacked.vectors, packed8.vectors)


def test_int8_scores_track_exact_scores_and_ranking():
    """Error of the int8 path (documents and query rounded to int8) on 300 random documents."""
    rng = np.random.default_rng(7)
    docs = _ragged(rng, rng.integers(30, 200, size=300), dim=128)
    query = _unit(rng, 32, 128)
    exact = PackedDocuments.from_list(docs).scores(query)[0]
    approx = PackedDocuments.from_list(docs, dtype=np.int8).scores(query)[0]
    error = np.abs(approx - exact)
    assert error.max() < 0.05 and error.mean() < 0.02  # scores are sums over 32 tokens, here ~7
    assert np.corrcoef(approx, exact)[0, 1] > 0.999
    assert len(set(np.argsort(-approx)[:10]) & set(np.argsort(-exact)[:10])) >= 8


def test_dequantized_int8_packed_as_float_is_exact():
    rng = np.random.default_rng(8)
    quantized = [quantize_vectors(d) for d in _ragged(rng, (4, 9), dim=32)]
    query = _unit(rng, 6, 32)
    as_float = PackedDocuments.from_list(quantized, dtype=np.float32)
    expected = _naive(query, [q.dequantize() for q in quantized])
    np.testing.assert_allclose(as_float.scores(query)[0], expected, rtol=1e-5, atol=1e-5)


def test_zero_query_token_and_zero_document_vector_score_zero_in_int8():
    docs = [np.zeros((3, 8), np.float32), np.eye(8, dtype=np.float32)[:2]]
    query = np.zeros((2, 8), np.float32)
    query[1, 0] = 1.0
    scores = PackedDocuments.from_list(docs, dtype=np.int8).scores(query)[0]
    np.testing.assert_allclose(scores, [0.0, 1.0], atol=1e-6)


def test_bad_packed_inputs_raise_typed_errors():
    rng = np.random.default_rng(9)
    vectors = _unit(rng, 10, 8)
    with pytest.raises(InvalidInputError, match="offsets"):
        PackedDocuments(vectors, np.array([0, 5, 5]))  # an empty document
    with pytest.raises(InvalidInputError, match="offsets"):
        PackedDocuments(vectors, np.array([1, 5]))
    with pytest.raises(InvalidInputError, match="int8 storage"):
        PackedDocuments(vectors, np.array([0, 5]), scales=np.ones(10, np.float32))
    with pytest.raises(InvalidInputError, match="dtype"):
        PackedDocuments.from_list([vectors], dtype=np.int16)
    with pytest.raises(InvalidInputError, match="uint8"):
        scoring.maxsim_packed_int8(_unit(rng, 1, 4, 8), vectors.astype(np.int8), np.ones(10, np.float32), np.array([0]))
    with pytest.raises(InvalidInputError, match="dim"):
        scoring.maxsim_packed(_unit(rng, 1, 4, 16), vectors, np.array([0, 5]))
    with pytest.raises(InvalidInputError, match="k must be"):
        PackedDocuments.from_list([vectors]).top_k(_unit(rng, 4, 8), 0)


# --- bad input: typed errors, never numpy's ----------------------------------------------------


def test_maxsim_refuses_text_as_the_query():
    with pytest.raises(InvalidInputError, match="query_vectors must be an array of real numbers, got str"):
        maxsim("berlin population", [np.ones((3, 4), np.float32)])


@pytest.mark.parametrize(
    "documents", [None, (np.ones((3, 4), np.float32) for _ in range(2))], ids=["None", "generator"]
)
def test_maxsim_refuses_documents_that_are_not_a_list(documents):
    with pytest.raises(InvalidInputError, match="documents_vectors must be a list of"):
        maxsim(np.ones((2, 4), np.float32), documents)


@pytest.mark.parametrize("dtype", [object, str, np.complex64])
def test_maxsim_refuses_documents_that_are_not_real_numbers(dtype):
    with pytest.raises(InvalidInputError, match=r"documents_vectors\[1\] must be an array of real numbers"):
        maxsim(np.ones((2, 4), np.float32), [np.ones((3, 4), np.float32), np.ones((3, 4)).astype(dtype)])


def test_maxsim_packed_refuses_float_offsets():
    with pytest.raises(InvalidInputError, match="offsets must be an integer numpy array, got float64"):
        scoring.maxsim_packed(np.ones((1, 2, 4), np.float32), np.ones((4, 4), np.float32), np.array([0.0, 2.0]))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("where", ["query", "document", "packed-float16", "packed-from-arrays"])
def test_vectors_holding_nan_or_infinity_are_refused_not_scored_nan(where, bad):
    rng = np.random.default_rng(7)
    query = rng.standard_normal((32, 16)).astype(np.float32)
    docs = [rng.standard_normal((n, 16)).astype(np.float32) for n in (3, 5, 4)]
    target = query if where == "query" else docs[1]
    target[int(rng.integers(target.shape[0])), int(rng.integers(16))] = bad
    with pytest.raises(InvalidInputError, match="NaN or infinity"):
        if where in ("query", "document"):
            maxsim(query, docs)
        elif where == "packed-float16":
            PackedDocuments.from_list(docs, dtype=np.float16)
        else:
            PackedDocuments(np.concatenate(docs), np.array([0, 3, 8]))


@pytest.mark.parametrize("scale", [np.nan, np.inf, -0.5], ids=["nan", "inf", "negative"])
def test_quantized_vectors_refuse_scales_that_are_not_finite_and_non_negative(scale):
    with pytest.raises(InvalidInputError, match="scales"):
        QuantizedVectors(np.zeros((2, 16), np.int8), np.array([0.1, scale], np.float32))
