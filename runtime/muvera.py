"""MUVERA fixed-dimensional encodings (FDEs): one vector per multi-vector text, for single-vector indexes.

The MUVERA paper (Dhulipala et al., 2024, "MUVERA: Multi-Vector Retrieval via Fixed Dimensional Encodings")
with the parameters and random draws of fastembed's ``fastembed.postprocess.Muvera`` (0.9.1), so that the
same ``(dim, k_sim, dim_proj, r_reps, seed)`` gives the same encodings (tests/test_muvera.py):

- ``r_reps`` repetitions; in each, SimHash with ``k_sim`` Gaussian hyperplanes puts every vector in one of
  ``2**k_sim`` buckets (bucket id = the sign bits, hyperplane ``i`` is bit ``i``);
- documents: each bucket holds the mean of its vectors; an empty bucket takes the first vector of the
  occupied bucket nearest in Hamming distance (lowest id on ties); queries: each bucket holds the sum of its
  vectors, empty buckets stay zero;
- each bucket is projected to ``dim_proj`` dimensions by a random ±1 matrix scaled by ``1/sqrt(dim_proj)``
  (no projection when ``dim_proj == dim``); the buckets of all repetitions are concatenated:
  ``r_reps * 2**k_sim * dim_proj`` values. ``dot(query_fde, document_fde)`` approximates MaxSim.

Random draws, in fastembed's order from ``np.random.default_rng(seed)``: ``r_reps`` times
``normal(size=(dim, k_sim))``, then ``choice([-1, 1], size=(r_reps, dim, dim_proj))``. Arithmetic is float64
as in fastembed; the result is cast to ``dtype`` (float32 by default, what a vector index stores). The
paper's optional final count-sketch projection (``d_final``) is not applied, as in fastembed.

As an ``output=`` kind (compact.py) the spec is a string: ``"muvera"`` (fastembed's defaults, 10240 values)
or ``"muvera:k_sim=4,dim_proj=8,r_reps=10,seed=42"`` (any subset of the four).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .errors import InvalidInputError

PREFIX = "muvera"
# fastembed.postprocess.Muvera's defaults (also the paper's recommended ballpark): 20 * 32 * 16 = 10240 values.
DEFAULTS = {"k_sim": 5, "dim_proj": 16, "r_reps": 20, "seed": 42}
_LIMITS = {"k_sim": (1, 16), "dim_proj": (1, 4096), "r_reps": (1, 1024), "seed": (0, 2**63 - 1)}


@dataclass(frozen=True)
class MuveraSpec:
    """The four MUVERA parameters (the input dim comes from the vectors)."""

    k_sim: int = DEFAULTS["k_sim"]
    dim_proj: int = DEFAULTS["dim_proj"]
    r_reps: int = DEFAULTS["r_reps"]
    seed: int = DEFAULTS["seed"]

    def __post_init__(self) -> None:
        for name, (low, high) in _LIMITS.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or not low <= value <= high:
                raise InvalidInputError(f"muvera {name} must be an int in [{low}, {high}], got {value!r}")

    @property
    def fde_dim(self) -> int:
        """Values per encoding: r_reps * 2**k_sim * dim_proj."""
        return self.r_reps * (2**self.k_sim) * self.dim_proj

    def to_output(self) -> str:
        """The full ``output=`` string of this spec (what Parquet metadata records)."""
        return f"{PREFIX}:k_sim={self.k_sim},dim_proj={self.dim_proj},r_reps={self.r_reps},seed={self.seed}"


def is_muvera_output(output: object) -> bool:
    """True for ``"muvera"`` and ``"muvera:..."`` output strings (valid or not)."""
    return isinstance(output, str) and (output == PREFIX or output.startswith(PREFIX + ":"))


def parse_output(output: str) -> MuveraSpec:
    """``"muvera"`` or ``"muvera:k_sim=4,dim_proj=8"`` -> MuveraSpec; InvalidInputError naming a bad part."""
    if not is_muvera_output(output):
        raise InvalidInputError(f"not a muvera output: {output!r}")
    values: dict[str, int] = {}
    rest = output[len(PREFIX) + 1 :] if output != PREFIX else ""
    for part in filter(None, (p.strip() for p in rest.split(","))):
        name, sep, value = part.partition("=")
        name = name.strip()
        if not sep or name not in DEFAULTS:
            raise InvalidInputError(
                f"bad muvera parameter {part!r} in {output!r}; give name=int for {', '.join(DEFAULTS)}"
            )
        if name in values:
            raise InvalidInputError(f"muvera parameter {name} given twice in {output!r}")
        try:
            values[name] = int(value)
        except ValueError:
            raise InvalidInputError(f"muvera {name} must be an int, got {value.strip()!r} in {output!r}") from None
    return MuveraSpec(**values)


class Muvera:
    """MUVERA encoder for vectors of one dim: ``encode_documents`` / ``encode_queries`` -> (n, fde_dim)."""

    def __init__(self, dim: int, spec: MuveraSpec | None = None) -> None:
        spec = spec or MuveraSpec()
        if isinstance(dim, bool) or not isinstance(dim, int | np.integer) or dim < 1:
            raise InvalidInputError(f"muvera dim must be a positive int, got {dim!r}")
        if spec.dim_proj > dim:
            raise InvalidInputError(f"muvera dim_proj={spec.dim_proj} is larger than the vectors' dim {dim}")
        self.dim, self.spec = int(dim), spec
        rng = np.random.default_rng(spec.seed)
        planes = [rng.normal(size=(dim, spec.k_sim)) for _ in range(spec.r_reps)]
        # (dim, r_reps * k_sim): one matmul gives every repetition's sketch.
        self.hyperplanes = np.concatenate(planes, axis=1)
        projections = rng.choice([-1, 1], size=(spec.r_reps, dim, spec.dim_proj))
        self.projections = projections.astype(np.float64) if spec.dim_proj < dim else None
        self._bits = 1 << np.arange(spec.k_sim)
        buckets = np.arange(2**spec.k_sim)
        # Hamming distance between bucket ids, for filling empty document buckets.
        self._hamming = np.array([[bin(a ^ b).count("1") for b in buckets] for a in buckets])

    @property
    def fde_dim(self) -> int:
        """Values per encoding."""
        return self.spec.fde_dim

    def encode_documents(self, documents: Sequence[np.ndarray], dtype: type = np.float32) -> np.ndarray:
        """(n_documents, fde_dim): bucket means, empty buckets filled from the nearest occupied one."""
        return self._encode(documents, document=True, dtype=dtype)

    def encode_queries(self, queries: Sequence[np.ndarray], dtype: type = np.float32) -> np.ndarray:
        """(n_queries, fde_dim): bucket sums, empty buckets zero."""
        return self._encode(queries, document=False, dtype=dtype)

    def _encode(self, items: Sequence[np.ndarray], document: bool, dtype: type) -> np.ndarray:
        out = np.empty((len(items), self.fde_dim), dtype=dtype)
        if not len(items):
            return out
        arrays = [self._check(vectors, row) for row, vectors in enumerate(items)]
        # One sketch matmul over every token of the call (small per-text matmuls are slow on threaded BLAS).
        flat = np.concatenate(arrays)
        spec = self.spec
        sketch = (flat @ self.hyperplanes) > 0  # (tokens, r_reps * k_sim)
        ids = sketch.reshape(len(flat), spec.r_reps, spec.k_sim) @ self._bits  # (tokens, r_reps)
        start = 0
        for row, vectors in enumerate(arrays):
            out[row] = self._one(vectors, ids[start : start + len(vectors)], document)
            start += len(vectors)
        return out

    def _check(self, vectors: np.ndarray, row: int) -> np.ndarray:
        if not isinstance(vectors, np.ndarray) or vectors.ndim != 2 or vectors.shape[1] != self.dim:
            shape = getattr(vectors, "shape", type(vectors).__name__)
            raise InvalidInputError(f"muvera item {row}: expected float vectors of shape (n, {self.dim}), got {shape}")
        if not len(vectors):
            raise InvalidInputError(f"muvera item {row} has no vectors; an empty multi-vector has no encoding")
        if vectors.dtype.kind != "f":
            raise InvalidInputError(f"muvera item {row}: float vectors needed, got {vectors.dtype}")
        return vectors.astype(np.float64, copy=False)

    def _one(self, vectors: np.ndarray, ids: np.ndarray, document: bool) -> np.ndarray:
        """One text's encoding from its vectors (float64) and bucket ids (tokens, r_reps)."""
        reps, n_buckets = self.spec.r_reps, 2**self.spec.k_sim
        # Key (repetition, bucket) per (repetition, token), repetition-major: a stable sort keeps token order
        # inside a bucket, so reduceat sums in fastembed's order (bit-identical results).
        keys = (ids.T + (np.arange(reps) * n_buckets)[:, None]).reshape(-1)
        order = np.argsort(keys, kind="stable")
        occupied, starts, counts = np.unique(keys[order], return_index=True, return_counts=True)
        tokens = order % len(vectors)  # token index of each sorted entry
        centers = np.zeros((reps * n_buckets, self.dim))
        centers[occupied] = np.add.reduceat(vectors[tokens], starts, axis=0)
        if document:
            centers[occupied] /= counts[:, None]
            filled = np.zeros(reps * n_buckets, dtype=bool)
            filled[occupied] = True
            filled = filled.reshape(reps, n_buckets)
            if not filled.all():
                # Nearest occupied bucket of the same repetition in Hamming distance (lowest id on ties).
                distance = np.where(filled[:, None, :], self._hamming[None], np.iinfo(np.int64).max)
                nearest = np.argmin(distance, axis=2) + (np.arange(reps) * n_buckets)[:, None]  # (reps, buckets)
                first = np.full(reps * n_buckets, -1)
                first[occupied] = tokens[starts]  # the first vector (token order) of each occupied bucket
                empty = np.flatnonzero(~filled.reshape(-1))
                centers[empty] = vectors[first[nearest.reshape(-1)[empty]]]
        centers = centers.reshape(reps, n_buckets, self.dim)
        if self.projections is not None:
            centers = (1 / np.sqrt(self.spec.dim_proj)) * (centers @ self.projections)
        return centers.reshape(-1)


@functools.lru_cache(maxsize=16)
def muvera_for(output: str, dim: int) -> Muvera:
    """The (cached) Muvera of an output string and vector dim."""
    return Muvera(dim, parse_output(output))


def fde_dim(output: str) -> int:
    """Values per encoding of a muvera output string."""
    return parse_output(output).fde_dim
