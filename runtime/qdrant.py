"""Qdrant helpers: multivector (MAX_SIM) collections filled with ColbertEncoder output.

Needs the ``qdrant`` extra (``pip install 'colbert-onnx[qdrant]'``); ``qdrant_client`` is imported
inside the functions only, so ``import colbert_onnx`` never loads it.

Qdrant's ``MAX_SIM`` comparator with ``Distance.DOT`` computes exactly ColBERT's MaxSim
(sum over query vectors of the best dot product with a document vector), so ranking a collection
with ``search`` gives ``ColbertEncoder.rerank``'s order on the same texts.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import ColbertOnnxError, InvalidInputError
from .extras import import_extra
from .vectors import QuantizedVectors

if TYPE_CHECKING:  # pragma: no cover
    from .encoder import ColbertEncoder

PointId = int | str


class QdrantCollectionError(ColbertOnnxError, ValueError):
    """An existing Qdrant collection cannot hold this encoder's vectors (dim or comparator differ)."""


def _models() -> Any:
    return import_extra("qdrant_client.models", "qdrant", "Qdrant support")


def vector_params(dim: int, on_disk: bool | None = None) -> Any:
    """``VectorParams`` of a ColBERT collection: `dim`, dot product, multivector MAX_SIM."""
    models = _models()
    return models.VectorParams(
        size=int(dim),
        distance=models.Distance.DOT,
        multivector_config=models.MultiVectorConfig(comparator=models.MultiVectorComparator.MAX_SIM),
        on_disk=on_disk,
    )


def ensure_collection(client: Any, name: str, dim: int, recreate: bool = False, on_disk: bool | None = None) -> bool:
    """Create collection `name` for head `dim` unless it exists; True if created.

    An existing collection must have one unnamed multivector of size `dim` compared with MAX_SIM,
    otherwise QdrantCollectionError (pass ``recreate=True`` to drop and create it anew).
    """
    models = _models()
    exists = client.collection_exists(name)
    if exists and recreate:
        client.delete_collection(name)
        exists = False
    if not exists:
        client.create_collection(name, vectors_config=vector_params(dim, on_disk=on_disk))
        return True
    params = client.get_collection(name).config.params.vectors
    if not isinstance(params, models.VectorParams):
        raise QdrantCollectionError(f"collection {name!r} uses named vectors {sorted(params)}; expected one unnamed")
    if params.size != dim:
        raise QdrantCollectionError(
            f"collection {name!r} holds {params.size}-dim vectors but the encoder's head is {dim}-dim; "
            f"use a collection per head (e.g. '{name}-{dim}') or recreate=True"
        )
    comparator = params.multivector_config.comparator if params.multivector_config else None
    if comparator != models.MultiVectorComparator.MAX_SIM:
        raise QdrantCollectionError(f"collection {name!r} is not a MAX_SIM multivector collection")
    return False


def as_multivector(vectors: np.ndarray | QuantizedVectors) -> list[list[float]]:
    """One document's vectors as Qdrant's list of lists (float16/float32 arrays or int8 QuantizedVectors)."""
    if isinstance(vectors, QuantizedVectors):
        vectors = vectors.dequantize()
    v = np.asarray(vectors)
    if v.ndim != 2 or v.dtype.kind != "f":
        raise InvalidInputError(
            f"expected (tokens, dim) float vectors, got {v.dtype} {v.shape}; binary kinds "
            "are not stored as such (configure Qdrant's own binary quantization instead)"
        )
    return v.astype(np.float32).tolist()


def to_points(
    vectors: Sequence[np.ndarray | QuantizedVectors],
    ids: Sequence[PointId],
    payloads: Sequence[dict | None] | None = None,
) -> list[Any]:
    """Qdrant ``PointStruct``s from per-document vectors, ids and optional payloads."""
    models = _models()
    if len(ids) != len(vectors) or (payloads is not None and len(payloads) != len(vectors)):
        raise InvalidInputError("vectors, ids and payloads must have the same length")
    return [
        models.PointStruct(id=pid, vector=as_multivector(v), payload=(payloads[i] if payloads is not None else None))
        for i, (pid, v) in enumerate(zip(ids, vectors, strict=True))
    ]


def _batches(n: int, size: int) -> Iterator[range]:
    for start in range(0, n, size):
        yield range(start, min(start + size, n))


def index_documents(
    client: Any,
    collection: str,
    encoder: ColbertEncoder,
    texts: Sequence[str],
    ids: Iterable[PointId] | None = None,
    payloads: Sequence[dict] | None = None,
    batch_size: int = 64,
    pool_factor: int = 1,
    create: bool = True,
) -> list[PointId]:
    """Encode `texts` as documents and upsert them in batches; returns the point ids.

    Ids default to 0..n-1; payloads default to ``{"text": text}``. With `create`, the collection
    is created for ``encoder.dim`` if missing (and checked if present).
    """
    texts = list(texts)
    point_ids: list[PointId] = list(ids) if ids is not None else list(range(len(texts)))
    if len(point_ids) != len(texts):
        raise InvalidInputError(f"{len(point_ids)} ids for {len(texts)} texts")
    if payloads is not None and len(payloads) != len(texts):
        raise InvalidInputError(f"{len(payloads)} payloads for {len(texts)} texts")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidInputError(f"batch_size must be a positive int, got {batch_size!r}")
    if create:
        ensure_collection(client, collection, encoder.dim)
    for chunk in _batches(len(texts), batch_size):
        vectors = encoder.encode_documents([texts[i] for i in chunk], pool_factor=pool_factor)
        chunk_payloads = [payloads[i] if payloads is not None else {"text": texts[i]} for i in chunk]
        points = to_points(vectors, [point_ids[i] for i in chunk], chunk_payloads)
        client.upsert(collection_name=collection, points=points, wait=True)
    return point_ids


def search(client: Any, collection: str, encoder: ColbertEncoder, query: str, limit: int = 10) -> list[dict]:
    """Top `limit` points for `query` (encoded as query vectors): dicts of id, score, payload, best first."""
    (query_vectors,) = encoder.encode_queries([query])
    response = client.query_points(
        collection_name=collection, query=query_vectors.tolist(), limit=limit, with_payload=True
    )
    return [{"id": p.id, "score": float(p.score), "payload": p.payload} for p in response.points]
