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


EMBED_DTYPES = ("float32", "float16", "bfloat16")  # vLLM's embed_dtype, less its fp8 kinds
BYTE_ORDERS = {"native": "=", "little": "<", "big": ">"}


def embedding_bytes(vectors: np.ndarray, embed_dtype: str = "float32", endianness: str = "native") -> bytes:
    """One text's vectors flattened as vLLM's pooling base64 carries them: `embed_dtype` values in `endianness`
    byte order. bfloat16: float32 rounded to nearest even, the upper 16 bits (what torch's bfloat16 holds)."""
    order = BYTE_ORDERS[endianness]
    flat = np.ascontiguousarray(vectors, dtype=np.float32).ravel()
    if embed_dtype == "bfloat16":
        bits = flat.view(np.uint32).astype(np.uint64)
        values = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
        return values.astype(f"{order}u2").tobytes()
    if embed_dtype not in ("float32", "float16"):
        raise ValueError(f"unknown embed_dtype {embed_dtype!r}; choose one of {', '.join(EMBED_DTYPES)}")
    return flat.astype(f"{order}f{4 if embed_dtype == 'float32' else 2}").tobytes()
