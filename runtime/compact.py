"""Compact document vectors (float16, per-vector int8, sign bits) and MaxSim over them.

Kinds returned by ``ColbertEncoder.encode_documents(output=...)``, one item per document:

- ``float32`` / ``float16``: ``(tokens, dim)`` arrays of that dtype.
- ``int8``: a :class:`QuantizedVectors` — ``codes`` ``(tokens, dim)`` int8 and ``scales``
  ``(tokens,)`` float32 with ``vector ≈ codes * scales[:, None]`` (symmetric, per vector,
  ``scale = max|v| / 127``).
- ``ubinary``: ``(tokens, dim // 8)`` uint8, the sign bits (``v > 0``) packed 8 per byte with
  ``np.packbits`` (most significant bit first) — the Jina API / sentence-transformers ``ubinary``.
- ``binary``: the same bytes minus 128 as int8 — the Jina API / sentence-transformers ``binary``.

MaxSim over compact documents (queries always stay float32 on input):

- ``int8``: by default the float query against the dequantized vectors (a float32 GEMM; only the
  documents' rounding remains). ``maxsim_int8(..., exact=False)`` (and ``PackedDocuments`` stored
  as int8) runs the integer kernel of scoring.py instead: the query is quantized to int8 per token
  too and ``codes · q_codes`` runs as onnxruntime's integer ``MatMulInteger`` (u8 x u8), times both
  scales; 2-3x faster than float32 MaxSim, scores off by ~1e-4 per query token on average
  (docs/maxsim.md).
- ``binary`` / ``ubinary``: the query is binarized too and the similarity of two sign vectors is
  ``1 - 2 * hamming / dim`` (= ``cos`` of the ±1 vectors; 1 for identical signs, -1 for opposite).
  It is computed exactly as ``(s_q · s_d) / dim`` with ``s = ±1``, a BLAS GEMM instead of popcounts.
  ``maxsim_binary(..., binarize_query=False)`` instead scores the float query against the ±1
  document vectors scaled by ``1/sqrt(dim)`` (asymmetric; see docs/storage.md for both).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .errors import InvalidInputError

OUTPUT_KINDS = ("float32", "float16", "int8", "binary", "ubinary")

# Document tokens decoded to float32 at once in the compact MaxSim paths (bounds scratch memory).
_DECODE_TOKENS = 1 << 16


@dataclass(frozen=True)
class QuantizedVectors:
    """One document's int8 vectors: ``codes`` (tokens, dim) int8, ``scales`` (tokens,) float32."""

    codes: np.ndarray
    scales: np.ndarray

    def __post_init__(self) -> None:
        if self.codes.ndim != 2 or self.codes.dtype != np.int8:
            raise InvalidInputError(
                f"codes must be a (tokens, dim) int8 array, got {self.codes.dtype} {self.codes.shape}"
            )
        if self.scales.shape != (self.codes.shape[0],):
            raise InvalidInputError(f"scales has shape {self.scales.shape}, expected ({self.codes.shape[0]},)")

    @property
    def shape(self) -> tuple[int, int]:
        return self.codes.shape  # type: ignore[return-value]

    @property
    def nbytes(self) -> int:
        return int(self.codes.nbytes + self.scales.nbytes)

    def dequantize(self) -> np.ndarray:
        """The float32 approximation ``codes * scales[:, None]``."""
        return self.codes.astype(np.float32) * self.scales[:, None]


def check_output_kind(output: str) -> str:
    """`output` itself if it is a known kind, else an InvalidInputError listing the kinds."""
    if not isinstance(output, str) or output not in OUTPUT_KINDS:
        raise InvalidInputError(f"output must be one of {', '.join(OUTPUT_KINDS)}; got {output!r}")
    return output


def quantize_int8(vectors: np.ndarray) -> QuantizedVectors:
    """Symmetric per-vector int8: ``scale = max|v| / 127``, ``codes = round(v / scale)``."""
    v = np.asarray(vectors, dtype=np.float32)
    peak = np.abs(v).max(axis=1) if v.shape[0] else np.zeros(0, dtype=np.float32)
    scales = (peak / 127.0).astype(np.float32)
    safe = np.where(scales > 0, scales, 1.0).astype(np.float32)
    codes = np.clip(np.rint(v / safe[:, None]), -127, 127).astype(np.int8)
    return QuantizedVectors(codes=codes, scales=scales)


def pack_sign_bits(vectors: np.ndarray, kind: str = "ubinary") -> np.ndarray:
    """Sign bits (``v > 0``) packed 8 per byte along the last axis: ``ubinary`` uint8 or ``binary`` int8.

    The same definition as the Jina embeddings API and sentence-transformers' ``quantize_embeddings``:
    ``ubinary = np.packbits(v > 0)``; ``binary = ubinary - 128`` as int8. The dim must be a multiple of 8.
    """
    v = np.asarray(vectors)
    if v.shape[-1] % 8:
        raise InvalidInputError(f"binary outputs need a dim divisible by 8, got {v.shape[-1]}")
    bits = np.packbits(v > 0, axis=-1)
    if kind == "ubinary":
        return bits
    if kind == "binary":
        return (bits.astype(np.int16) - 128).astype(np.int8)
    raise InvalidInputError(f"kind must be 'binary' or 'ubinary', got {kind!r}")


def unpack_sign_bits(packed: np.ndarray) -> np.ndarray:
    """±1 float32 vectors (dim = 8 x bytes) from ``binary`` (int8) or ``ubinary`` (uint8) packed bits."""
    p = np.asarray(packed)
    if p.dtype == np.int8:
        p = (p.astype(np.int16) + 128).astype(np.uint8)
    elif p.dtype != np.uint8:
        raise InvalidInputError(f"packed bits must be int8 (binary) or uint8 (ubinary), got {p.dtype}")
    bits = np.unpackbits(p, axis=-1)
    return bits.astype(np.float32) * 2.0 - 1.0


def compact_documents(vectors: list[np.ndarray], output: str) -> list:
    """Convert finished float32 document vectors to the `output` kind (see the module docstring)."""
    check_output_kind(output)
    if output == "float32":
        return vectors
    if output == "float16":
        return [v.astype(np.float16) for v in vectors]
    if output == "int8":
        return [quantize_int8(v) for v in vectors]
    return [pack_sign_bits(v, output) for v in vectors]


def compact_kind(documents_vectors: Sequence) -> str | None:
    """``int8``, ``binary`` or ``ubinary`` if the documents are of that compact kind; None for float."""
    if len(documents_vectors) == 0:
        return None
    dtypes = {getattr(d, "dtype", None) for d in documents_vectors}  # a few distinct dtypes: cheap
    if None in dtypes:  # QuantizedVectors or plain lists: classify one by one
        kinds = {_kind_of(d) for d in documents_vectors}
    else:
        kinds = {_DTYPE_KINDS.get(np.dtype(t).str) for t in dtypes}
    if len(kinds) > 1:
        raise InvalidInputError(f"documents mix vector kinds {sorted(k or 'float' for k in kinds)}")
    return kinds.pop()


_DTYPE_KINDS = {np.dtype(np.uint8).str: "ubinary", np.dtype(np.int8).str: "binary"}


def _kind_of(doc: object) -> str | None:
    if isinstance(doc, QuantizedVectors):
        return "int8"
    dtype = getattr(doc, "dtype", None)
    if dtype == np.uint8:
        return "ubinary"
    if dtype == np.int8:
        return "binary"
    return None


def bytes_per_token(documents_vectors: Sequence) -> float:
    """Average stored bytes per document token (codes + scales for int8)."""
    total = sum(int(d.nbytes) for d in documents_vectors)
    tokens = sum(int(d.shape[0]) for d in documents_vectors)
    return total / max(tokens, 1)


def _blocked_maxsim(queries: np.ndarray, documents: Sequence, decode) -> np.ndarray:
    """MaxSim of float queries (n_q, q_tok, dim) against documents decoded to float32 a group at a time."""
    from .scoring import maxsim_packed, pack_documents

    out = np.empty((queries.shape[0], len(documents)), dtype=np.float32)
    start = 0
    while start < len(documents):
        stop, tokens = start, 0
        while stop < len(documents) and (stop == start or tokens + documents[stop].shape[0] <= _DECODE_TOKENS):
            tokens += documents[stop].shape[0]
            stop += 1
        packed, offsets = pack_documents([decode(d) for d in documents[start:stop]])
        if packed.shape[1] != queries.shape[2]:
            raise InvalidInputError(f"query dim {queries.shape[2]} does not match document dim {packed.shape[1]}")
        out[:, start:stop] = maxsim_packed(queries, packed, offsets)
        start = stop
    return out


def as_queries(query_vectors: np.ndarray) -> tuple[np.ndarray, bool]:
    """(n_queries, q_tokens, dim) float32 and whether a single (q_tokens, dim) query was given."""
    queries = np.asarray(query_vectors, dtype=np.float32)
    single = queries.ndim == 2
    if single:
        queries = queries[None]
    if queries.ndim != 3:
        raise InvalidInputError(
            f"query_vectors has shape {queries.shape}, expected (q_tokens, dim) or (n_queries, q_tokens, dim)"
        )
    return queries, single


def pack_int8(documents: Sequence[QuantizedVectors]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """int8 documents as one (total tokens, dim) uint8 array of ``code + 128``, the (total,) scales and offsets.

    The layout :func:`colbert_onnx.scoring.maxsim_packed_int8` and ``PackedDocuments`` (int8) read.
    """
    from .scoring import document_lengths, int8_codes_to_uint8, start_offsets

    for i, doc in enumerate(documents):
        if not isinstance(doc, QuantizedVectors):
            raise InvalidInputError(f"documents[{i}] is {type(doc).__name__}, expected QuantizedVectors")
    lengths = document_lengths(documents)
    offsets = start_offsets(lengths)
    codes = np.concatenate([d.codes for d in documents], axis=0)
    scales = np.concatenate([np.asarray(d.scales, dtype=np.float32) for d in documents])
    return int8_codes_to_uint8(codes, out=codes.view(np.uint8)), scales, offsets


def maxsim_int8(
    query_vectors: np.ndarray, documents: Sequence[QuantizedVectors], exact: bool = True
) -> np.ndarray:
    """MaxSim of float queries against int8 documents: ``sum_q max_t scale_t * (q · codes_t)``.

    By default the float query is scored against the dequantized vectors (float32 GEMM, equal to
    ``maxsim(q, [d.dequantize() ...])``); ``exact=False`` quantizes the query to int8 per token too
    and runs the integer kernel (2-3x faster, approximate: see docs/maxsim.md).
    """
    from .scoring import maxsim_int8_list

    queries, single = as_queries(query_vectors)
    for i, doc in enumerate(documents):
        if not isinstance(doc, QuantizedVectors):
            raise InvalidInputError(f"documents[{i}] is {type(doc).__name__}, expected QuantizedVectors")
    if exact:
        scores = _blocked_maxsim(queries, documents, QuantizedVectors.dequantize)
    else:
        scores = maxsim_int8_list(queries, documents)
    return scores[0] if single else scores


def maxsim_binary(
    query_vectors: np.ndarray, documents: Sequence[np.ndarray], binarize_query: bool = True
) -> np.ndarray:
    """MaxSim against packed sign-bit documents: per token ``1 - 2 * hamming / dim`` (query binarized too).

    With ``binarize_query=False`` the float query is scored against ``±1 / sqrt(dim)`` document vectors.
    """
    queries, single = as_queries(query_vectors)
    dim = queries.shape[2]
    if binarize_query:
        queries = np.where(queries > 0, 1.0, -1.0).astype(np.float32) / np.float32(dim)
    else:
        queries = queries / np.float32(np.sqrt(dim))
    scores = _blocked_maxsim(queries, documents, unpack_sign_bits)
    return scores[0] if single else scores


def maxsim_compact(query_vectors: np.ndarray, documents_vectors: Sequence, kind: str) -> np.ndarray:
    """Dispatch MaxSim to the int8 or binary path by document kind."""
    if kind == "int8":
        return maxsim_int8(query_vectors, documents_vectors)
    return maxsim_binary(query_vectors, documents_vectors)


def finish_documents(vectors: list[np.ndarray], output: str = "float32", pool_factor: int = 1) -> list:
    """Encoder post-processing: token pooling (``pool_factor``, see pooling.py) then the `output` kind."""
    from .pooling import check_pool_factor, pool_documents

    check_output_kind(output)
    if check_pool_factor(pool_factor) > 1:
        vectors = pool_documents(vectors, pool_factor)
    return compact_documents(vectors, output)
