"""Jina `embedding_type` encodings of one text's (tokens, dim) float32 vectors."""

from __future__ import annotations

import base64

import numpy as np

from ..vectors import to_sign_bits

EMBEDDING_TYPES = ("float", "base64", "binary", "ubinary")


def encode_vectors(vectors: np.ndarray, embedding_type: str) -> np.ndarray | list[str]:
    """One text's vectors in the requested encoding, ready for JSON (orjson serializes the arrays).

    float: (tokens, dim) float32; base64: one string per vector of little-endian float32 bytes;
    ubinary: packed sign bits as uint8; binary: the same bits as int8 (uint8 value - 128), the
    convention of Jina's API and of sentence-transformers' ``quantize_embeddings``.
    """
    if embedding_type == "float":
        return np.ascontiguousarray(vectors, dtype=np.float32)
    if embedding_type == "base64":
        little = np.ascontiguousarray(vectors, dtype="<f4")
        return [base64.b64encode(row.tobytes()).decode("ascii") for row in little]
    if embedding_type in ("ubinary", "binary"):
        return to_sign_bits(vectors, embedding_type)
    raise ValueError(f"unknown embedding_type {embedding_type!r}; choose one of {', '.join(EMBEDDING_TYPES)}")


def decode_base64_vector(text: str) -> np.ndarray:
    """Inverse of the base64 encoding of one vector (client-side helper)."""
    return np.frombuffer(base64.b64decode(text), dtype="<f4")
