"""MaxSim: vectorized scores equal the per-document loop, for ragged documents and across blocks."""

from __future__ import annotations

import numpy as np
import pytest

import colbert_onnx.scoring as scoring
from colbert_onnx import InvalidInputError, maxsim


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


def test_maxsim_batched_queries_give_one_row_per_query():
    rng = np.random.default_rng(2)
    queries = _unit(rng, 3, 32, 8)
    docs = [_unit(rng, n, 8) for n in (4, 9)]
    scores = maxsim(queries, docs)
    assert scores.shape == (3, 2)
    for q in range(3):
        np.testing.assert_allclose(scores[q], _naive(queries[q], docs), rtol=1e-5, atol=1e-5)


def test_maxsim_rejects_empty_document():
    with pytest.raises(InvalidInputError, match=r"documents_vectors\[1\] has no vectors"):
        maxsim(np.ones((2, 4), np.float32), [np.ones((1, 4), np.float32), np.zeros((0, 4), np.float32)])


def test_maxsim_rejects_dimension_mismatch():
    with pytest.raises(InvalidInputError, match="dim"):
        maxsim(np.ones((2, 4), np.float32), [np.ones((3, 8), np.float32)])
