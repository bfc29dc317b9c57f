"""Token pooling: merge similar document vectors by Ward hierarchical clustering, in numpy only.

Follows PyLate's ``pool_embeddings_hierarchical``: the protected leading tokens (here ``<s>`` and
``[DocumentMarker]``) are kept as they are; the other ``n`` vectors get the cosine-distance
matrix ``1 - V V^T``, whose rows are clustered with Ward linkage (PyLate hands the square matrix
to ``scipy.cluster.hierarchy.linkage``, which treats its rows as observations; so do we), the
tree is cut into ``max(1, n // pool_factor)`` clusters (``fcluster(..., criterion="maxclust")``),
and each cluster becomes the mean of its vectors. Unlike PyLate, the means are re-normalized to
unit length (MaxSim then stays a sum of cosines), protected vectors come first and clusters are
ordered by their first token. ``pool_factor=1`` returns the input unchanged.

The Ward tree is built with the nearest-neighbour-chain algorithm and Lance-Williams updates on
squared Euclidean distances: O(n^2) memory, O(n^2) merge work, plus O(n^3) for the distances
between rows of the n x n matrix (milliseconds for passages of a few hundred tokens).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .errors import InvalidInputError

PROTECTED_TOKENS = 2


def check_pool_factor(pool_factor: object) -> int:
    """`pool_factor` if it is an int >= 1, else InvalidInputError."""
    if isinstance(pool_factor, bool) or not isinstance(pool_factor, (int, np.integer)) or pool_factor < 1:
        raise InvalidInputError(f"pool_factor must be an int >= 1 (1 = no pooling), got {pool_factor!r}")
    return int(pool_factor)


def ward_merges(observations: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ward linkage of the rows of `observations`: (n-1, 2) merged representatives and heights, in height order.

    Each merge joins the clusters represented by two row indices; the merged cluster is then
    represented by the smaller index. Heights are scipy's Ward distances (``linkage(..., "ward")``).
    """
    x = np.asarray(observations, dtype=np.float64)
    n = x.shape[0]
    if n < 2:
        return np.zeros((0, 2), dtype=np.int64), np.zeros(0, dtype=np.float64)
    sq = np.einsum("ij,ij->i", x, x)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * (x @ x.T), 0.0)
    np.fill_diagonal(d2, np.inf)
    sizes = np.ones(n, dtype=np.float64)
    active = np.ones(n, dtype=bool)
    pairs = np.empty((n - 1, 2), dtype=np.int64)
    heights = np.empty(n - 1, dtype=np.float64)
    chain: list[int] = []
    for step in range(n - 1):
        if not chain:
            chain.append(int(np.flatnonzero(active)[0]))
        while True:
            a = chain[-1]
            row = d2[a]
            b = int(np.argmin(row))
            if len(chain) > 1 and row[chain[-2]] <= row[b]:
                b = chain[-2]
            if len(chain) > 1 and b == chain[-2]:
                break
            chain.append(b)
        b = chain.pop()
        a = chain.pop()
        keep, gone = min(a, b), max(a, b)
        dab = d2[a, b]
        na, nb = sizes[a], sizes[b]
        with np.errstate(invalid="ignore"):
            new = ((na + sizes) * d2[a] + (nb + sizes) * d2[b] - sizes * dab) / (na + nb + sizes)
        d2[keep, :] = new
        d2[:, keep] = new
        d2[gone, :] = np.inf
        d2[:, gone] = np.inf
        d2[keep, keep] = np.inf
        sizes[keep] = na + nb
        active[gone] = False
        pairs[step] = (keep, gone)
        heights[step] = np.sqrt(dab)
    order = np.argsort(heights, kind="stable")
    return pairs[order], heights[order]


def cut_tree(n: int, pairs: np.ndarray, n_clusters: int) -> np.ndarray:
    """Cluster labels 0..n_clusters-1 (numbered by first member) after the first ``n - n_clusters`` merges."""
    parent = np.arange(n)

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = int(parent[i])
        return i

    for a, b in pairs[: max(n - n_clusters, 0)]:
        ra, rb = root(int(a)), root(int(b))
        parent[max(ra, rb)] = min(ra, rb)
    roots = np.array([root(i) for i in range(n)])
    _, labels = np.unique(roots, return_inverse=True)
    return labels.reshape(-1)


def pool_document(vectors: np.ndarray, pool_factor: int, protected_tokens: int = PROTECTED_TOKENS) -> np.ndarray:
    """One document's (tokens, dim) vectors pooled to about ``tokens / pool_factor`` unit vectors."""
    pool_factor = check_pool_factor(pool_factor)
    v = np.asarray(vectors)
    rest = v[protected_tokens:]
    n = rest.shape[0]
    n_clusters = max(1, n // pool_factor)
    if pool_factor == 1 or n <= 1 or n_clusters >= n:
        return v
    work = rest.astype(np.float32)
    distances = 1.0 - work @ work.T
    pairs, _ = ward_merges(distances)
    labels = cut_tree(n, pairs, n_clusters)
    sums = np.zeros((n_clusters, v.shape[1]), dtype=np.float64)
    np.add.at(sums, labels, work.astype(np.float64))
    norms = np.linalg.norm(sums, axis=1, keepdims=True)
    pooled = (sums / np.where(norms > 0, norms, 1.0)).astype(v.dtype)
    return np.ascontiguousarray(np.concatenate([v[:protected_tokens], pooled], axis=0))


def pool_documents(
    documents: Sequence[np.ndarray], pool_factor: int, protected_tokens: int = PROTECTED_TOKENS
) -> list[np.ndarray]:
    """Pool every document (see the module docstring); ``pool_factor=1`` returns them unchanged."""
    pool_factor = check_pool_factor(pool_factor)
    if pool_factor == 1:
        return list(documents)
    return [pool_document(d, pool_factor, protected_tokens) for d in documents]
