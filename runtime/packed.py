"""Documents as one packed (total tokens, dim) array plus offsets: the layout MaxSim at scale needs."""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .errors import InvalidInputError
from .scoring import as_queries, check_offsets, maxsim_packed, maxsim_packed_int8, ragged_queries
from .vectors import (
    QuantizedVectors,
    check_documents,
    check_finite,
    int8_codes_to_uint8,
    pack_documents,
    pack_quantized_documents,
    quantize_vectors,
)

_STORAGE = {np.dtype(np.float32): "float32", np.dtype(np.float16): "float16", np.dtype(np.int8): "int8"}
_QUANTIZE_ROWS = 1 << 16  # float rows quantized at once by from_list(..., dtype=np.int8): bounds scratch memory


@dataclass(frozen=True)
class PackedDocuments:
    """Many documents' token vectors in one contiguous array with start offsets.

    Storage is float32 (exact scores), float16 (exact for the stored halves) or int8: then
    ``vectors`` holds the uint8 ``code + 128`` of per-vector symmetric int8 codes (the layout the
    integer kernel reads directly) and ``scales`` the (tokens,) float32 scales, as
    ``encode_documents(output="int8")``. int8 scores quantize the query too (docs/maxsim.md).

    One allocation instead of thousands of small arrays; scoring is one GEMM per cache-sized token
    block plus a segmented max, never a Python loop over documents.
    """

    vectors: np.ndarray
    offsets: np.ndarray
    scales: np.ndarray | None = None

    def __post_init__(self) -> None:
        v, offsets = self.vectors, self.offsets
        for name, value in (("vectors", v), ("scales", self.scales)):
            if not isinstance(value, np.ndarray) and (value is not None or name == "vectors"):
                raise InvalidInputError(f"{name} must be a numpy array, got {type(value).__name__}")
        if v.ndim != 2 or v.shape[0] == 0:
            raise InvalidInputError(f"vectors must be a non-empty (tokens, dim) array, got shape {v.shape}")
        check_offsets(offsets, v.shape[0])
        if self.scales is None:
            if v.dtype not in (np.float32, np.float16):
                raise InvalidInputError(f"vectors must be float32 or float16 (or uint8 with scales), got {v.dtype}")
            check_finite(v, "vectors")
        elif v.dtype != np.uint8 or self.scales.shape != (v.shape[0],):
            raise InvalidInputError(
                f"int8 storage needs uint8 vectors (code + 128) and ({v.shape[0]},) scales, "
                f"got {v.dtype} and {self.scales.shape}"
            )
        else:
            check_finite(self.scales, "scales")

    @classmethod
    def from_list(
        cls, documents: Sequence[np.ndarray] | Sequence[QuantizedVectors], dtype: type | None = None
    ) -> PackedDocuments:
        """Pack float documents (or ``QuantizedVectors``) as float32, float16 or int8 (`dtype`).

        `dtype` defaults to float32 for float documents and int8 for ``QuantizedVectors`` (packed as
        they are); ``dtype=np.int8`` quantizes float documents per vector like ``vectors.quantize_vectors``.
        """
        check_documents(documents, "documents")
        quantized = len(documents) > 0 and isinstance(documents[0], QuantizedVectors)
        try:
            chosen = np.dtype(dtype if dtype is not None else np.int8 if quantized else np.float32)
        except TypeError:
            raise InvalidInputError(f"dtype must be float32, float16 or int8, got {dtype!r}") from None
        storage = _STORAGE.get(chosen)
        if storage is None:
            raise InvalidInputError(f"dtype must be float32, float16 or int8, got {chosen}")
        for i, doc in enumerate(documents):
            if getattr(doc, "dtype", None) in (np.int8, np.uint8):
                raise InvalidInputError(
                    f"documents[{i}] has dtype {doc.dtype}: int8/uint8 arrays are the sign bits of "
                    "output='binary'/'ubinary' (maxsim reads them so), which PackedDocuments does not hold. "
                    "Pass int8 codes with their scales as QuantizedVectors (output='int8'), and plain values "
                    "as float arrays"
                )
        if quantized and storage == "int8":
            codes_u8, scales, offsets = pack_quantized_documents(documents)  # type: ignore[arg-type]
            return cls(codes_u8, offsets, scales)
        if quantized:
            documents = [d.dequantize() if isinstance(d, QuantizedVectors) else d for d in documents]
        packed, offsets = pack_documents(documents)  # type: ignore[arg-type]
        if storage != "int8":
            return cls(np.ascontiguousarray(packed, dtype=storage), offsets)
        codes_u8 = np.empty(packed.shape, dtype=np.uint8)
        scales = np.empty(packed.shape[0], dtype=np.float32)
        for start in range(0, packed.shape[0], _QUANTIZE_ROWS):
            q = quantize_vectors(packed[start : start + _QUANTIZE_ROWS])
            int8_codes_to_uint8(q.codes, out=codes_u8[start : start + _QUANTIZE_ROWS])
            scales[start : start + _QUANTIZE_ROWS] = q.scales
        return cls(codes_u8, offsets, scales)

    def __len__(self) -> int:
        return int(self.offsets.shape[0])

    def __getitem__(self, i: int) -> np.ndarray | QuantizedVectors:
        """Document `i` (negative: from the end): its (tokens, dim) float array, or ``QuantizedVectors`` (int8)."""
        try:
            i = operator.index(i)
        except TypeError:
            raise InvalidInputError(f"document index must be an int, got {type(i).__name__}") from None
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"document index {i} is out of range for {n} documents")
        i %= n
        end = self.offsets[i + 1] if i + 1 < n else self.vectors.shape[0]
        start = self.offsets[i]
        if self.scales is None:
            return self.vectors[start:end]
        codes = int8_codes_to_uint8(self.vectors[start:end]).view(np.int8)
        return QuantizedVectors(codes=codes, scales=self.scales[start:end])

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    @property
    def storage(self) -> str:
        """``float32``, ``float16`` or ``int8``."""
        return "int8" if self.scales is not None else _STORAGE[self.vectors.dtype]

    @property
    def nbytes(self) -> int:
        """Stored bytes (vectors, plus scales for int8; offsets not counted)."""
        return int(self.vectors.nbytes + (self.scales.nbytes if self.scales is not None else 0))

    def scores(self, queries: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """(n_queries, n_documents) MaxSim scores; `queries` is (q_tokens, dim), (n, q_tokens, dim) or a list."""
        return self._scores(queries)[0]

    def _scores(self, queries: np.ndarray | Sequence[np.ndarray]) -> tuple[np.ndarray, bool]:
        """(n_queries, n_documents) scores and whether a single (q_tokens, dim) query was given."""
        ragged = ragged_queries(queries, "queries")
        if ragged is not None:  # queries of different lengths: one call each
            return np.concatenate([self._scores(q)[0] for q in ragged]), False
        q, single = as_queries(queries, "queries")
        if q.shape[2] != self.dim:
            raise InvalidInputError(f"queries of shape {q.shape} do not fit documents of dim {self.dim}")
        if self.scales is not None:
            return maxsim_packed_int8(q, self.vectors, self.scales, self.offsets), single
        return maxsim_packed(q, self.vectors, self.offsets), single

    def top_k(self, queries: np.ndarray | Sequence[np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray]:
        """Indices and scores of the k best documents, best first: (k,) each for one (q_tokens, dim) query,
        (n_queries, k) each for several (an (n, q_tokens, dim) array or a list of queries), as ``maxsim``."""
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise InvalidInputError(f"k must be a positive int, got {k!r}")
        scores, single = self._scores(queries)
        k = min(int(k), len(self))
        best = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        best = np.take_along_axis(best, np.argsort(-np.take_along_axis(scores, best, 1), axis=1, kind="stable"), 1)
        top = np.take_along_axis(scores, best, 1)
        return (best[0], top[0]) if single else (best, top)
