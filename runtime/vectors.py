"""Vector types and their codecs: per-vector int8, sign bits, and documents packed into one array.

A leaf module (numpy and errors only): scoring, packed documents, output kinds, Arrow and the server
all build on it, and it imports none of them. Three codecs and one layout, one name each:

- per-vector int8: :func:`quantize_vectors` gives a :class:`QuantizedVectors` (``codes`` int8,
  ``scales`` float32, ``vector ≈ codes * scale``, ``scale = max|v| / 127``); ``.dequantize()`` inverts it.
- sign bits: :func:`to_sign_bits` packs ``v > 0`` 8 per byte (the Jina API's ``ubinary``, and
  ``binary`` = the same bytes minus 128 as int8); :func:`from_sign_bits` gives the ±1 vectors back.
- uint8 codes: :func:`int8_codes_to_uint8` is ``code + 128``, what the integer MaxSim kernel reads.
- packing: "pack" means only this here: many documents' (tokens, dim) vectors concatenated into
  one contiguous array plus the start offset of each (:func:`pack_documents`,
  :func:`pack_quantized_documents`), the layout of ``PackedDocuments`` and of the MaxSim kernels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .errors import InvalidInputError

COMPACT_KINDS = ("int8", "binary", "ubinary")


@dataclass(frozen=True)
class QuantizedVectors:
    """One document's int8 vectors: ``codes`` (tokens, dim) int8, ``scales`` (tokens,) float32."""

    codes: np.ndarray
    scales: np.ndarray

    def __post_init__(self) -> None:
        codes, scales = self.codes, self.scales
        if not isinstance(codes, np.ndarray) or codes.ndim != 2 or codes.dtype != np.int8:
            got = f"{codes.dtype} {codes.shape}" if isinstance(codes, np.ndarray) else type(codes).__name__
            raise InvalidInputError(f"codes must be a (tokens, dim) int8 array, got {got}")
        if not isinstance(scales, np.ndarray) or scales.shape != (codes.shape[0],):
            got = f"shape {scales.shape}" if isinstance(scales, np.ndarray) else type(scales).__name__
            raise InvalidInputError(f"scales must be a ({codes.shape[0]},) array, got {got}")
        check_finite(scales, "scales")
        if (scales < 0).any():
            raise InvalidInputError("scales must not be negative (max|v| / 127 per vector)")

    @property
    def shape(self) -> tuple[int, int]:
        return self.codes.shape  # type: ignore[return-value]

    @property
    def nbytes(self) -> int:
        return int(self.codes.nbytes + self.scales.nbytes)

    def dequantize(self) -> np.ndarray:
        """The float32 approximation ``codes * scales[:, None]``."""
        return self.codes.astype(np.float32) * self.scales[:, None]


def real_array(values: object, what: str) -> np.ndarray:
    """`values` as a numpy array of real numbers (bool, int or float), else InvalidInputError naming `what`."""
    try:
        array = np.asarray(values)
    except (TypeError, ValueError) as exc:  # e.g. nested lists of different lengths
        raise InvalidInputError(f"{what} is not a rectangular array of numbers ({exc})") from None
    if array.dtype.kind not in "biuf":
        got = f"dtype {array.dtype}"
        if not isinstance(values, np.ndarray):
            got = f"{type(values).__name__} ({got})"
        raise InvalidInputError(f"{what} must be an array of real numbers, got {got}")
    check_finite(array, what)
    return array


def check_finite(array: np.ndarray, what: str) -> None:
    """InvalidInputError when a float array holds NaN or infinity: a score computed from it would be NaN, and
    ranked last, without a word."""
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise InvalidInputError(f"{what} holds NaN or infinity (at flat index "
                                f"{int(np.flatnonzero(~np.isfinite(array))[0])}); vectors must be finite")


def check_documents(documents: object, what: str = "documents_vectors") -> None:
    """InvalidInputError unless `documents` is a list (any sequence, or an array) of documents."""
    if isinstance(documents, (str, bytes)) or not isinstance(documents, (Sequence, np.ndarray)):
        raise InvalidInputError(f"{what} must be a list of (tokens, dim) arrays, got {type(documents).__name__}")


def quantize_vectors(vectors: np.ndarray) -> QuantizedVectors:
    """Symmetric per-vector int8 of (n, dim) vectors: ``scale = max|v| / 127``, ``codes = round(v / scale)``."""
    v = np.asarray(vectors, dtype=np.float32)
    peak = np.abs(v).max(axis=1) if v.shape[0] else np.zeros(0, dtype=np.float32)
    scales = (peak / 127.0).astype(np.float32)
    safe = np.where(scales > 0, scales, 1.0).astype(np.float32)
    codes = np.clip(np.rint(v / safe[:, None]), -127, 127).astype(np.int8)
    return QuantizedVectors(codes=codes, scales=scales)


def int8_codes_to_uint8(codes: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """int8 codes as the uint8 ``code + 128`` the integer kernel reads (a bit flip; also the inverse)."""
    return np.bitwise_xor(np.asarray(codes).view(np.uint8), np.uint8(0x80), out=out)


def to_sign_bits(vectors: np.ndarray, kind: str = "ubinary") -> np.ndarray:
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


def from_sign_bits(bits: np.ndarray) -> np.ndarray:
    """±1 float32 vectors (dim = 8 x bytes) from ``binary`` (int8) or ``ubinary`` (uint8) sign bits."""
    p = np.asarray(bits)
    if p.dtype == np.int8:
        p = (p.astype(np.int16) + 128).astype(np.uint8)
    elif p.dtype != np.uint8:
        raise InvalidInputError(f"sign bits must be int8 (binary) or uint8 (ubinary), got {p.dtype}")
    return np.unpackbits(p, axis=-1).astype(np.float32) * 2.0 - 1.0


_DTYPE_KINDS = {np.dtype(np.uint8).str: "ubinary", np.dtype(np.int8).str: "binary"}


def _kind_of(doc: object) -> str | None:
    if isinstance(doc, QuantizedVectors):
        return "int8"
    return _DTYPE_KINDS.get(np.dtype(getattr(doc, "dtype", np.float32)).str)


def compact_kind(documents_vectors: Sequence) -> str | None:
    """``int8``, ``binary`` or ``ubinary`` if the documents are of that compact kind; None for float."""
    check_documents(documents_vectors)
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


def document_lengths(documents: Sequence, dim: int | None = None) -> np.ndarray:
    """Token counts of ragged (tokens, dim) documents (arrays or ``QuantizedVectors``), all of one dim.

    Raises InvalidInputError for an empty list, a document that is not 2-D, has no vectors, or
    whose dim differs from the first one's (or from `dim`, the query's, when given).
    """
    check_documents(documents)
    if len(documents) == 0:
        raise InvalidInputError("documents_vectors is empty")
    lengths = np.empty(len(documents), dtype=np.int64)
    first = None
    for i, doc in enumerate(documents):
        shape = getattr(doc, "shape", None)
        if shape is None or len(shape) != 2:
            raise InvalidInputError(f"documents_vectors[{i}] has shape {shape}, expected (tokens, dim)")
        if shape[0] == 0:
            raise InvalidInputError(f"documents_vectors[{i}] has no vectors; MaxSim is undefined for it")
        if first is None:
            first = shape[1]
            if dim is not None and first != dim:
                raise InvalidInputError(f"query dim {dim} does not match document dim {first}")
        elif shape[1] != first:
            raise InvalidInputError(f"documents_vectors[{i}] has dim {shape[1]}, the first has {first}")
        lengths[i] = shape[0]
    return lengths


def start_offsets(lengths: np.ndarray) -> np.ndarray:
    """Start offset of each document in the packed array: ``[0, l0, l0 + l1, ...]`` (int64)."""
    offsets = np.zeros(lengths.shape[0], dtype=np.int64)
    np.cumsum(lengths[:-1], out=offsets[1:])
    return offsets


def pack_documents(documents_vectors: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Ragged (n_i, dim) float arrays as one (sum n_i, dim) array plus start offsets."""
    check_documents(documents_vectors)
    arrays = [real_array(d, f"documents_vectors[{i}]") for i, d in enumerate(documents_vectors)]
    lengths = document_lengths(arrays)
    return np.concatenate(arrays, axis=0), start_offsets(lengths)


def pack_quantized_documents(documents: Sequence[QuantizedVectors]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """int8 documents as one (total tokens, dim) uint8 array of ``code + 128``, the (total,) scales and offsets.

    The layout ``scoring.maxsim_packed_int8`` and ``PackedDocuments`` (int8) read.
    """
    check_documents(documents, "documents")
    for i, doc in enumerate(documents):
        if not isinstance(doc, QuantizedVectors):
            raise InvalidInputError(f"documents[{i}] is {type(doc).__name__}, expected QuantizedVectors")
    offsets = start_offsets(document_lengths(documents))
    codes = np.concatenate([d.codes for d in documents], axis=0)
    scales = np.concatenate([np.asarray(d.scales, dtype=np.float32) for d in documents])
    return int8_codes_to_uint8(codes, out=codes.view(np.uint8)), scales, offsets
