"""Late-interaction (MaxSim) scoring, vectorized over tokens and documents."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .compact import as_queries, compact_kind, maxsim_compact
from .errors import InvalidInputError

# Columns of the query x document-token similarity matrix computed at once; bounds scratch memory
# to about n_query_tokens * _BLOCK_TOKENS * 4 bytes whatever the corpus size.
_BLOCK_TOKENS = 1 << 16


def pack_documents(documents_vectors: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate ragged (n_i, dim) arrays into one (sum n_i, dim) array plus start offsets."""
    if len(documents_vectors) == 0:
        raise InvalidInputError("documents_vectors is empty")
    arrays = [np.asarray(d) for d in documents_vectors]
    dim = None
    for i, arr in enumerate(arrays):
        if arr.ndim != 2:
            raise InvalidInputError(f"documents_vectors[{i}] has shape {arr.shape}, expected (tokens, dim)")
        if arr.shape[0] == 0:
            raise InvalidInputError(f"documents_vectors[{i}] has no vectors; MaxSim is undefined for it")
        if dim is None:
            dim = arr.shape[1]
        elif arr.shape[1] != dim:
            raise InvalidInputError(f"documents_vectors[{i}] has dim {arr.shape[1]}, the first has {dim}")
    lengths = np.fromiter((a.shape[0] for a in arrays), dtype=np.int64, count=len(arrays))
    offsets = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    return np.concatenate(arrays, axis=0), offsets


def maxsim_packed(queries: np.ndarray, packed: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Scores (n_queries, n_docs) of queries (n_queries, q_tokens, dim) against packed documents.

    Per block of document tokens: one GEMM, then a segmented max (``np.maximum.reduceat``) per
    document; a document cut by a block border is combined with ``np.maximum`` across blocks.
    """
    n_q, q_tok, dim = queries.shape
    total = packed.shape[0]
    n_docs = offsets.shape[0]
    flat_q = queries.reshape(n_q * q_tok, dim).astype(np.float32, copy=False)
    best = np.full((n_q * q_tok, n_docs), -np.inf, dtype=np.float32)
    ends = np.append(offsets[1:], total)
    for start in range(0, total, _BLOCK_TOKENS):
        stop = min(start + _BLOCK_TOKENS, total)
        first = int(np.searchsorted(ends, start, side="right"))
        last = int(np.searchsorted(offsets, stop, side="left"))
        sims = flat_q @ packed[start:stop].astype(np.float32, copy=False).T
        seg_starts = np.maximum(offsets[first:last], start) - start
        seg_max = np.maximum.reduceat(sims, seg_starts, axis=1)
        best[:, first:last] = np.maximum(best[:, first:last], seg_max)
    return best.reshape(n_q, q_tok, n_docs).sum(axis=1)


def maxsim(query_vectors: np.ndarray, documents_vectors: Sequence[np.ndarray]) -> np.ndarray:
    """ColBERT MaxSim: for each document, sum over query vectors of the best dot product.

    `query_vectors` is (q_tokens, dim) for one query, giving scores of shape (n_docs,), or
    (n_queries, q_tokens, dim), giving (n_queries, n_docs). Documents may be ragged, and may be
    any compact kind of ``encode_documents(output=...)`` (int8, binary, ubinary; see compact.py).
    """
    kind = compact_kind(documents_vectors)
    if kind is not None:  # int8 (QuantizedVectors) or packed sign bits: see compact.py
        return maxsim_compact(query_vectors, documents_vectors, kind)
    queries, single = as_queries(query_vectors)
    packed, offsets = pack_documents(documents_vectors)
    if packed.shape[1] != queries.shape[2]:
        raise InvalidInputError(f"query dim {queries.shape[2]} does not match document dim {packed.shape[1]}")
    scores = maxsim_packed(queries, packed, offsets)
    return scores[0] if single else scores
