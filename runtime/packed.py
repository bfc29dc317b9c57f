"""Documents as one packed (total tokens, dim) array plus offsets: the layout MaxSim at scale needs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .errors import InvalidInputError
from .scoring import maxsim_packed, pack_documents


@dataclass(frozen=True)
class PackedDocuments:
    """Many documents' token vectors in one contiguous array (float32 or float16) with start offsets.

    One allocation instead of thousands of small arrays; scoring is one GEMM per token block plus a
    segmented max, never a Python loop over documents.
    """

    vectors: np.ndarray
    offsets: np.ndarray

    @classmethod
    def from_list(cls, documents: Sequence[np.ndarray], dtype: type = np.float32) -> PackedDocuments:
        if np.dtype(dtype) not in (np.dtype(np.float32), np.dtype(np.float16)):
            raise InvalidInputError(f"dtype must be float32 or float16, got {np.dtype(dtype)}")
        packed, offsets = pack_documents(documents)
        return cls(np.ascontiguousarray(packed, dtype=dtype), offsets)

    def __len__(self) -> int:
        return int(self.offsets.shape[0])

    def __getitem__(self, i: int) -> np.ndarray:
        end = self.offsets[i + 1] if i + 1 < len(self) else self.vectors.shape[0]
        return self.vectors[self.offsets[i] : end]

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def scores(self, queries: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """(n_queries, n_documents) MaxSim scores; `queries` is (n, q_tokens, dim) or a list of them."""
        q = np.asarray(queries, dtype=np.float32)
        if q.ndim == 2:
            q = q[None]
        if q.ndim != 3 or q.shape[2] != self.dim:
            raise InvalidInputError(f"queries of shape {q.shape} do not fit documents of dim {self.dim}")
        return maxsim_packed(q, self.vectors, self.offsets)

    def top_k(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Indices and scores of the k best documents for one (q_tokens, dim) query, best first."""
        scores = self.scores(query)[0]
        k = min(k, len(self))
        best = np.argpartition(-scores, k - 1)[:k]
        best = best[np.argsort(-scores[best], kind="stable")]
        return best, scores[best]
