"""Token pooling: numpy Ward clustering (checked against scipy) and encode_documents(pool_factor=k)."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest

from colbert_onnx import InvalidInputError
from colbert_onnx.pooling import cut_tree, pool_document, ward_merges
from colbert_onnx.vectors import QuantizedVectors

DOCS = [
    "Berlin is the capital and largest city of Germany, on the river Spree.",
    "Le chat dort sur le canapé depuis ce matin, et il ne veut pas se lever.",
    "東京は日本の首都であり、世界最大級の都市圏を持つ。",
]


def _unit(seed: int, n: int, dim: int = 32) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _scipy_linkage(observations: np.ndarray) -> np.ndarray:
    hierarchy = pytest.importorskip("scipy.cluster.hierarchy", reason="scipy cross-checks the numpy Ward linkage")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PyLate's square matrix "looks like" a distance matrix to scipy
        return hierarchy.linkage(observations, method="ward")


def _partition(labels: np.ndarray) -> set[frozenset[int]]:
    return {frozenset(np.flatnonzero(labels == c).tolist()) for c in np.unique(labels)}


def test_ward_merge_heights_match_scipy_linkage() -> None:
    v = _unit(0, 60)
    distances = (1.0 - v @ v.T).astype(np.float64)
    _, heights = ward_merges(distances)
    np.testing.assert_allclose(heights, _scipy_linkage(distances)[:, 2], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("n_clusters", [1, 2, 7, 20, 59])
def test_cut_tree_matches_scipy_fcluster_maxclust(n_clusters: int) -> None:
    hierarchy = pytest.importorskip("scipy.cluster.hierarchy", reason="scipy cross-checks the numpy Ward linkage")
    v = _unit(1, 60)
    distances = (1.0 - v @ v.T).astype(np.float64)
    pairs, _ = ward_merges(distances)
    expected = hierarchy.fcluster(_scipy_linkage(distances), t=n_clusters, criterion="maxclust")
    assert _partition(cut_tree(60, pairs, n_clusters)) == _partition(expected)


def test_pool_document_keeps_protected_tokens_first_and_unchanged() -> None:
    v = _unit(2, 20)
    pooled = pool_document(v, 2)
    np.testing.assert_array_equal(pooled[:2], v[:2])


@pytest.mark.parametrize("factor, expected", [(2, 2 + 9), (3, 2 + 6), (4, 2 + 4), (100, 2 + 1)])
def test_pool_document_keeps_protected_plus_n_over_factor_vectors(factor: int, expected: int) -> None:
    assert pool_document(_unit(3, 20), factor).shape == (expected, 32)


def test_pooled_vectors_are_unit_length() -> None:
    pooled = pool_document(_unit(4, 30), 3)
    np.testing.assert_allclose(np.linalg.norm(pooled, axis=1), 1.0, rtol=1e-5)


def test_pooling_merges_duplicate_tokens_into_that_vector() -> None:
    base = _unit(5, 5)
    doc = np.concatenate([base[:2], np.repeat(base[2:], 2, axis=0)])  # 2 protected + 3 vectors twice each
    pooled = pool_document(doc, 2)
    assert {tuple(np.round(p, 5)) for p in pooled[2:]} == {tuple(np.round(b, 5)) for b in base[2:]}


def test_pooled_vector_is_normalized_mean_of_its_cluster() -> None:
    a, b = _unit(6, 2)
    doc = np.stack([a, b, a, a, -a])  # protected a, b; then two copies of a and its opposite
    pooled = pool_document(doc, 3)  # 3 poolable vectors -> one cluster
    mean = (a + a - a) / np.linalg.norm(a + a - a)
    np.testing.assert_allclose(pooled[2], mean, rtol=1e-5)


def test_encode_documents_pool_factor_one_equals_no_pooling_exactly(toy_encoder) -> None:
    plain = toy_encoder.encode_documents(DOCS)
    pooled = toy_encoder.encode_documents(DOCS, pool_factor=1)
    for p, q in zip(plain, pooled, strict=True):
        np.testing.assert_array_equal(p, q)


def test_encode_documents_pool_factor_two_halves_poolable_tokens(toy_encoder) -> None:
    plain = toy_encoder.encode_documents(DOCS)
    pooled = toy_encoder.encode_documents(DOCS, pool_factor=2)
    assert [p.shape[0] for p in pooled] == [2 + max(1, (p.shape[0] - 2) // 2) for p in plain]


def test_encode_documents_pools_before_quantizing(toy_encoder) -> None:
    pooled = toy_encoder.encode_documents(DOCS, pool_factor=2)
    quantized = toy_encoder.encode_documents(DOCS, pool_factor=2, output="int8")
    assert all(isinstance(q, QuantizedVectors) for q in quantized)
    assert [q.shape for q in quantized] == [p.shape for p in pooled]


@pytest.mark.parametrize("bad", [0, -1, 2.0, True, "2", None])
def test_encode_documents_rejects_pool_factor_that_is_not_an_int_of_at_least_one(toy_encoder, bad: object) -> None:
    with pytest.raises(InvalidInputError, match="pool_factor"):
        toy_encoder.encode_documents(DOCS[:1], pool_factor=bad)


def test_import_colbert_onnx_does_not_import_scipy() -> None:
    code = "import sys, colbert_onnx, colbert_onnx.pooling; assert 'scipy' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
