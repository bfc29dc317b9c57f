"""PackedDocuments: one array with offsets, scores equal to the per-document reference."""

from __future__ import annotations

import numpy as np
import pytest

from colbert_onnx import InvalidInputError
from colbert_onnx.packed import PackedDocuments


def _docs(seed: int = 0, n: int = 200, dim: int = 32) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    docs = []
    for length in rng.integers(1, 80, size=n):
        x = rng.standard_normal((length, dim)).astype(np.float32)
        docs.append(x / np.linalg.norm(x, axis=1, keepdims=True))
    return docs


def _naive(query: np.ndarray, docs: list[np.ndarray]) -> np.ndarray:
    return np.array([(query @ d.T).max(axis=1).sum() for d in docs])


def test_packed_scores_equal_naive_reference_for_many_queries():
    docs = _docs()
    rng = np.random.default_rng(1)
    queries = rng.standard_normal((5, 32, 32)).astype(np.float32)
    packed = PackedDocuments.from_list(docs)
    scores = packed.scores(queries)
    assert scores.shape == (5, len(docs))
    for q in range(5):
        np.testing.assert_allclose(scores[q], _naive(queries[q], docs), rtol=1e-5, atol=1e-5)


def test_packed_is_one_contiguous_array_and_indexes_back():
    docs = _docs(n=10)
    packed = PackedDocuments.from_list(docs)
    assert packed.vectors.flags["C_CONTIGUOUS"] and packed.vectors.shape[0] == sum(len(d) for d in docs)
    for i, d in enumerate(docs):
        np.testing.assert_array_equal(packed[i], d)


def test_float16_storage_stays_close_to_float32_scores():
    docs = _docs(n=50)
    query = np.random.default_rng(2).standard_normal((32, 32)).astype(np.float32)
    half = PackedDocuments.from_list(docs, dtype=np.float16)
    assert half.vectors.dtype == np.float16
    np.testing.assert_allclose(half.scores(query)[0], _naive(query, docs), rtol=2e-3, atol=2e-2)


def test_top_k_returns_best_first():
    docs = _docs(n=30)
    query = np.random.default_rng(3).standard_normal((32, 32)).astype(np.float32)
    idx, scores = PackedDocuments.from_list(docs).top_k(query, 5)
    ref = _naive(query, docs)
    assert list(idx) == list(np.argsort(-ref)[:5])
    assert np.all(np.diff(scores) <= 0)


def test_wrong_query_dim_is_rejected():
    with pytest.raises(InvalidInputError, match="dim 32"):
        PackedDocuments.from_list(_docs(n=3)).scores(np.ones((32, 16), np.float32))


def test_top_k_of_several_queries_gives_one_row_per_query():
    docs = _docs(n=30)
    queries = np.random.default_rng(4).standard_normal((2, 32, 32)).astype(np.float32)
    packed = PackedDocuments.from_list(docs)
    for batch in (queries, list(queries)):
        idx, scores = packed.top_k(batch, 3)
        assert idx.shape == scores.shape == (2, 3)
        for q in range(2):
            one_idx, one_scores = packed.top_k(queries[q], 3)
            np.testing.assert_array_equal(idx[q], one_idx)
            np.testing.assert_array_equal(scores[q], one_scores)


def test_scores_of_queries_of_different_lengths_equal_one_call_each():
    docs = _docs(n=10)
    rng = np.random.default_rng(5)
    queries = [rng.standard_normal((n, 32)).astype(np.float32) for n in (32, 5)]
    packed = PackedDocuments.from_list(docs)
    np.testing.assert_array_equal(packed.scores(queries), np.concatenate([packed.scores(q) for q in queries]))


def test_negative_index_counts_from_the_end():
    docs = _docs(n=5)
    packed = PackedDocuments.from_list(docs)
    np.testing.assert_array_equal(packed[-1], docs[-1])
    np.testing.assert_array_equal(packed[-5], docs[0])


@pytest.mark.parametrize("index", [3, -4])
def test_index_out_of_range_raises_index_error(index):
    with pytest.raises(IndexError, match="out of range"):
        PackedDocuments.from_list(_docs(n=3))[index]


def test_slice_index_is_refused():
    with pytest.raises(InvalidInputError, match="index must be an int"):
        PackedDocuments.from_list(_docs(n=3))[0:2]


def test_vectors_that_are_not_an_array_are_refused():
    with pytest.raises(InvalidInputError, match="vectors must be a numpy array, got list"):
        PackedDocuments([[1.0]], np.array([0]))


@pytest.mark.parametrize("offsets", [np.array([0.0, 2.0]), [0, 2]], ids=["float", "list"])
def test_offsets_that_are_not_an_integer_array_are_refused(offsets):
    with pytest.raises(InvalidInputError, match="offsets must be an integer numpy array"):
        PackedDocuments(np.ones((4, 8), np.float32), offsets)


def test_decreasing_unsigned_offsets_are_refused():
    with pytest.raises(InvalidInputError, match="offsets must increase strictly"):
        PackedDocuments(np.ones((4, 8), np.float32), np.array([0, 3, 1], dtype=np.uint64))


def test_from_list_refuses_a_dtype_numpy_does_not_know():
    with pytest.raises(InvalidInputError, match="dtype must be float32, float16 or int8, got 'bogus'"):
        PackedDocuments.from_list(_docs(n=2), dtype="bogus")


def test_from_list_refuses_documents_that_are_not_a_list():
    with pytest.raises(InvalidInputError, match="documents must be a list .* got generator"):
        PackedDocuments.from_list(d for d in _docs(n=2))


@pytest.mark.parametrize("dtype", [np.int8, np.uint8])
def test_from_list_refuses_int8_arrays_which_maxsim_reads_as_sign_bits(dtype):
    with pytest.raises(InvalidInputError, match="sign bits .* QuantizedVectors"):
        PackedDocuments.from_list([np.ones((3, 32), dtype)])


def test_scores_refuse_text_as_queries():
    with pytest.raises(InvalidInputError, match="queries must be an array of real numbers, got str"):
        PackedDocuments.from_list(_docs(n=2)).scores("text")
