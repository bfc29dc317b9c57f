"""Qdrant multivector (MAX_SIM) collections in local in-process mode: same ranking as rerank."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from colbert_onnx import ColbertEncoder

qdrant_client = pytest.importorskip("qdrant_client", reason="needs the qdrant extra (pip install '.[qdrant]')")

from colbert_onnx.qdrant import (  # noqa: E402
    QdrantCollectionError,
    ensure_collection,
    index_documents,
    search,
    to_points,
)

DOCS = [
    "Berlin is the capital and largest city of Germany.",
    "Paris est la capitale de la France.",
    "東京は日本の首都です。",
    "Madrid es la capital de España.",
    "The cat sleeps on the sofa all morning.",
    "def add(a, b): return a + b",
    "Москва — столица России.",
]
QUERY = "capital of Germany"


@pytest.fixture()
def client():
    return qdrant_client.QdrantClient(":memory:")


@pytest.mark.parametrize("dim", [128, 96, 64])
def test_qdrant_ranking_equals_rerank_ranking(toy_model_dir, client, dim: int) -> None:
    encoder = ColbertEncoder(toy_model_dir, dim=dim)
    index_documents(client, f"docs-{dim}", encoder, DOCS, batch_size=3)
    hits = search(client, f"docs-{dim}", encoder, QUERY, limit=len(DOCS))
    expected = encoder.rerank(QUERY, DOCS)
    assert [h["id"] for h in hits] == [r["index"] for r in expected]
    np.testing.assert_allclose([h["score"] for h in hits], [r["relevance_score"] for r in expected], rtol=1e-4)


def test_points_carry_ids_and_text_payloads(toy_encoder, client) -> None:
    index_documents(client, "docs", toy_encoder, DOCS[:2], ids=[10, 20])
    records = client.retrieve("docs", ids=[10, 20], with_payload=True)
    assert sorted((r.id, r.payload["text"]) for r in records) == [(10, DOCS[0]), (20, DOCS[1])]


def test_collection_is_created_as_max_sim_multivector_of_head_dim(toy_encoder, client) -> None:
    ensure_collection(client, "docs", toy_encoder.dim)
    params = client.get_collection("docs").config.params.vectors
    assert params.size == 128
    assert params.multivector_config.comparator == qdrant_client.models.MultiVectorComparator.MAX_SIM


def test_existing_collection_of_another_dim_raises_collection_error(toy_encoder, client) -> None:
    ensure_collection(client, "docs", 96)
    with pytest.raises(QdrantCollectionError, match="96-dim vectors but the encoder's head is 128-dim"):
        index_documents(client, "docs", toy_encoder, DOCS[:1])


def test_existing_single_vector_collection_raises_collection_error(client) -> None:
    models = qdrant_client.models
    client.create_collection("plain", vectors_config=models.VectorParams(size=128, distance=models.Distance.DOT))
    with pytest.raises(QdrantCollectionError, match="MAX_SIM"):
        ensure_collection(client, "plain", 128)


def test_recreate_replaces_a_mismatched_collection(client) -> None:
    ensure_collection(client, "docs", 96)
    assert ensure_collection(client, "docs", 64, recreate=True)
    assert client.get_collection("docs").config.params.vectors.size == 64


def test_int8_documents_are_stored_dequantized(toy_encoder) -> None:
    (quantized,) = toy_encoder.encode_documents(DOCS[:1], output="int8")
    (point,) = to_points([quantized], ids=[1])
    np.testing.assert_allclose(np.array(point.vector), quantized.dequantize(), rtol=1e-6)


def test_import_colbert_onnx_does_not_import_qdrant_client() -> None:
    code = "import sys, colbert_onnx, colbert_onnx.qdrant; assert 'qdrant_client' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
