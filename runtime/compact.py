"""Output kinds of ``ColbertEncoder.encode_documents(output=...)``: finished float32 vectors -> stored form.

One item per document:

- ``float32`` / ``float16``: ``(tokens, dim)`` arrays of that dtype.
- ``int8``: a :class:`~colbert_onnx.vectors.QuantizedVectors` — ``codes`` ``(tokens, dim)`` int8 and
  ``scales`` ``(tokens,)`` float32 with ``vector ≈ codes * scales[:, None]`` (symmetric, per vector,
  ``scale = max|v| / 127``).
- ``ubinary``: ``(tokens, dim // 8)`` uint8, the sign bits (``v > 0``) packed 8 per byte with
  ``np.packbits`` (most significant bit first) — the Jina API / sentence-transformers ``ubinary``.
- ``binary``: the same bytes minus 128 as int8 — the Jina API / sentence-transformers ``binary``.
- ``muvera`` (or ``muvera:k_sim=..,dim_proj=..,r_reps=..,seed=..``): one ``(fde_dim,)`` float32 MUVERA
  fixed-dimensional encoding per document, for single-vector indexes (muvera.py; queries take it too).

The codecs themselves are in vectors.py; MaxSim over every kind is in scoring.py (``maxsim`` takes
them all; ``maxsim_int8`` and ``maxsim_binary`` document their arithmetic).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .errors import InvalidInputError
from .muvera import is_muvera_output, muvera_for, parse_output
from .pooling import check_pool_factor, pool_documents
from .vectors import QuantizedVectors, quantize_vectors, to_sign_bits

OUTPUT_KINDS = ("float32", "float16", "int8", "binary", "ubinary")

__all__ = ["OUTPUT_KINDS", "QuantizedVectors", "bytes_per_token", "canonical_output", "check_output_kind",
           "finish_documents", "to_muvera", "to_output_kind"]


def check_output_kind(output: str) -> str:
    """`output` itself if it is a known kind (a muvera spec is parsed), else an InvalidInputError listing them."""
    if is_muvera_output(output):
        parse_output(output)
        return output
    if not isinstance(output, str) or output not in OUTPUT_KINDS:
        kinds = ", ".join((*OUTPUT_KINDS, "muvera[:k_sim=..,dim_proj=..,r_reps=..,seed=..]"))
        raise InvalidInputError(f"output must be one of {kinds}; got {output!r}")
    return output


def canonical_output(output: str) -> str:
    """`output` checked; a muvera spec written in full (so equal settings compare equal in metadata)."""
    check_output_kind(output)
    return parse_output(output).to_output() if is_muvera_output(output) else output


def to_muvera(vectors: list[np.ndarray], output: str, kind: str = "document") -> list[np.ndarray]:
    """One float32 MUVERA encoding per text (`kind` document or query: they are encoded differently)."""
    if not vectors:
        return []
    muvera = muvera_for(output, int(vectors[0].shape[1]))
    encode = muvera.encode_queries if kind == "query" else muvera.encode_documents
    return list(encode([np.asarray(v, dtype=np.float32) for v in vectors]))


def to_output_kind(vectors: list[np.ndarray], output: str) -> list:
    """Finished float32 document vectors in the `output` kind (see the module docstring)."""
    check_output_kind(output)
    if output == "float32":
        return vectors
    if is_muvera_output(output):
        return to_muvera(vectors, output)
    if output == "float16":
        return [v.astype(np.float16) for v in vectors]
    if output == "int8":
        return [quantize_vectors(v) for v in vectors]
    return [to_sign_bits(v, output) for v in vectors]


def finish_documents(vectors: list[np.ndarray], output: str = "float32", pool_factor: int = 1) -> list:
    """Encoder post-processing: token pooling (``pool_factor``, see pooling.py) then the `output` kind."""
    check_output_kind(output)
    if check_pool_factor(pool_factor) > 1:
        vectors = pool_documents(vectors, pool_factor)
    return to_output_kind(vectors, output)


def bytes_per_token(documents_vectors: Sequence) -> float:
    """Average stored bytes per document token (codes + scales for int8)."""
    total = sum(int(d.nbytes) for d in documents_vectors)
    tokens = sum(int(d.shape[0]) for d in documents_vectors)
    return total / max(tokens, 1)
