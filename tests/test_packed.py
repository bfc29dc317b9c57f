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
